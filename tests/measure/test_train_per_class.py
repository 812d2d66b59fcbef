"""Specs of ``measure --train-per-class``: a seeded, stratified cap on the training images read, the same
validation images, the cache's size projected (and refused when the disk is short) and reported."""

import json

import numpy as np
import pytest

import prune_snr
from prune_snr.data import build_dataset, validation_split
from prune_snr.errors import DataError
from prune_snr.measure import features, measure
from prune_snr.measure.features import load_cached
from prune_snr.measure.pipeline import plan_train_rows

POINTS = "features.conv2,features.conv13"


@pytest.fixture(scope="module")
def capped(tiny_run, tmp_path_factory):
    """The tiny model measured with and without --train-per-class 20 from one cache folder (the test
    split's cache is shared)."""
    out, _ = tiny_run
    model = prune_snr.load(out / "model.pt")
    cache = tmp_path_factory.mktemp("features")
    full = measure(model, "synthetic", points=POINTS, head_epochs=3, device="cpu", cache_dir=cache)
    capped = measure(
        model, "synthetic", points=POINTS, head_epochs=3, device="cpu", cache_dir=cache, train_per_class=20
    )
    folder = capped.save(tmp_path_factory.mktemp("measurement"))
    return model, full, capped, folder, cache


def test_plan_caps_every_label_at_n_with_a_seeded_stratified_draw():
    targets = np.repeat(np.arange(4), [30, 12, 5, 1])
    read, rest, val = plan_train_rows(targets, val_fraction=0.1, val_source="train", per_class=8, seed=3)
    per_label = np.bincount(targets[read[rest]], minlength=4)
    held_out = np.bincount(targets[read[val]], minlength=4)
    assert held_out.tolist() == [3, 1, 1, 0]
    assert per_label.tolist() == [8, 8, 4, 1], "min(N, what the label has left after validation)"
    again, _, _ = plan_train_rows(targets, val_fraction=0.1, val_source="train", per_class=8, seed=3)
    other, _, _ = plan_train_rows(targets, val_fraction=0.1, val_source="train", per_class=8, seed=4)
    assert np.array_equal(read, again) and not np.array_equal(read, other), "the draw follows the measurement's seed"
    assert not set(read[rest]) & set(read[val]), "no validation image trains a head"


def test_plan_keeps_the_validation_images_of_the_uncapped_split():
    targets = np.repeat(np.arange(5), 40)
    _, val_all = validation_split(targets, 0.1)
    for n in (1, 7, 100):
        read, _, val = plan_train_rows(targets, val_fraction=0.1, val_source="train", per_class=n, seed=0)
        assert np.array_equal(read[val], val_all), n
    read, rest, val = plan_train_rows(targets, val_fraction=0.1, val_source="test", per_class=7, seed=0)
    assert len(val) == 0 and np.bincount(targets[read[rest]]).tolist() == [7] * 5


def test_the_capped_measurement_reads_n_per_label_and_validates_on_the_same_images(capped):
    _, full, capped_run, _, cache = capped
    targets = build_dataset("synthetic", "train").targets.numpy()
    _, val_all = validation_split(targets, 0.1)
    assert capped_run.meta["split_sizes"] == {"train": 200, "val": 60, "test": 320}, (
        "10 labels x 20, the same 6 x 10 validated"
    )
    assert full.meta["split_sizes"]["val"] == 60
    key = cache / capped_run.meta["feature_cache"].split("/")[-1]
    (sub,) = [d for d in key.iterdir() if d.name.startswith("train-20pc-")]
    (whole,) = [d for d in key.iterdir() if d.name == "train"]
    sub_x, sub_y = load_cached(sub, POINTS.split(","))
    all_x, _ = load_cached(whole, POINTS.split(","))
    read, rest, val = plan_train_rows(targets, val_fraction=0.1, val_source="train", per_class=20, seed=0)
    assert len(sub_y) == 260 and np.bincount(sub_y[rest]).tolist() == [20] * 10
    for point in POINTS.split(","):  # the validation rows hold the very features of the uncapped validation images
        assert np.array_equal(sub_x[point][val], all_x[point][val_all])


def test_report_states_n_rows_and_the_cache_size_on_disk(capped):
    _, _, _, folder, cache = capped
    data = json.loads((folder / "measurement.json").read_text())
    assert data["options"]["train_per_class"] == 20
    assert data["feature_rows"] == {"train": 260, "test": 320}
    key = cache / data["feature_cache"].split("/")[-1]
    on_disk = sum(
        f.stat().st_size
        for d in key.iterdir()
        if d.name in ("test",) or d.name.startswith("train-20pc-")
        for f in d.iterdir()
    )
    assert data["feature_cache_bytes"] == on_disk > 0
    # projection = rows x sum over points of C x p x p x 4 bytes (+ 8-byte targets); aside: 3 .npy headers and a
    # done.json per split
    assert 0 <= data["feature_cache_bytes"] - data["feature_cache_projected_bytes"] < 2 * (3 * 128 + 200)


def test_a_cache_larger_than_the_free_disk_is_refused_before_the_feature_pass(capped, tmp_path, monkeypatch):
    model = capped[0]
    free = {"bytes": 10_000}
    monkeypatch.setattr(features.shutil, "disk_usage", lambda path: type("Usage", (), {"free": free["bytes"]})())
    with pytest.raises(DataError) as info:
        measure(model, "synthetic", points=POINTS, head_epochs=1, device="cpu", cache_dir=tmp_path / "c")
    message = str(info.value)
    assert "\n" not in message and all(
        o in message for o in ("train_per_class=N", "pool=1", "cache_dtype='float16'", "fewer points")
    )
    assert not (tmp_path / "c").exists(), "nothing written"
    widths = features.point_widths(model, build_dataset("synthetic", "test")[0][0], POINTS.split(","), pool=2)
    need = features.projected_bytes(640 + 320, widths)
    assert f"{need / 1e9:.2f} GB" in message
    free["bytes"] = need  # exactly enough: it runs
    measure(model, "synthetic", points=POINTS, head_epochs=1, device="cpu", cache_dir=tmp_path / "c")


def test_train_per_class_below_one_is_a_config_error():
    from prune_snr.config import MeasureConfig, resolve
    from prune_snr.errors import ConfigError

    with pytest.raises(ConfigError, match="train_per_class=0"):
        resolve(MeasureConfig, overrides={"train_per_class": 0})
