"""METHOD.md's phase-3 formulas on hand-made matrices (shared worked examples)."""
import json
import math
from pathlib import Path

import pytest
import torch

from prune_snr.measure import field_matrices, filter_stats, layer_summary

CASES = json.loads((Path(__file__).parent.parent / "fixtures" / "method_cases.json").read_text())


@pytest.mark.parametrize("case", CASES["filters"], ids=[c["name"] for c in CASES["filters"]])
def test_filter_statistics_match_the_worked_example(case):
    stats = filter_stats(torch.tensor([case["M"]]), threshold=case["theta"])
    want = case["expected"]
    assert bool(stats.dead[0]) == want["dead"]
    assert stats.clusters(0) == want["clusters"]
    assert int(stats.n_noise[0]) == want["n_noise"]
    assert int(stats.n_clusters[0]) == len(want["clusters"])
    for key in ("signal", "noise", "snr"):
        assert float(getattr(stats, key)[0]) == pytest.approx(want[key], abs=1e-5)


@pytest.mark.parametrize("case", CASES["layers"], ids=[c["name"] for c in CASES["layers"]])
def test_layer_figures_match_the_worked_example(case):
    stats = filter_stats(torch.tensor(case["M"]), threshold=case["theta"])
    summary, want = layer_summary(stats), case["expected"]
    assert stats.snr.tolist() == pytest.approx(want["snr_per_filter"], abs=1e-5)
    for key in ("snr", "noise_per_filter", "clusters_per_filter", "cluster_size", "dead_fraction"):
        assert summary[key] == pytest.approx(want[key], abs=1e-5)


def test_a_filter_is_judged_on_its_own_maximum_not_the_layers():
    one = torch.tensor([[[1.0, 0.0], [0.0, 0.2]]])
    stats = filter_stats(torch.cat([one, one * 100]), threshold=0.3)
    assert stats.snr[0] == stats.snr[1] and stats.strength[1] == 100 * stats.strength[0]


def test_threshold_zero_counts_every_positive_element():
    M = torch.tensor([[[1.0, 0.01], [0.0, 0.02]]])
    stats = filter_stats(M, threshold=0.0)
    assert stats.clusters(0) == [[0, 1]] and float(stats.noise[0]) == 0


def test_layer_without_noise_reports_infinite_snr_and_dead_layer_zero():
    clean = filter_stats(torch.eye(3)[None], threshold=0.3)
    assert math.isinf(layer_summary(clean)["snr"])
    dead = filter_stats(-torch.ones(2, 3, 3), threshold=0.3)
    assert layer_summary(dead)["snr"] == 0 and layer_summary(dead)["dead_fraction"] == 1 and layer_summary(dead)["cluster_size"] == 0


def test_chain_of_one_way_edges_is_one_cluster_even_across_chunks(monkeypatch):
    from prune_snr.measure import fields

    monkeypatch.setattr(fields, "CHUNK", 1)
    L = 6
    chain = torch.eye(L) + torch.diag(torch.full((L - 1,), 0.5), 1)  # i -> i+1 only
    stats = filter_stats(torch.stack([chain, torch.eye(L)]), threshold=0.3)
    assert stats.clusters(0) == [list(range(L))]
    assert stats.clusters(1) == [[i] for i in range(L)]


def test_field_matrices_are_the_einsum_of_class_means_and_head_weights():
    g = torch.Generator().manual_seed(0)
    mu, W = torch.rand(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)  # L x F x K
    M = field_matrices(mu, W)
    assert M.shape == (3, 4, 4)
    assert M[1, 2, 3] == pytest.approx(float((mu[2, 1] * W[3, 1]).sum()), abs=1e-6)
