"""CIFAR-100 end to end through the command line, in-process: train -> measure -> prune -> export on an archive
written on the fly in torchvision's exact format (100 labels, a few images each)."""

import hashlib
import json
import pickle

import numpy as np
import pytest
from typer.testing import CliRunner

from prune_snr.cli import app

pytestmark = pytest.mark.slow  # four commands on 100 labels: about a minute

TRAIN_PER_LABEL, TEST_PER_LABEL = 8, 3


def write_cifar100(root):
    """``root/cifar-100-python/{train,test,meta}``: the pickles of the real archive (latin-1 readable dicts with
    data N x 3072 uint8, fine/coarse labels, filenames, batch label; meta with both label-name lists).
    Returns the md5 of each file: the real archive's md5s are torchvision's integrity check, ours replace them."""
    rng = np.random.default_rng(0)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    prototypes = rng.integers(0, 256, (100, 3072))
    for split, n in (("train", TRAIN_PER_LABEL), ("test", TEST_PER_LABEL)):
        fine = np.repeat(np.arange(100), n)
        data = np.clip(prototypes[fine] + rng.normal(0, 40, (len(fine), 3072)), 0, 255).astype(np.uint8)
        with open(folder / split, "wb") as fh:
            pickle.dump(
                {
                    "filenames": [f"img_{i}.png" for i in range(len(fine))],
                    "batch_label": f"{split} batch",
                    "fine_labels": fine.tolist(),
                    "coarse_labels": (fine // 5).tolist(),
                    "data": data,
                },
                fh,
            )
    with open(folder / "meta", "wb") as fh:
        pickle.dump(
            {
                "fine_label_names": [f"fine{i:02d}" for i in range(100)],
                "coarse_label_names": [f"coarse{i:02d}" for i in range(20)],
            },
            fh,
        )
    return {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}


def invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_cifar100_trains_measures_prunes_and_exports_through_the_cli(tmp_path, monkeypatch):
    from torchvision.datasets import CIFAR100

    md5 = write_cifar100(tmp_path / "data")
    # torchvision verifies every file against the real archive's md5: give it ours, so the check still runs
    monkeypatch.setattr(CIFAR100, "train_list", [["train", md5["train"]]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", md5["test"]]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": md5["meta"]})
    data = ("--dataset", "cifar100", "--data-dir", tmp_path / "data")
    run = tmp_path / "run"

    invoke(
        "train",
        "--model",
        "vgg16",
        "--width-mult",
        "0.125",
        *data,
        "--epochs",
        "1",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
        run,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert (run / "model.pt").is_file() and 0 <= metrics["test_accuracy"] <= 1 and metrics["params"] > 0

    invoke(
        "measure",
        run / "model.pt",
        "--points",
        "features.conv7,features.conv13",
        "--head-epochs",
        "2",
        "--labels",
        "3,10",
        "--device",
        "cpu",
        "--no-plots",
        "--out",
        run / "measurement",
    )
    meas = json.loads((run / "measurement" / "measurement.json").read_text())
    assert meas["num_classes"] == 100 and meas["classes"] == [f"fine{i:02d}" for i in range(100)]
    assert meas["split_sizes"] == {"train": 700, "val": 100, "test": 300}, (
        "one of each label's 8 training images validated"
    )
    assert [p["name"] for p in meas["points"]] == ["features.conv7", "features.conv13"]
    assert [s["labels"] for s in meas["label_sweep"]] == [3, 10]
    assert all((run / "measurement" / f).is_file() for f in ("fields.npz", "heads.pt", "config.yaml"))
    heads_out = next(iter(meas["points"]))
    assert 0 <= heads_out["val_accuracy"] <= 1 and heads_out["n_filters"] > 0

    invoke(
        "prune",
        run / "model.pt",
        "--measurement",
        run / "measurement",
        "--target",
        "0.3",
        "--metric",
        "params",
        "--finetune-epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        run / "pruned",
    )
    report = json.loads((run / "pruned" / "report.json").read_text())
    assert (run / "pruned" / "pruned.pt").is_file()
    assert report["after"]["params"] < report["before"]["params"]

    invoke("export", run / "pruned" / "pruned.pt", "--out", run / "pruned" / "model.onnx", "--repeats", "2")
    exported = json.loads((run / "pruned" / "model.onnx.json").read_text())
    assert (run / "pruned" / "model.onnx").stat().st_size == exported["bytes"] > 0 and "latency_s" in exported
    import onnxruntime

    session = onnxruntime.InferenceSession(str(run / "pruned" / "model.onnx"), providers=["CPUExecutionProvider"])
    logits = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 32, 32), dtype=np.float32)})[0]
    assert logits.shape == (2, 100), "the exported model still answers 100 labels"
