"""Spec: decisions read the validation split only; the test split grades (METHOD.md, "Splits").

A small VGG trained on part of Fashion-MNIST is measured and pruned on that image folder and on copies whose *test*
split is poisoned: labels shuffled, or images replaced by noise. The run makes real decisions — a cut that
the budget does not force (``--cut measured``, small δ), channels pruned after it by the measured
allocation and the SNR criterion, fine-tuning kept or undone (``--finetune-keep best``) — and every
one of them must come out identical; only the test accuracies may change. The check can fail: the
same runs with a leaking variant (the cut and the allocation reading test accuracies) decide differently.
"""

import os
import random
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import prune_snr
from prune_snr.data import build_dataset
from prune_snr.errors import ConfigError
from prune_snr.measure import Measurement, measure
from prune_snr.prune import prune
from prune_snr.prune.truncate import pick_cut

OPTIONS = dict(
    target=0.85,
    metric="macs",
    criterion="snr",
    allocation="measured",
    truncate=True,
    cut="measured",
    delta=0.01,
    finetune_epochs=1,
    finetune_keep="best",
    round_to=1,
    device="cpu",
)
TRAIN_PER_CLASS, TEST_PER_CLASS = 200, 60


@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """2,000 training and 600 test images of real Fashion-MNIST, and a VGG-16 (width 1/8) trained 3 epochs on
    them: real data, where head accuracy rises with depth, so the measured cut is a decision (synthetic
    images are separable at the first conv)."""
    from prune_snr.config import TrainConfig, resolve
    from prune_snr.errors import DataError
    from prune_snr.train import train

    try:
        train_set, test_set = (
            build_dataset("fashion-mnist", split, augment=False, channels=1) for split in ("train", "test")
        )
    except DataError as exc:
        missing = f"Fashion-MNIST is not on this machine (make data installs it): {exc}"
        if os.environ.get("CI") == "true":  # in CI a missing data set is a failure, never a skip
            pytest.fail(missing)
        pytest.skip(missing)
    root = tmp_path_factory.mktemp("fashion")
    subsets = {}
    for split, ds, n in (("train", train_set, TRAIN_PER_CLASS), ("test", test_set, TEST_PER_CLASS)):
        rows = torch.cat([(ds.targets == c).nonzero().flatten()[:n] for c in range(10)])
        subsets[split] = ds.images[rows, 0], ds.targets[rows]
    write_folder(root / "clean", subsets, None)
    cfg = resolve(
        TrainConfig,
        overrides=dict(
            dataset=f"imagefolder:{root / 'clean'}",
            width_mult=0.125,
            epochs=3,
            batch_size=64,
            input_size=32,
            out=str(root / "run"),
            device="cpu",
        ),
    )
    accuracy = train(cfg)["test_accuracy"]
    assert accuracy > 0.5, f"the fixture's model did not train ({accuracy:.3f}): its decisions would test nothing"
    return root, subsets


def write_folder(root, subsets, poison: str | None):
    for split, tree in (("train", "train"), ("test", "val")):
        images, labels = subsets[split][0], subsets[split][1].tolist()
        if split == "test" and poison == "labels":
            random.Random(0).shuffle(labels)
        if split == "test" and poison == "noise":
            images = torch.randint(0, 256, images.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        for i, label in enumerate(labels):
            folder = root / tree / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(images[i].numpy()).save(folder / f"{i:04d}.png")


def run(fashion, root, poison):
    if poison is not None:
        write_folder(root / "data", fashion[1], poison)
    data = root / "data" if poison is not None else fashion[0] / "clean"
    model = prune_snr.load(fashion[0] / "run" / "model.pt")
    dataset = f"imagefolder:{data}"
    measured = measure(model, dataset, head_epochs=3, device="cpu", cache_dir=root / "cache", save_fields="all")
    pruned, report = prune(model, dataset, measurement=measured, out=root / "pruned", **OPTIONS)
    return measured, report, pruned


@pytest.fixture(scope="module")
def runs(fashion, tmp_path_factory):
    roots = {poison: tmp_path_factory.mktemp(poison or "clean") for poison in (None, "labels", "noise")}
    yield {poison: run(fashion, root, poison) for poison, root in roots.items()}
    for root in roots.values():
        shutil.rmtree(root, ignore_errors=True)


def test_the_decisions_are_real_not_forced_by_the_budget(runs):
    _, report, _ = runs[None]
    truncation = report["truncation"]
    assert truncation["cut_after"] and report["search"]["ratio"] > 0, (
        f"a cut, then channels pruned by the measured allocation: {truncation['cut_after']}, {truncation['candidates']}"
    )
    budget_cut = pick_cut(truncation["candidates"], None, "budget", target=OPTIONS["target"], metric="macs")
    assert truncation["cut_after"] != budget_cut, "the cut is read off validation accuracies, not implied by the target"
    assert len(set(report["channels_after"].values())) > 1


def decisions(report) -> dict:
    """What the pruning run decided: where to cut, how much to prune, which widths, whether fine-tuning was kept."""
    return {
        "cut": report["truncation"]["cut_after"],
        "ratio": report["search"]["ratio"],
        "channels": report["channels_after"],
        "finetune kept": report["finetune"]["kept"],
    }


@pytest.mark.parametrize("poison", ["labels", "noise"])
def test_poisoning_the_test_split_changes_no_decision(runs, poison):
    (clean_m, clean, clean_model), (poisoned_m, poisoned, poisoned_model) = runs[None], runs[poison]
    assert decisions(clean) == decisions(poisoned)
    assert [p["val_accuracy"] for p in clean_m.points] == [p["val_accuracy"] for p in poisoned_m.points]
    for name in clean_m.fields:
        assert np.array_equal(clean_m.stats(name).snr, poisoned_m.stats(name).snr), (
            "saliency comes from the validation split"
        )
    for (k, a), (_, b) in zip(clean_model.state_dict().items(), poisoned_model.state_dict().items()):
        assert torch.equal(a, b), f"pruned weights differ at {k}"


@pytest.mark.parametrize("poison", ["labels", "noise"])
def test_the_poison_reaches_the_grades(runs, poison):
    (clean_m, clean, _), (poisoned_m, poisoned, _) = runs[None], runs[poison]
    assert clean["before"]["val_accuracy"] == poisoned["before"]["val_accuracy"]
    assert clean["before"]["accuracy"] != poisoned["before"]["accuracy"]
    assert [p["test_accuracy"] for p in clean_m.points] != [p["test_accuracy"] for p in poisoned_m.points]


@pytest.mark.slow
def test_the_check_fails_when_a_decision_reads_test(fashion, tmp_path, monkeypatch):
    """A deliberately leaking variant: the cut and the allocation read the heads' test accuracies. Poisoned labels
    then change what the check above compares (which of the decisions moves depends on the trained model)."""
    monkeypatch.setattr(Measurement, "val_accuracies", lambda self: [p["test_accuracy"] for p in self.points])
    _, leaky_clean, _ = run(fashion, tmp_path / "clean", None)
    _, leaky_poisoned, _ = run(fashion, tmp_path / "labels", "labels")
    assert decisions(leaky_clean) != decisions(leaky_poisoned), decisions(leaky_clean)


def test_a_measurement_whose_fields_come_from_the_test_split_cannot_drive_decisions(runs, fashion):
    clean_m, _, _ = runs[None]
    on_test = Measurement(
        meta={**clean_m.meta, "options": {**clean_m.meta["options"], "fields_split": "test"}},
        points=clean_m.points,
        fields=clean_m.fields,
        heads=clean_m.heads,
    )
    model = prune_snr.load(fashion[0] / "run" / "model.pt")
    with pytest.raises(ConfigError, match="fields_split='val'"):
        prune(model, f"imagefolder:{fashion[0] / 'clean'}", measurement=on_test, **OPTIONS)


def test_the_report_says_which_split_decides_and_which_grades(runs):
    _, report, _ = runs[None]
    assert report["decision_split"] == "val" and report["split"] == "test" and report["val_fraction"] == 0.1
    assert report["val_source"] == "train" and set(report["split_sizes"]) == {"train", "val", "test"}
    assert {"accuracy", "val_accuracy"} <= set(report["after"])
    assert all("val_accuracy" in row for row in report["truncation"]["candidates"])


@pytest.fixture(scope="module")
def residual(fashion, tmp_path_factory):
    """A ResNet-18 (timm) trained 2 epochs on the same images: a model with residual blocks to drop."""
    from prune_snr.config import TrainConfig, resolve
    from prune_snr.train import train

    out = tmp_path_factory.mktemp("resnet")
    cfg = resolve(
        TrainConfig,
        overrides=dict(
            model="timm:resnet18",
            dataset=f"imagefolder:{fashion[0] / 'clean'}",
            epochs=2,
            batch_size=64,
            input_size=32,
            out=str(out),
            device="cpu",
        ),
    )
    train(cfg)
    return out / "model.pt"


@pytest.mark.slow
@pytest.mark.parametrize("poison", ["labels", "noise"])
def test_poisoning_the_test_split_changes_no_dropped_block(fashion, residual, tmp_path, poison):
    reports, weights = {}, {}
    for case in (None, poison):
        root = tmp_path / (case or "clean")
        if case is not None:
            write_folder(root / "data", fashion[1], case)
        data = root / "data" if case is not None else fashion[0] / "clean"
        model = prune_snr.load(residual)
        pruned, reports[case] = prune(
            model,
            f"imagefolder:{data}",
            target=0.3,
            metric="macs",
            criterion="l1",
            drop_blocks=True,
            delta=0.02,
            finetune_epochs=0,
            round_to=1,
            device="cpu",
        )
        weights[case] = pruned.state_dict()
    clean, poisoned = reports[None]["blocks"], reports[poison]["blocks"]
    assert len(clean["candidates"]) > 1, "every residual block is a candidate the validation split grades"
    assert clean["dropped"] == poisoned["dropped"]
    assert [r["val_accuracy"] for r in clean["candidates"]] == [r["val_accuracy"] for r in poisoned["candidates"]]
    assert [r["accuracy"] for r in clean["candidates"]] != [r["accuracy"] for r in poisoned["candidates"]], (
        "the poison reached the grades"
    )
    assert all(torch.equal(a, weights[poison][k]) for k, a in weights[None].items())


@pytest.mark.slow
def test_poisoning_the_test_split_changes_no_search_trial_nor_the_pick(fashion, runs, tmp_path):
    from prune_snr.search.study import pick, run_search

    clean_m = runs[None][0]
    studies = {}
    for case in (None, "labels"):
        root = tmp_path / (case or "clean")
        if case is not None:
            write_folder(root / "data", fashion[1], case)
        data = root / "data" if case is not None else fashion[0] / "clean"
        studies[case] = run_search(
            fashion[0] / "run" / "model.pt",
            out=root / "study",
            measurement=clean_m,
            trials=3,
            dataset=f"imagefolder:{data}",
            max_finetune_epochs=1,
            round_to=1,
            device="cpu",
        )

    def trials(study):
        return [(t.params, t.values) for t in sorted(study.trials, key=lambda t: t.number)]

    assert trials(studies[None]) == trials(studies["labels"]), "trial parameters and objectives read validation only"
    assert pick(studies[None], "params<=1").number == pick(studies["labels"], "params<=1").number
