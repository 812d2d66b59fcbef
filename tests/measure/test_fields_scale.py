"""Specs of phase 3 at scale: statistics in filter chunks within a memory budget, and a fields.npz
that keeps every filter's statistics but the matrices of only ``--save-fields`` filters."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import prune_snr
from prune_snr.cli import app
from prune_snr.measure import Measurement, field_matrices, filter_stats, layer_stats, layer_summary, measure
from prune_snr.measure.fields import BYTES_PER_ELEMENT, chunk_filters
from prune_snr.prune import filter_scores

CASES = json.loads((Path(__file__).parent.parent / "fixtures" / "method_cases.json").read_text())
STATS = ("dead", "signal", "noise", "n_noise", "n_clusters", "n_active", "snr", "strength", "component")
EXACT = ("dead", "n_noise", "n_clusters", "n_active", "component")
POINTS = "features.conv2,features.conv13"


def reference_stats(M: torch.Tensor, theta: float) -> dict:
    """METHOD.md on whole F x L x L matrices at once, clusters by min-label propagation: the
    unchunked definition the chunked pass must reproduce."""
    F, L, _ = M.shape
    peak = M.flatten(1).amax(1)
    dead = peak <= 0
    norm = M / torch.where(dead, torch.ones_like(peak), peak)[:, None, None]
    above = (norm > theta) & ~dead[:, None, None]
    active = above.diagonal(dim1=1, dim2=2)
    both = active[:, :, None] & active[:, None, :]
    adjacency = (above | above.transpose(1, 2)) & both
    comp = torch.where(active, torch.arange(L).expand(F, L), torch.tensor(L))
    for _ in range(L):
        new = torch.where(
            active,
            torch.minimum(comp, torch.where(adjacency, comp[:, None, :], torch.tensor(L)).amin(-1)),
            torch.tensor(L),
        )
        if torch.equal(new, comp):
            break
        comp = new
    same = (comp[:, :, None] == comp[:, None, :]) & both
    signal, noise = (norm * (above & same)).sum((1, 2)), (norm * (above & ~same)).sum((1, 2))
    return {
        "dead": dead,
        "signal": signal,
        "noise": noise,
        "n_noise": (above & ~same).sum((1, 2)),
        "n_clusters": (comp == torch.arange(L)).sum(1),
        "n_active": active.sum(1),
        "snr": torch.where(dead, torch.zeros_like(signal), signal / (noise + theta)),
        "strength": peak.clamp(min=0),
        "component": comp,
    }


def assert_same_stats(stats, want: dict):
    for key in STATS:
        got, expected = getattr(stats, key), want[key]
        if key in EXACT:
            assert torch.equal(got.long(), expected.long()), key
        else:  # float32 sums over chunks of another shape may differ in the last bit
            assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6), key


def random_layer(L=60, F=40, K=4, seed=0):
    """Class means and head weights with every kind of filter: diffuse, clustered (labels in groups), dead."""
    g = torch.Generator().manual_seed(seed)
    mu, W = torch.randn(L, F, K, generator=g).abs(), torch.randn(L, F, K, generator=g)
    groups = torch.randint(0, 8, (L,), generator=g)
    for f in range(0, F, 3):  # clustered: unit j answers label i's features strongly when they share a group
        code = torch.randn(8, K, generator=g).abs()
        mu[:, f] = code[groups] + 0.1 * mu[:, f]
        W[:, f] = code[groups] + 0.3 * W[:, f]
    W[:, 5] = -W[:, 5].abs()  # dead: every field <= 0
    return mu, W


@pytest.mark.parametrize("chunks", [1, 3, 40])
@pytest.mark.parametrize("theta", [0.3, 0.0, 0.6])
def test_chunked_statistics_equal_the_unchunked_reference(chunks, theta):
    L, F = 60, 40
    mu, W = random_layer(L, F)
    per_chunk = -(-F // chunks)
    budget = 2 * L * L * BYTES_PER_ELEMENT * per_chunk
    assert -(-F // chunk_filters(L, budget)) == chunks
    want = reference_stats(field_matrices(mu, W), theta)
    assert want["dead"].any() and (theta != 0.3 or (want["n_clusters"].max() > 1 and want["n_noise"].sum() > 0)), (
        "the layer exercises every case"
    )
    assert_same_stats(layer_stats(mu, W, threshold=theta, memory_budget=budget, clusters="components"), want)
    assert_same_stats(
        filter_stats(field_matrices(mu, W), threshold=theta, memory_budget=budget, clusters="components"), want
    )
    # the authors' blocks: chunked as one filter at a time
    one_by_one = filter_stats(field_matrices(mu, W), threshold=theta, memory_budget=1)
    assert_same_stats(layer_stats(mu, W, threshold=theta, memory_budget=budget), vars(one_by_one))


def test_a_budget_below_one_filter_still_runs_one_filter_at_a_time():
    mu, W = random_layer(L=30, F=7)
    assert chunk_filters(30, 1) == 1
    assert_same_stats(
        layer_stats(mu, W, memory_budget=1, clusters="components"), reference_stats(field_matrices(mu, W), 0.3)
    )


def test_full_width_conv_head_at_1000_labels_fits_a_2_gib_budget_in_chunks():
    assert chunk_filters(1000, 2 << 30) * 1000 * 1000 * BYTES_PER_ELEMENT <= 1 << 30  # half the budget for the chunk


DEFINITIONS = {"blocks": "expected_blocks", "components": "expected"}


@pytest.mark.parametrize("clusters", DEFINITIONS)
@pytest.mark.parametrize("case", CASES["layers"], ids=[c["name"] for c in CASES["layers"]])
def test_worked_layer_examples_hold_one_filter_per_chunk(case, clusters):
    stats = filter_stats(torch.tensor(case["M"]), threshold=case["theta"], memory_budget=1, clusters=clusters)
    summary, want = layer_summary(stats), case[DEFINITIONS[clusters]]
    assert stats.snr.tolist() == pytest.approx(want["snr_per_filter"], abs=1e-5)
    for key in ("snr", "noise_per_filter", "clusters_per_filter", "cluster_size", "dead_fraction"):
        assert summary[key] == pytest.approx(want[key], abs=1e-5)


@pytest.mark.parametrize("clusters", DEFINITIONS)
def test_worked_filter_examples_hold_in_one_layer_chunked(clusters):
    cases = CASES["filters"]
    L = max(len(c["M"]) for c in cases)
    for c in cases:  # one filter each; pad to a common L with zero rows/columns (inactive, below θ)
        M = torch.zeros(1, L, L)
        n = len(c["M"])
        M[0, :n, :n] = torch.tensor(c["M"])
        stats = filter_stats(M, threshold=c["theta"], memory_budget=1, clusters=clusters)
        want = c[DEFINITIONS[clusters]]
        assert stats.clusters(0) == want["clusters"], c["name"]
        assert int(stats.n_noise[0]) == want["n_noise"], c["name"]
        assert float(stats.snr[0]) == pytest.approx(want["snr"], abs=1e-5), c["name"]


@pytest.fixture(scope="module")
def two_kept(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    model = prune_snr.load(out / "model.pt")
    result = measure(
        model,
        "synthetic",
        points=POINTS,
        head_epochs=3,
        device="cpu",
        save_fields=2,
        cache_dir=tmp_path_factory.mktemp("features"),
    )
    folder = result.save(tmp_path_factory.mktemp("two"))
    return model, result, folder


def test_save_fields_2_keeps_two_matrices_per_point_and_every_filters_statistics(two_kept):
    _, result, folder = two_kept
    with np.load(folder / "fields.npz") as npz:
        for point in result.points:
            name, F = point["name"], point["n_filters"]
            assert npz[f"{name}/M"].shape == (2, 10, 10) and npz[f"{name}/M"].dtype == np.float32
            kept = npz[f"{name}/M_filters"]
            snr = npz[f"{name}/snr"]
            assert snr.shape == (F,) and npz[f"{name}/component"].shape == (F, 10)
            for key in ("signal", "noise", "n_noise", "n_clusters", "n_active", "strength", "dead"):
                assert npz[f"{name}/{key}"].shape == (F,), key
            assert sorted(kept) == sorted(np.argsort(-snr, kind="stable")[:2]), (
                "the kept matrices are the highest-SNR filters'"
            )
            # the kept matrices are those the statistics came from
            again = filter_stats(torch.from_numpy(npz[f"{name}/M"]), threshold=result.threshold)
            assert again.snr.numpy() == pytest.approx(snr[kept], rel=1e-5)
    assert json.loads((folder / "measurement.json").read_text())["options"]["save_fields"] == 2


def test_scores_from_a_reloaded_measurement_equal_those_before_saving(two_kept):
    model, result, folder = two_kept
    loaded = Measurement.load(folder)
    for saliency in ("snr", "snr-strength", "snr-x-l1"):
        before, after = filter_scores(result, saliency, model), filter_scores(loaded, saliency, model)
        assert before.keys() == after.keys()
        for name in before:
            assert np.array_equal(before[name], after[name]), (saliency, name)
    for name in loaded.fields:
        a, b = result.stats(name), loaded.stats(name)
        assert all(
            torch.equal(
                getattr(a, k).long() if k in EXACT else getattr(a, k),
                getattr(b, k).long() if k in EXACT else getattr(b, k),
            )
            for k in STATS
        ), name
        f = int(loaded.stored_filters(name)[0])
        assert a.clusters(f) == b.clusters(f)
        assert np.array_equal(loaded.matrix(name, f), result.matrix(name, f))


def test_plots_draw_the_kept_matrices_only(two_kept, tmp_path):
    from prune_snr.measure.plots import save_plots

    _, _, folder = two_kept
    written = save_plots(Measurement.load(folder), tmp_path)
    assert {p.name for p in written} >= {"filters.png", "layers.png"}


def test_a_filter_whose_matrix_was_not_kept_says_how_to_keep_it(two_kept):
    _, result, _ = two_kept
    name = result.points[0]["name"]
    missing = next(f for f in range(result.points[0]["n_filters"]) if f not in set(result.stored_filters(name)))
    with pytest.raises(KeyError, match="--save-fields all"):
        result.matrix(name, missing)


def test_old_fields_npz_with_only_matrices_and_snr_still_loads(two_kept, tmp_path):
    model, _, _ = two_kept
    full = measure(
        model, "synthetic", points=POINTS, head_epochs=3, device="cpu", save_fields="all", cache_dir=tmp_path / "cache"
    )
    folder = full.save(tmp_path / "new")
    with np.load(folder / "fields.npz") as npz:
        old = {k: npz[k] for k in npz.files if k.endswith("/M") or k.endswith("/snr")}
    np.savez_compressed(folder / "fields.npz", **old)  # the format before the statistics were stored
    loaded = Measurement.load(folder)
    assert not loaded.filter_stats and not loaded.field_filters
    for name in loaded.fields:
        assert loaded.snr(name) == pytest.approx(full.snr(name), rel=1e-6, abs=1e-7)  # recomputed from the matrices
        assert torch.equal(loaded.stats(name).component.long(), full.stats(name).component.long())
    assert filter_scores(loaded, "snr").keys() == filter_scores(full, "snr").keys()


def test_bad_save_fields_is_one_line(tmp_path):
    for bad in ("0", "some", "-3"):
        result = CliRunner().invoke(
            app, ["measure", "missing.pt", "--save-fields", bad, "--out", str(tmp_path / "out")]
        )
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert (
            result.exit_code == 2
            and len(lines) == 1
            and f"--save-fields {bad!r}:" in lines[0]
            and "Traceback" not in result.output
        ), bad


def test_label_sweep_up_to_1000_labels_is_accepted():
    from prune_snr.config import MeasureConfig, resolve

    assert resolve(MeasureConfig, overrides={"label_sweep": "3,10,100,1000"}).label_sweep == [3, 10, 100, 1000]


def test_label_sweep_plot_uses_a_log_axis_above_100_labels(two_kept, tmp_path, monkeypatch):
    import dataclasses

    from prune_snr.measure import plots

    _, result, _ = two_kept
    drawn = {}
    monkeypatch.setattr(
        plots, "save_figure", lambda fig, path: drawn.setdefault(path.name, fig.axes[0].get_xscale()) and path
    )
    for ks, scale in (([3, 5, 10], "linear"), ([3, 10, 100, 1000], "log")):
        point = lambda r: {"name": r["name"], "error_rate": 0.5}
        sweep = [{"labels": k, "points": [point(r) for r in result.points]} for k in ks]
        drawn.clear()
        plots.save_plots(dataclasses.replace(result, label_sweep=sweep), tmp_path)
        assert drawn["label_sweep.png"] == scale, ks
