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
from typer.testing import CliRunner

from prune_snr.atomic import atomic_save_json
from prune_snr.cli import app
from prune_snr.errors import PruneSnrError

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def one_line_error(result, needle):
    """Exit code 2 and the error in one line, last (plain progress lines of finished phases may come before it)."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert errors == [lines[-1]] and needle in lines[-1] and "Traceback" not in result.output, result.output


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


def test_truncated_checkpoint_is_one_line(tiny_run, tmp_path):
    out, _ = tiny_run
    data = (out / "model.pt").read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    one_line_error(invoke("prune", tmp_path / "half.pt", "--dataset", "synthetic", "--out", tmp_path / "p"), "corrupt or truncated")
    assert not (tmp_path / "p").exists()


def test_a_model_paired_with_a_dataset_of_another_class_count_is_refused(tiny_run, tmp_path):
    out, _ = tiny_run  # 10 classes
    one_line_error(invoke("measure", out / "model.pt", "--dataset", "synthetic:3", "--device", "cpu", "--out", tmp_path / "m"),
                   "10 outputs")
    one_line_error(invoke("prune", out / "model.pt", "--dataset", "synthetic:3", "--device", "cpu", "--out", tmp_path / "p"),
                   "10 outputs")
    assert not (tmp_path / "m" / "measurement.json").exists() and not (tmp_path / "p" / "pruned.pt").exists()


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
    result = invoke("train", "--dataset", f"imagefolder:{tmp_path / 'data'}", "--width-mult", "0.125", "--device", "cpu",
                    "--out", tmp_path / "run")
    one_line_error(result, needle)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_nan_loss_while_fine_tuning_stops_with_a_message_and_writes_no_pruned_model(tiny_run, tmp_path):
    out, _ = tiny_run
    result = invoke("prune", out / "model.pt", "--target", "0.3", "--criterion", "l1", "--allocation", "uniform",
                    "--finetune-lr", "1e30", "--finetune-epochs", "1", "--round-to", "1", "--device", "cpu", "--out", tmp_path / "p")
    one_line_error(result, "lower --lr")
    assert not (tmp_path / "p" / "pruned.pt").exists() and not (tmp_path / "p" / "report.json").exists()


def test_a_full_disk_leaves_the_previous_artifact_whole_and_no_temp_file(tmp_path, monkeypatch):
    target = tmp_path / "report.json"
    atomic_save_json(target, {"version": 1})

    def disk_full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(PruneSnrError, match="No space left on device; free disk space"):
        atomic_save_json(target, {"version": 2, "payload": list(range(1000))})
    assert json.loads(target.read_text()) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_full_disk_during_training_is_one_line_and_leaves_no_partial_file(tmp_path, monkeypatch):
    def disk_full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    result = invoke("train", "--dataset", "synthetic:3", "--width-mult", "0.125", "--epochs", "1", "--batch-size", "32",
                    "--device", "cpu", "--out", tmp_path / "run")
    one_line_error(result, "No space left on device")
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())


@pytest.mark.slow
def test_a_measurement_killed_mid_run_reruns_to_the_uninterrupted_result(tiny_run, tmp_path):
    out, _ = tiny_run
    env = {**os.environ, "PRUNE_SNR_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "prune_snr.cli", "measure", str(out / "model.pt"), "--head-epochs", "20", "--labels", "3,5",
           "--device", "cpu", "--no-plots", "--out"]
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
    cmd = [sys.executable, "-m", "prune_snr.cli", "train", "--dataset", "synthetic", "--width-mult", "0.125", "--epochs", "3",
           "--batch-size", "64", "--device", "cpu", "--out"]
    # killed once epoch 1 is saved, before the run ends
    kill_when([*cmd, str(tmp_path / "killed")], env, (tmp_path / "killed" / "checkpoint.pt").exists, timeout=180)
    assert not (tmp_path / "killed" / "model.pt").exists(), "the run was meant to be killed before it finished"
    resumed = subprocess.run([*cmd, str(tmp_path / "killed"), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    straight = subprocess.run([*cmd, str(tmp_path / "straight")], env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0 and straight.returncode == 0, resumed.stderr[-2000:] + straight.stderr[-2000:]
    a = torch.load(tmp_path / "killed" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_same_seed_on_the_same_device_gives_an_identical_measurement(tiny_run, tmp_path, monkeypatch):
    out, _ = tiny_run
    for run in ("a", "b"):
        monkeypatch.setenv("PRUNE_SNR_CACHE", str(tmp_path / f"cache_{run}"))  # no shared feature cache
        result = invoke("measure", out / "model.pt", "--head-epochs", "3", "--device", "cpu", "--no-plots", "--out", tmp_path / run)
        assert result.exit_code == 0, result.output
    assert measurement_without_timings(tmp_path / "a") == measurement_without_timings(tmp_path / "b")
    a, b = (torch.load(tmp_path / r / "heads.pt", weights_only=True) for r in ("a", "b"))
    assert all(torch.equal(a[k], b[k]) for k in a if isinstance(a[k], torch.Tensor))


def test_plain_progress_says_where_a_long_task_is_at_each_interval():
    from prune_snr.progress import PlainProgress, track

    lines = []
    with PlainProgress(lines.append, interval=0.0) as p:
        for _ in track(p, range(3), "epoch 1/8"):
            pass
    assert [line.split(" after ")[0] for line in lines[:-1]] == ["epoch 1/8: 1/3", "epoch 1/8: 2/3", "epoch 1/8: 3/3"]
    assert lines[-1].startswith("epoch 1/8: 3/3 in ")
