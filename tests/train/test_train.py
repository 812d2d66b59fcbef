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
    with pytest.raises(ConfigError, match="resume=True"):
        train(config(out, epochs=3))


def test_resume_with_different_options_is_refused(tmp_path):
    def crash(record):
        raise Crash

    with pytest.raises(Crash):
        train(config(tmp_path / "r"), on_epoch=crash)
    with pytest.raises(ConfigError, match="lr"):
        train(config(tmp_path / "r", lr=0.5), resume=True)


def test_a_diverging_run_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    from prune_snr.data import build_dataset
    from prune_snr.models import build_model
    from prune_snr.train.loop import fit

    ckpt = tmp_path / "checkpoint.pt"
    data = build_dataset("synthetic", "train"), build_dataset("synthetic", "test")
    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    fit(model, *data, config(tmp_path, epochs=1), checkpoint_path=ckpt)
    good = ckpt.read_bytes()
    assert all(torch.isfinite(v).all() for v in load_checkpoint(ckpt)["model"].values() if v.is_floating_point())

    with torch.no_grad():
        next(model.parameters()).fill_(float("inf"))  # the next epoch's loss is not finite
    with pytest.raises(TrainingError, match="lower lr.*last good checkpoint kept"):
        fit(model, *data, config(tmp_path, epochs=1), checkpoint_path=ckpt)
    assert ckpt.read_bytes() == good


def test_a_learning_rate_that_diverges_from_the_start_leaves_no_checkpoint(tmp_path):
    with pytest.raises(TrainingError, match="lower lr"):
        train(config(tmp_path / "r", lr=1e6, epochs=1))
    assert not (tmp_path / "r" / "checkpoint.pt").exists() and not (tmp_path / "r" / "model.pt").exists()


def test_a_checkpoint_whose_optimizer_groups_do_not_fit_is_refused_with_one_line(tmp_path):
    from prune_snr.checkpoint import save_checkpoint
    from prune_snr.errors import CheckpointError

    def crash(record):
        raise Crash

    with pytest.raises(Crash):
        train(config(tmp_path / "r"), on_epoch=crash)
    state = load_checkpoint(tmp_path / "r" / "checkpoint.pt")
    groups = state["optimizer"]["param_groups"]
    groups[0]["params"] = groups[0]["params"] + groups[1]["params"]  # a checkpoint with one parameter group
    del groups[1:]
    save_checkpoint(tmp_path / "r" / "checkpoint.pt", state)
    with pytest.raises(CheckpointError, match="new out"):
        train(config(tmp_path / "r"), resume=True)


def test_fine_tuning_takes_its_own_weight_decay_trains_default_unless_given():
    from prune_snr.config import PruneConfig
    from prune_snr.train.finetune import finetune_options

    def options(**given):
        cfg = resolve(PruneConfig, overrides=given)
        return finetune_options(cfg.finetune, batch_size=8, seed=0, device="cpu", amp=False)

    assert options().weight_decay == TrainConfig().weight_decay
    assert options(finetune_weight_decay=0.0).weight_decay == 0.0
    with pytest.raises(ConfigError, match="finetune_weight_decay"):
        options(finetune_weight_decay=-1e-4)
