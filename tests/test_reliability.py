"""Specs of failure handling: every fault ends in one clear line and exit code 2 (a killed run
resumes with nothing lost), and no fault leaves a half-written artifact behind."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from PIL import Image

import prune_snr
from prune_snr.errors import ConfigError, ModelError
from prune_snr.measure import measure
from prune_snr.prune import prune
from tests.command_line import invoke, one_line_error


def measurement_without_timings(folder):
    result = json.loads((folder / "measurement.json").read_text())
    result.pop("timings")
    result.pop("feature_cache")
    return result


def kill_when(cmd, env, ready, timeout):
    """Start ``cmd`` in its own session and SIGKILL it, children included, once ``ready()`` holds."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + timeout
    while time.time() < deadline and not ready():
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.parametrize(
    "command,run,error,artifact",
    [
        (
            "measure",
            lambda model: measure(model, "synthetic:3", head_epochs=1, device="cpu"),
            ModelError,
            "measurement.json",
        ),
        ("prune", lambda model: prune(model, "synthetic:3", finetune_epochs=0, device="cpu"), ConfigError, "pruned.pt"),
    ],
)
def test_a_model_paired_with_a_dataset_of_another_class_count_is_refused(
    tiny_run, tmp_path, command, run, error, artifact
):
    out, _ = tiny_run  # 10 classes
    with pytest.raises(error, match="10 outputs"):
        run(prune_snr.load(out / "model.pt"))
    one_line_error(
        invoke(command, out / "model.pt", "--dataset", "synthetic:3", "--device", "cpu", "--out", tmp_path / command),
        "10 outputs",
    )
    assert not (tmp_path / command / artifact).exists()


def _image_folder(root, classes, images_per_class):
    for split in ("train", "val"):
        for c in classes:
            folder = root / split / c
            folder.mkdir(parents=True)
            for i in range(images_per_class):
                Image.new("RGB", (8, 8), (i * 40 % 255, 0, 0)).save(folder / f"{i}.png")


@pytest.mark.parametrize("classes,images,needle", [(["a", "b"], 0, "no valid file"), (["only"], 3, "single label")])
def test_an_empty_or_one_class_dataset_is_refused(tmp_path, classes, images, needle):
    _image_folder(tmp_path / "data", classes, images)
    result = invoke(
        "train",
        "--dataset",
        f"imagefolder:{tmp_path / 'data'}",
        "--width-mult",
        "0.125",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    one_line_error(result, needle)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_nan_loss_while_fine_tuning_stops_with_a_message_and_writes_no_pruned_model(tiny_run, tmp_path):
    out, _ = tiny_run
    result = invoke(
        "prune",
        out / "model.pt",
        "--target",
        "0.3",
        "--criterion",
        "l1",
        "--allocation",
        "uniform",
        "--finetune-lr",
        "1e30",
        "--finetune-epochs",
        "1",
        "--round-to",
        "1",
        "--device",
        "cpu",
        "--out",
        tmp_path / "p",
    )
    one_line_error(result, "lower --lr")
    assert not (tmp_path / "p" / "pruned.pt").exists() and not (tmp_path / "p" / "report.json").exists()


def test_a_full_disk_during_training_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def disk_full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    result = invoke(
        "train",
        "--dataset",
        "synthetic:3",
        "--width-mult",
        "0.125",
        "--epochs",
        "1",
        "--batch-size",
        "32",
        "--device",
        "cpu",
        "--out",
        tmp_path / "run",
    )
    one_line_error(result, "No space left on device")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.slow
def test_a_measurement_killed_mid_run_reruns_to_the_uninterrupted_result(tiny_run, tmp_path):
    out, _ = tiny_run
    env = {**os.environ, "PRUNE_SNR_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "prune_snr.cli",
        "measure",
        str(out / "model.pt"),
        "--head-epochs",
        "20",
        "--labels",
        "3,5",
        "--device",
        "cpu",
        "--no-plots",
        "--out",
    ]
    # killed inside the feature pass or the head training
    kill_when([*cmd, str(tmp_path / "killed")], env, lambda: list((tmp_path / "cache").rglob("*.npy")), timeout=120)
    assert not (tmp_path / "killed" / "measurement.json").exists(), "the run was meant to be killed before it finished"
    for folder in ("killed", "straight"):
        done = subprocess.run([*cmd, str(tmp_path / folder)], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
    assert measurement_without_timings(tmp_path / "killed") == measurement_without_timings(tmp_path / "straight")


@pytest.mark.slow
def test_training_killed_by_sigkill_resumes_to_the_weights_of_an_uninterrupted_run(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "prune_snr.cli",
        "train",
        "--dataset",
        "synthetic",
        "--width-mult",
        "0.125",
        "--epochs",
        "3",
        "--batch-size",
        "64",
        "--device",
        "cpu",
        "--out",
    ]
    # killed once epoch 1 is saved, before the run ends
    kill_when([*cmd, str(tmp_path / "killed")], env, (tmp_path / "killed" / "checkpoint.pt").exists, timeout=180)
    assert not (tmp_path / "killed" / "model.pt").exists(), "the run was meant to be killed before it finished"
    resumed = subprocess.run(
        [*cmd, str(tmp_path / "killed"), "--resume"], env=env, capture_output=True, text=True, timeout=300
    )
    straight = subprocess.run([*cmd, str(tmp_path / "straight")], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-2000:] + straight.stderr[-2000:]
    a = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_on_the_same_device_gives_an_identical_measurement(tiny_run, tmp_path, monkeypatch):
    out, _ = tiny_run
    for run in ("a", "b"):
        monkeypatch.setenv("PRUNE_SNR_CACHE", str(tmp_path / f"cache_{run}"))  # no shared feature cache
        result = invoke(
            "measure", out / "model.pt", "--head-epochs", "3", "--device", "cpu", "--no-plots", "--out", tmp_path / run
        )
        assert result.exit_code == 0, result.output
    assert measurement_without_timings(tmp_path / "a") == measurement_without_timings(tmp_path / "b")
    a, b = (torch.load(tmp_path / r / "heads.pt", weights_only=True) for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))
