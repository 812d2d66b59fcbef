"""Specs of the checkpoint format: atomic writes, weights_only loads, clear refusals."""
import os

import pytest
import torch

import prune_snr
from prune_snr.atomic import atomic_save_bytes
from prune_snr.checkpoint import load_checkpoint, save_checkpoint
from prune_snr.errors import CheckpointError, PruneSnrError
from prune_snr.models import build_model


def test_load_rebuilds_a_trained_model_in_eval_mode(tiny_run):
    out, _ = tiny_run
    model = prune_snr.load(out / "model.pt")
    assert not model.training
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


def test_failed_write_keeps_the_previous_file_and_leaves_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "a.bin"
    atomic_save_bytes(target, b"old")

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(PruneSnrError, match="No space left"):
        atomic_save_bytes(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, {"model": build_model("vgg16", num_classes=10, width_mult=0.125).state_dict(), "config": {}})
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(path)


class RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_holding_a_pickled_object_is_refused_without_running_it(tmp_path):
    path, marker = tmp_path / "evil.pt", tmp_path / "pwned"
    torch.save({"format_version": 1, "model": {}, "config": RunsCodeWhenUnpickled(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        prune_snr.load(path)
    assert not marker.exists()


def test_foreign_state_dict_is_not_taken_for_a_prune_snr_checkpoint(tmp_path):
    path = tmp_path / "foreign.pt"
    torch.save(build_model("vgg16", num_classes=10, width_mult=0.125).state_dict(), path)
    with pytest.raises(CheckpointError, match="not a prune-snr checkpoint"):
        load_checkpoint(path)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        prune_snr.load(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_the_recorded_architecture_are_refused(tmp_path):
    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    spec = dict(model.spec, width_mult=0.25)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": {"model": spec}})
    with pytest.raises(CheckpointError, match="do not fit"):
        prune_snr.load(tmp_path / "m.pt")
