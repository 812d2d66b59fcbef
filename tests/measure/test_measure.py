"""Specs of measure(): the fast path against a slow reference, artifacts, cache, label sweep."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import prune_snr
from prune_snr.config import MeasureConfig, resolve
from prune_snr.data import IndexSubset, build_dataset, validation_split
from prune_snr.measure import Measurement, measure

POINTS = "features.conv2,features.conv7,features.conv13"


@pytest.fixture(scope="module")
def measured(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    model = prune_snr.load(out / "model.pt")
    cache = tmp_path_factory.mktemp("features")
    result = measure(
        model,
        "synthetic",
        points=POINTS,
        head_epochs=15,
        label_sweep=[3, 5, 10],
        device="cpu",
        cache_dir=cache,
        save_fields="all",
    )
    folder = result.save(tmp_path_factory.mktemp("measurement"))
    return model, result, folder, cache


def validation_images():
    train = build_dataset("synthetic", "train", augment=False)
    return IndexSubset(train, validation_split(train.targets, 0.1)[1])


def slow_field_matrix(model, head, point, f, num_classes, pool=2, images=None):
    """The definition, done the slow way: silence every head weight except filter f's, run the
    head on each input's pooled features (a fresh backbone pass), average per true label.
    The inputs are the validation split's (the default ``fields_split``)."""
    test = images if images is not None else validation_images()
    store = {}
    handle = dict(model.named_modules())[point].register_forward_hook(lambda m, i, o: store.update(x=o))
    weight = torch.zeros_like(head["weight"])
    weight[:, f] = head["weight"][:, f]
    sums, counts = torch.zeros(num_classes, num_classes, dtype=torch.float64), torch.zeros(num_classes)
    try:
        with torch.no_grad():
            for x, y in torch.utils.data.DataLoader(test, batch_size=64):
                model(x)
                features = F.adaptive_avg_pool2d(store["x"], pool).flatten(1)
                h = features.double() @ weight.flatten(1).double().t()  # bias excluded
                sums.index_add_(0, y, h)
                counts += torch.bincount(y, minlength=num_classes)
    finally:
        handle.remove()
    return sums / counts[:, None]


def test_einsum_fields_agree_with_silencing_all_other_filters(measured):
    model, result, _, _ = measured
    for point in ("features.conv2", "features.conv13"):
        for f in (0, 3):
            slow = slow_field_matrix(model, result.heads[point], point, f, 10)
            assert np.allclose(result.fields[point][f], slow.numpy(), atol=1e-5), point


def test_fields_on_the_test_split_are_the_papers_figure(measured, tmp_path):
    model, _, _, cache = measured
    on_test = measure(
        model,
        "synthetic",
        points="features.conv7",
        head_epochs=15,
        fields_split="test",
        device="cpu",
        cache_dir=cache,
        save_fields="all",
    )
    slow = slow_field_matrix(
        model,
        on_test.heads["features.conv7"],
        "features.conv7",
        1,
        10,
        images=build_dataset("synthetic", "test", augment=False),
    )
    assert np.allclose(on_test.fields["features.conv7"][1], slow.numpy(), atol=1e-5)
    assert "test" not in on_test.points[0], "the test figures are the main ones then"


def test_head_accuracy_is_far_above_chance_and_rises_to_the_last_layer(measured):
    _, result, _, _ = measured
    for key in ("val_accuracy", "test_accuracy"):
        accuracies = [p[key] for p in result.points]
        assert all(a > 0.3 for a in accuracies) and accuracies[-1] >= accuracies[0], key


def test_heads_train_on_the_training_split_less_its_validation_part(measured):
    _, result, _, _ = measured
    # 10 % of each label's 64 training images (6) are held out: 60 validation rows, 580 for the heads
    assert result.meta["split_sizes"] == {"train": 580, "val": 60, "test": 320}


def _method_by_hand(M: np.ndarray, theta: float) -> dict:
    """METHOD.md's per-layer figures (default clusters), written independently of
    prune_snr.measure.fields: plain loops."""
    signal_sum = noise_sum = 0.0
    noise_counts, cluster_sizes, dead, snrs = [], [], 0, []
    for m in M.astype(np.float64):
        if m.max() <= 0:
            dead += 1
            noise_counts.append(0)
            snrs.append(0.0)
            continue
        b = m / m.max() > theta
        active = [i for i in range(len(m)) if b[i, i]]
        clusters, left = [], list(active)  # the paper authors' greedy complete blocks, in ascending label order
        while left:
            block = [left[0]]
            for j in left[1:]:
                if all(b[i, j] and b[j, i] for i in block):
                    block.append(j)
            clusters.append(block)
            left = [j for j in left if j not in block]
        cluster_sizes += [len(c) for c in clusters]
        of = {i: k for k, c in enumerate(clusters) for i in c}
        same = lambda i, j: i in of and j in of and of[i] == of[j]
        hat = m / m.max()
        signal = sum(hat[i, j] for i, j in zip(*np.nonzero(b)) if same(i, j))
        noise = sum(hat[i, j] for i, j in zip(*np.nonzero(b)) if not same(i, j))
        noise_counts.append(sum(1 for i, j in zip(*np.nonzero(b)) if not same(i, j)))
        snrs.append(signal / (noise + theta))
        signal_sum, noise_sum = signal_sum + signal, noise_sum + noise
    return {
        "snr": signal_sum / noise_sum,
        "noise_per_filter": np.mean(noise_counts),
        "clusters_per_filter": len(cluster_sizes) / len(M),
        "cluster_size": np.mean(cluster_sizes),
        "dead_fraction": dead / len(M),
        "per_filter_snr": np.array(snrs),
    }


def test_every_json_figure_is_what_method_md_gives_for_the_saved_fields(measured):
    _, _, folder, _ = measured
    data = json.loads((folder / "measurement.json").read_text())
    npz = np.load(folder / "fields.npz")
    theta = data["options"]["threshold"]
    for point in data["points"]:
        M = npz[f"{point['name']}/M"]
        assert M.dtype == np.float32 and M.shape == (point["n_filters"], 10, 10)
        expected = _method_by_hand(M, theta)
        for key in ("snr", "noise_per_filter", "clusters_per_filter", "cluster_size", "dead_fraction"):
            assert point[key] == pytest.approx(expected[key], rel=1e-4), (point["name"], key)
        assert npz[f"{point['name']}/snr"] == pytest.approx(expected["per_filter_snr"], rel=1e-4, abs=1e-6)


def test_measurement_json_has_the_documented_keys(measured):
    _, _, folder, _ = measured
    data = json.loads((folder / "measurement.json").read_text())
    assert {"model", "dataset", "split_sizes", "seed", "options", "points", "label_sweep"} <= set(data)
    assert data["split_sizes"] == {"train": 580, "val": 60, "test": 320}
    assert data["options"]["fields_split"] == "val" and data["options"]["val_fraction"] == 0.1
    assert [p["name"] for p in data["points"]] == POINTS.split(",")
    assert {
        "name",
        "n_filters",
        "val_accuracy",
        "test_accuracy",
        "snr",
        "noise_per_filter",
        "clusters_per_filter",
        "cluster_size",
        "dead_fraction",
        "test",
    } <= set(data["points"][0])
    assert set(data["points"][0]["test"]) == {
        "snr",
        "noise_per_filter",
        "clusters_per_filter",
        "cluster_size",
        "clustered_labels_per_filter",
        "dead_fraction",
    }
    assert data["options"]["clusters"] == "blocks"


def test_label_sweep_reports_each_label_count_per_point(measured):
    _, result, _, _ = measured
    assert [s["labels"] for s in result.label_sweep] == [3, 5, 10]
    for sweep in result.label_sweep:
        assert len(sweep["points"]) == 3
        assert all(p["error_rate"] == pytest.approx(1 - p["test_accuracy"]) for p in sweep["points"])
        assert all(0 <= p["val_accuracy"] <= 1 for p in sweep["points"])


def test_a_sweep_over_every_label_is_the_measurement_itself_and_trains_nothing(measured):
    _, result, _, _ = measured
    every = result.label_sweep[-1]
    assert every["label_ids"] == list(range(10)) and result.meta["timings"]["sweep_10_heads_s"] == 0
    for swept, point in zip(every["points"], result.points):
        assert (swept["test_accuracy"], swept["val_accuracy"], swept["snr"]) == (
            point["test_accuracy"],
            point["val_accuracy"],
            point["snr"],
        )
    assert result.meta["timings"]["sweep_5_heads_s"] > 0  # a proper subset trains its own heads


def test_saved_measurement_loads_back_with_heads(measured):
    _, result, folder, _ = measured
    loaded = Measurement.load(folder)
    assert loaded.points == json.loads(json.dumps(result.points))
    assert torch.equal(loaded.heads["features.conv13"]["weight"], result.heads["features.conv13"]["weight"])
    assert np.array_equal(loaded.fields["features.conv7"], result.fields["features.conv7"])


def test_a_measurements_config_holds_the_options_it_recorded_and_survives_saving(measured):
    _, result, folder, _ = measured
    options, cfg = result.meta["options"], result.config
    recorded = {f.name for f in dataclasses.fields(MeasureConfig)} & set(options)
    expected = {
        **{k: options[k] for k in recorded},
        "points": ",".join(options["points"]),
        "save_fields": str(options["save_fields"]),
    }
    assert {k: getattr(cfg, k) for k in recorded} == expected and {
        "pool",
        "threshold",
        "fields_split",
        "split_seed",
    } <= recorded
    assert (cfg.points, cfg.head_epochs, cfg.save_fields, cfg.seed) == (POINTS, 15, "all", result.meta["seed"])
    assert resolve(MeasureConfig, base=cfg) == cfg, "a valid config"
    assert Measurement.load(folder).config == cfg


def test_a_measurement_json_written_before_the_newer_options_loads_with_what_it_did_then(measured, tmp_path):
    _, result, folder, _ = measured
    shutil.copytree(folder, tmp_path / "old")
    data = json.loads((tmp_path / "old" / "measurement.json").read_text())
    data["options"] = {
        k: data["options"][k] for k in ("points", "pool", "threshold", "head_epochs", "head_lr", "head_batch_size")
    }
    (tmp_path / "old" / "measurement.json").write_text(json.dumps(data))
    cfg = Measurement.load(tmp_path / "old").config
    assert (cfg.points, cfg.pool, cfg.threshold, cfg.head_epochs) == (
        POINTS,
        result.config.pool,
        result.config.threshold,
        15,
    )
    assert (cfg.fields_split, cfg.head_patience, cfg.save_fields) == ("test", 0, "all"), (
        "fields on test, no early stopping, all kept"
    )
    assert (cfg.val_fraction, cfg.split_seed, cfg.held_out, cfg.train_per_class) == (None, None, None, None)


def test_a_rerun_reuses_cached_features_and_gives_the_same_result(measured):
    model, result, _, cache = measured
    before = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    again = measure(model, "synthetic", points=POINTS, head_epochs=15, device="cpu", cache_dir=cache)
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == before
    assert again.points == result.points


def test_bfloat16_heads_measure_what_float32_heads_measure_from_the_same_cache(measured, monkeypatch):
    from prune_snr.measure import heads

    model, result, _, cache = measured
    monkeypatch.setattr(
        heads, "LOW_PRECISION_MIN_WEIGHTS", 0
    )  # the tiny model's heads are below it: use bfloat16 for all
    written = {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")}
    low = measure(
        model, "synthetic", points=POINTS, head_epochs=15, device="cpu", cache_dir=cache, head_dtype="bfloat16"
    )
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("*.npy")} == written, "the same cached features"
    assert low.meta["options"]["head_dtype"] == "bfloat16" and result.meta["options"]["head_dtype"] == "float32"
    for a, b in zip(result.points, low.points):
        assert a["name"] == b["name"]
        assert not torch.equal(low.heads[a["name"]]["weight"], result.heads[a["name"]]["weight"]), "trained in bfloat16"
        assert (
            abs(a["val_accuracy"] - b["val_accuracy"]) <= 0.03 and abs(a["test_accuracy"] - b["test_accuracy"]) <= 0.03
        ), a["name"]


def test_paper_preset_takes_the_authors_choices_flags_beside_it_win_and_prune_refuses_it(measured, tmp_path):
    from prune_snr.errors import ConfigError

    model, _, _, cache = measured
    paper = measure(model, "synthetic", preset="paper", points=POINTS, head_epochs=3, device="cpu", cache_dir=cache)
    options = paper.meta["options"]
    assert (
        options["preset"],
        options["head_optimizer"],
        options["head_lr"],
        options["head_patience"],
        options["fields_split"],
    ) == ("paper", "sgd", 0.01, 0, "test")
    assert all(p["val_accuracy"] > 0.5 for p in paper.points), "the SGD heads learn"
    mine = resolve(MeasureConfig, overrides={"preset": "paper", "head_lr": 0.05})
    assert (mine.head_lr, mine.head_optimizer) == (0.05, "sgd")
    with pytest.raises(ConfigError, match="test split"):
        prune_snr.prune(model, "synthetic", measurement=paper, criterion="snr", finetune_epochs=0, device="cpu")
    with pytest.raises(ConfigError, match="preset='papers'"):
        resolve(MeasureConfig, overrides={"preset": "papers"})


@pytest.mark.parametrize("text", ["[1, 2]", "{}", '{"points": 3}'])
def test_a_measurement_json_without_its_points_is_called_damaged_in_one_line(tmp_path, text):
    (tmp_path / "measurement.json").write_text(text)
    np.savez(tmp_path / "fields.npz")  # the statistics are there: only the JSON is wrong
    with pytest.raises(
        prune_snr.errors.CheckpointError, match=r"measurement in .* is damaged .*re-run prune-snr measure"
    ):
        Measurement.load(tmp_path)
