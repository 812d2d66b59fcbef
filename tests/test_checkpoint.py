"""Specs of the checkpoint format: weights_only loads, the pruning-history rebuild, clear refusals."""

import os

import pytest
import torch

import prune_snr
from prune_snr.checkpoint import load_checkpoint, save_checkpoint
from prune_snr.errors import CheckpointError
from prune_snr.models import build_model, count
from prune_snr.models.weights import read_state_dict
from prune_snr.prune import build_importance, prune_to_target
from tests.command_line import invoke, one_line_error


def test_load_rebuilds_a_trained_model_in_eval_mode(tiny_run):
    out, _ = tiny_run
    model = prune_snr.load(out / "model.pt")
    assert not model.training
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("damage", ["half", "first_kilobyte", "not_a_checkpoint", "text", "config_text"])
def test_a_truncated_or_corrupt_checkpoint_is_a_clear_error_and_one_line_at_every_command(tiny_run, tmp_path, damage):
    out, _ = tiny_run
    data = (out / "model.pt").read_bytes()
    bad = tmp_path / "bad.pt"
    damaged = {"half": data[: len(data) // 2], "first_kilobyte": data[:1000], "not_a_checkpoint": b"not a checkpoint"}
    # text whose first byte the unpickler reads as an opcode: 'h' (a memo lookup), 'c' (a global it would refuse)
    bad.write_bytes({**damaged, "text": b"hello\n", "config_text": b"config:\n  lr: 0.1\n"}[damage])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(bad)
    for command in ("measure", "prune"):
        one_line_error(
            invoke(command, bad, "--dataset", "synthetic", "--out", tmp_path / command), "corrupt or truncated"
        )
        assert not (tmp_path / command).exists()


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


def test_a_model_saved_by_prune_snr_save_given_to_a_command_says_how_to_read_it(tmp_path):
    prune_snr.save(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), tmp_path / "mine.pt")
    one_line_error(invoke("export", tmp_path / "mine.pt", "--out", tmp_path / "m.onnx"), "model=YourClass()")


def test_a_git_lfs_pointer_in_place_of_a_checkpoint_or_weights_says_to_fetch_it(tmp_path):
    pointer = tmp_path / "model.pt"
    pointer.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 9\n")
    for load in (load_checkpoint, read_state_dict):
        with pytest.raises(CheckpointError, match=r"model.pt is a Git LFS pointer.*git lfs pull"):
            load(pointer)


def test_missing_checkpoint_names_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="nope.pt"):
        prune_snr.load(tmp_path / "nope.pt")


def test_weights_that_do_not_fit_the_recorded_architecture_are_refused(tmp_path):
    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    spec = dict(model.spec, width_mult=0.25)
    save_checkpoint(tmp_path / "m.pt", {"model": model.state_dict(), "config": {"model": spec}})
    with pytest.raises(CheckpointError, match="do not fit"):
        prune_snr.load(tmp_path / "m.pt")


@pytest.mark.parametrize("name", ["vgg16", "efficientnet_b0"])
def test_pruned_models_reload_through_their_pruning_history(tmp_path, name):
    model = build_model(name, num_classes=10, **({"width_mult": 0.25} if name == "vgg16" else {})).eval()
    out = prune_to_target(model, lambda m: build_importance("l2", model=m), target=0.3)
    save_checkpoint(
        tmp_path / "pruned.pt",
        {
            "kind": "pruned",
            "model": out.model.state_dict(),
            "pruning": out.history,
            "config": {"model": out.model.spec},
        },
    )
    reloaded = prune_snr.load(tmp_path / "pruned.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(reloaded(x), out.model.eval()(x), atol=1e-5)
    assert count(reloaded) == count(out.model)
