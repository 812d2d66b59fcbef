"""METHOD.md's phase-3 formulas on hand-made matrices (shared worked examples)."""

import json
import math
from pathlib import Path

import pytest
import torch

from prune_snr.measure import field_matrices, filter_stats, layer_summary

CASES = json.loads((Path(__file__).parent.parent / "fixtures" / "method_cases.json").read_text())


#: Each definition of clusters and the fixtures' key for its expected values.
DEFINITIONS = {"blocks": "expected_blocks", "components": "expected"}


@pytest.mark.parametrize("clusters", DEFINITIONS)
@pytest.mark.parametrize("case", CASES["filters"], ids=[c["name"] for c in CASES["filters"]])
def test_filter_statistics_match_the_worked_example(case, clusters):
    stats = filter_stats(torch.tensor([case["M"]]), threshold=case["theta"], clusters=clusters)
    want = case[DEFINITIONS[clusters]]
    assert bool(stats.dead[0]) == want["dead"]
    assert stats.clusters(0) == want["clusters"]
    assert int(stats.n_noise[0]) == want["n_noise"]
    assert int(stats.n_clusters[0]) == len(want["clusters"])
    for key in ("signal", "noise", "snr"):
        assert float(getattr(stats, key)[0]) == pytest.approx(want[key], abs=1e-5)


@pytest.mark.parametrize("clusters", DEFINITIONS)
@pytest.mark.parametrize("case", CASES["layers"], ids=[c["name"] for c in CASES["layers"]])
def test_layer_figures_match_the_worked_example(case, clusters):
    stats = filter_stats(torch.tensor(case["M"]), threshold=case["theta"], clusters=clusters)
    summary, want = layer_summary(stats), case[DEFINITIONS[clusters]]
    assert stats.snr.tolist() == pytest.approx(want["snr_per_filter"], abs=1e-5)
    for key in ("snr", "noise_per_filter", "clusters_per_filter", "cluster_size", "dead_fraction"):
        assert summary[key] == pytest.approx(want[key], abs=1e-5)


def test_a_filter_is_judged_on_its_own_maximum_not_the_layers():
    one = torch.tensor([[[1.0, 0.0], [0.0, 0.2]]])
    stats = filter_stats(torch.cat([one, one * 100]), threshold=0.3)
    assert stats.snr[0] == stats.snr[1] and stats.strength[1] == 100 * stats.strength[0]


@pytest.mark.parametrize("clusters", DEFINITIONS)
def test_threshold_zero_counts_every_positive_element(clusters):
    M = torch.tensor([[[1.0, 0.01], [0.005, 0.02]]])
    stats = filter_stats(M, threshold=0.0, clusters=clusters)
    assert stats.clusters(0) == [[0, 1]] and float(stats.noise[0]) == 0


def test_layer_without_noise_reports_infinite_snr_and_dead_layer_zero():
    clean = filter_stats(torch.eye(3)[None], threshold=0.3)
    assert math.isinf(layer_summary(clean)["snr"])
    dead = filter_stats(-torch.ones(2, 3, 3), threshold=0.3)
    assert (
        layer_summary(dead)["snr"] == 0
        and layer_summary(dead)["dead_fraction"] == 1
        and layer_summary(dead)["cluster_size"] == 0
    )


def test_chain_of_one_way_edges_is_one_component_even_across_chunks(monkeypatch):
    from prune_snr.measure import fields

    monkeypatch.setattr(fields, "CHUNK", 1)
    L = 6
    chain = torch.eye(L) + torch.diag(torch.full((L - 1,), 0.5), 1)  # i -> i+1 only
    stats = filter_stats(torch.stack([chain, torch.eye(L)]), threshold=0.3, clusters="components")
    assert stats.clusters(0) == [list(range(L))]
    assert stats.clusters(1) == [[i] for i in range(L)]


def test_field_matrices_are_the_einsum_of_class_means_and_head_weights():
    g = torch.Generator().manual_seed(0)
    mu, W = torch.rand(4, 3, 2, generator=g), torch.randn(4, 3, 2, generator=g)  # L x F x K
    M = field_matrices(mu, W)
    assert M.shape == (3, 4, 4)
    assert M[1, 2, 3] == pytest.approx(float((mu[2, 1] * W[3, 1]).sum()), abs=1e-6)


def test_chain_of_one_way_edges_is_single_labels_as_blocks():
    L = 6
    chain = torch.eye(L) + torch.diag(torch.full((L - 1,), 0.5), 1)
    stats = filter_stats(chain[None], threshold=0.3)
    assert stats.clusters(0) == [[i] for i in range(L)] and int(stats.n_noise[0]) == L - 1


def test_blocks_take_the_first_seed_greedily_not_the_largest_block():
    B = torch.ones(4, 4)
    B[0, 3] = B[3, 0] = 0  # 0 with 1, 2 is a block; so is 1, 2, 3 (bigger), but 0 seeds first and takes 1 and 2
    stats = filter_stats(B[None], threshold=0.3)
    assert stats.clusters(0) == [[0, 1, 2], [3]] and int(stats.n_noise[0]) == 16 - 2 - 9 - 1


def test_an_unknown_cluster_definition_is_refused():
    from prune_snr.errors import ConfigError

    with pytest.raises(ConfigError, match="blocks, components"):
        filter_stats(torch.eye(3)[None], clusters="cliques")


# A plain transcription of the paper authors' cluster code (github Shutshutnunte/AFCC,
# Compute_Matrices_Clusters.py: is_square, return_squares and the noise count below them).
def _is_square(indices, field):
    return sum(field[i][j] for i in indices for j in indices) == len(indices) ** 2


def _return_squares(labels_one, field):
    temp = list(labels_one)
    clusters = []
    for lb in labels_one:
        if lb in temp:
            cluster = [lb]
            for lb2 in temp[1:]:
                if _is_square(cluster + [lb2], field):
                    cluster.append(lb2)
            for c in cluster:
                temp.remove(c)
            clusters.append(cluster)
    return clusters


def _authors_clusters(M, theta):
    normalized = M / M.max() if M.max() != 0 else M
    ones = (normalized > theta).int().tolist()
    labels = [j for j in range(len(ones)) if ones[j][j] == 1]
    clusters = _return_squares(labels, ones)
    return clusters, sum(map(sum, ones)) - sum(len(c) ** 2 for c in clusters)


def test_blocks_equal_the_authors_code_on_random_matrices():
    g = torch.Generator().manual_seed(0)
    cases = 0
    for L in (3, 4, 5, 7, 10, 16, 25, 40, 64, 100):
        for theta in (0.1, 0.2, 0.3, 0.5, 0.7):
            # fields of a trained head are mostly small with a few strong entries: a power of a uniform draw
            M = torch.rand(6, L, L, generator=g) ** torch.empty(6, 1, 1).uniform_(1, 12, generator=g)
            M[:, :, :] += torch.rand(6, 1, L, generator=g) * torch.eye(L)  # diagonals strong enough to be active
            stats = filter_stats(M, threshold=theta)
            for f in range(len(M)):
                clusters, n_noise = _authors_clusters(M[f], theta)
                assert stats.clusters(f) == clusters, (L, theta, f)
                assert int(stats.n_noise[f]) == n_noise and int(stats.n_clusters[f]) == len(clusters)
                cases += 1
    assert cases == 300
