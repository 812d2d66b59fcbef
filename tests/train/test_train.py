"""Specs of training: learning, resume, refusals, NaN handling."""
import pytest
import torch

from prune_snr.checkpoint import load_checkpoint
from prune_snr.config import TrainConfig, resolve
from prune_snr.errors import ConfigError, TrainingError
from prune_snr.train import train


def config(out, **kw):
    base = dict(dataset="synthetic", width_mult=0.125, epochs=2, batch_size=64, out=str(out), device="cpu")
    return resolve(TrainConfig, overrides={**base, **kw})


class Crash(Exception):
    pass


def test_training_learns_the_synthetic_task_and_writes_the_run_folder(tiny_run):
    out, metrics = tiny_run
    assert metrics["test_accuracy"] > 0.5  # chance is 0.1
    assert {p.name for p in out.iterdir()} >= {"checkpoint.pt", "model.pt", "metrics.json", "config.yaml"}
    assert metrics["params"] > 0 and metrics["macs"] > metrics["params"]
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2, 3]


def test_resume_after_a_crash_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    train(config(tmp_path / "straight"))

    def crash_after_first_epoch(record):
        if record["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        train(config(tmp_path / "resumed"), on_epoch=crash_after_first_epoch)
    assert load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")["epoch"] == 1
    metrics = train(config(tmp_path / "resumed"), resume=True)
    a = load_checkpoint(tmp_path / "straight" / "model.pt")["model"]
    b = load_checkpoint(tmp_path / "resumed" / "model.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]


def test_an_existing_run_is_not_overwritten_without_resume(tiny_run):
    out, _ = tiny_run
    with pytest.raises(ConfigError, match="--resume"):
        train(config(out, epochs=3))


def test_resume_with_different_options_is_refused(tmp_path):
    def crash(record):
        raise Crash

    with pytest.raises(Crash):
        train(config(tmp_path / "r"), on_epoch=crash)
    with pytest.raises(ConfigError, match="lr"):
        train(config(tmp_path / "r", lr=0.5), resume=True)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    def poison(record):
        if record["epoch"] == 1:
            raise Crash

    with pytest.raises(Crash):
        train(config(tmp_path / "r"), on_epoch=poison)
    before = (tmp_path / "r" / "checkpoint.pt").read_bytes()
    with pytest.raises(TrainingError, match="lower --lr"):
        train(config(tmp_path / "r2", lr=1e6, epochs=1))
    assert not (tmp_path / "r2" / "checkpoint.pt").exists()
    assert (tmp_path / "r" / "checkpoint.pt").read_bytes() == before
