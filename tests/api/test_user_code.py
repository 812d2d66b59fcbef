"""Specs of ``MODULE:CALLABLE`` architectures on the command line: named, they train; read back, their code runs only
with ``--trust-model-code``."""

import os
import subprocess
import sys
from pathlib import Path

import torch

import prune_snr
from prune_snr.checkpoint import save_checkpoint
from prune_snr.errors import CheckpointError
from prune_snr.models.user_code import TRUST_ENV

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, cwd=ROOT, env=None):
    """``prune-snr ARGS`` in a process of its own (the trust flag holds for a whole process)."""
    environ = {k: v for k, v in os.environ.items() if k != TRUST_ENV}
    environ["PYTHONPATH"] = os.pathsep.join([str(ROOT), environ.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "prune_snr.cli", *map(str, args)],
        cwd=cwd,
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=600,
    )


def last_line(done) -> str:
    return [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1]


def test_a_user_architecture_trains_and_its_checkpoint_is_read_only_with_trust(tmp_path):
    run = tmp_path / "run"
    done = cli(
        "train",
        "--model",
        "tests.user_models:UserNet",
        "--model-kwargs",
        '{"width": 8}',
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--device",
        "cpu",
        "--out",
        run,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["config"]["model"]["name"] == "tests.user_models:UserNet"
    assert payload["config"]["model"]["model_kwargs"] == {"width": 8}

    refused = cli("measure", run / "model.pt", "--head-epochs", "1", "--device", "cpu", "--out", tmp_path / "m")
    assert refused.returncode == 2 and "--trust-model-code" in last_line(refused) and "Traceback" not in refused.stderr
    done = cli(
        "prune",
        run / "model.pt",
        "--trust-model-code",
        "--target",
        "0.3",
        "--metric",
        "macs",
        "--round-to",
        "1",
        "--allocation",
        "uniform",
        "--finetune-epochs",
        "0",
        "--device",
        "cpu",
        "--out",
        tmp_path / "pruned",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    done = cli(
        "export",
        tmp_path / "pruned" / "pruned.pt",
        "--trust-model-code",
        "--repeats",
        "1",
        "--out",
        tmp_path / "slim.onnx",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "slim.onnx").is_file()


def test_reading_a_checkpoint_never_imports_its_module_without_trust(tmp_path):
    marker = tmp_path / "imported.txt"
    (tmp_path / "sneaky.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\nfrom tests.user_models import UserNet\n"
    )
    spec = {"name": "sneaky:UserNet", "num_classes": 10, "in_chans": 3, "input_size": 32, "model_kwargs": {}}
    from tests.user_models import UserNet

    save_checkpoint(
        tmp_path / "model.pt",
        {
            "kind": "train",
            "model": UserNet(in_chans=3).state_dict(),
            "config": {"model": spec, "train": {"dataset": "synthetic"}},
        },
    )
    for command in (
        ["measure", tmp_path / "model.pt", "--out", tmp_path / "m"],
        ["export", tmp_path / "model.pt", "--out", tmp_path / "x.onnx"],
    ):
        done = cli(*command, cwd=tmp_path)
        assert done.returncode == 2 and "--trust-model-code" in last_line(done)
    assert not marker.exists(), "the module was imported"
    try:
        prune_snr.load(tmp_path / "model.pt")
    except CheckpointError as exc:
        assert "trust_model_code=True" in str(exc)
    else:
        raise AssertionError("loading without trust should be refused")
    assert not marker.exists()


def test_a_callable_that_does_not_import_or_give_a_classifier_is_one_line(tmp_path):
    done = cli(
        "train", "--model", "no_such_module:Net", "--dataset", "synthetic", "--epochs", "1", "--out", tmp_path / "r"
    )
    assert done.returncode == 2 and "module 'no_such_module' does not import" in last_line(done)
    done = cli(
        "train",
        "--model",
        "tests.user_models:SqueezeExcite",
        "--model-kwargs",
        '{"channels": 8}',
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--out",
        tmp_path / "r",
    )
    assert done.returncode == 2 and "SqueezeExcite: it cannot read 3x32x32 images" in last_line(done)
    done = cli(
        "train",
        "--model",
        "tests.user_models:not_a_model",
        "--dataset",
        "synthetic",
        "--epochs",
        "1",
        "--out",
        tmp_path / "r",
    )
    assert done.returncode == 2 and "it returned a str, not an nn.Module" in last_line(done)
