"""Spec: decisions read the validation split only; the test split grades.

The same model is measured and pruned on an image folder and on a copy whose *test* labels are
shuffled. Every decision (allocation ratios, truncation cut, kept channels, saliency fields) must
come out identical; only the test accuracies may change.
"""
import json
import random
import shutil

import numpy as np
import pytest
from PIL import Image

import prune_snr
from prune_snr.data import build_dataset
from prune_snr.measure import measure
from prune_snr.prune import prune


def write_folder(root, shuffle_test_labels: bool):
    for split, tree in (("train", "train"), ("test", "val")):
        ds = build_dataset("synthetic", split, augment=False)
        labels = ds.targets.tolist()
        if split == "test" and shuffle_test_labels:
            random.Random(0).shuffle(labels)
        for i, label in enumerate(labels):
            folder = root / tree / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(ds.images[i].permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")


@pytest.fixture(scope="module")
def both_runs(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    runs = {}
    for shuffled in (False, True):
        root = tmp_path_factory.mktemp("shuffled" if shuffled else "clean")
        write_folder(root / "data", shuffled)
        model = prune_snr.load(out / "model.pt")
        dataset = f"imagefolder:{root / 'data'}"
        measured = measure(model, dataset, head_epochs=3, device="cpu", cache_dir=root / "cache")
        _, report = prune(model, dataset, target=0.4, criterion="snr", allocation="measured", truncate=True, delta=0.3,
                          finetune_epochs=0, measurement=measured, round_to=1, device="cpu", out=root / "pruned")
        runs[shuffled] = measured, report, root
    yield runs
    for _, _, root in runs.values():
        shutil.rmtree(root, ignore_errors=True)


def test_shuffling_the_test_labels_changes_no_decision(both_runs):
    (clean_m, clean, _), (shuffled_m, shuffled, _) = both_runs[False], both_runs[True]
    assert clean["truncation"]["cut_after"] == shuffled["truncation"]["cut_after"]
    assert clean["search"]["ratio"] == shuffled["search"]["ratio"]
    assert clean["channels_after"] == shuffled["channels_after"]
    assert [p["val_accuracy"] for p in clean_m.points] == [p["val_accuracy"] for p in shuffled_m.points]
    for name in clean_m.fields:
        assert np.array_equal(clean_m.fields[name], shuffled_m.fields[name]), "saliency fields come from the validation split"


def test_the_shuffle_reaches_the_grades(both_runs):
    (clean_m, clean, _), (shuffled_m, shuffled, _) = both_runs[False], both_runs[True]
    assert clean["before"]["val_accuracy"] == shuffled["before"]["val_accuracy"]
    assert clean["before"]["accuracy"] != shuffled["before"]["accuracy"]
    assert [p["test_accuracy"] for p in clean_m.points] != [p["test_accuracy"] for p in shuffled_m.points]


def test_the_report_says_which_split_decides_and_which_grades(both_runs):
    _, report, root = both_runs[False]
    saved = json.loads((root / "pruned" / "report.json").read_text())
    assert saved["decision_split"] == "val" and saved["split"] == "test" and saved["val_fraction"] == 0.1
    assert {"accuracy", "val_accuracy"} <= set(saved["after"])
    assert all("val_accuracy" in row for row in saved["truncation"]["candidates"])
