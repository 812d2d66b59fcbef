"""The command line, run in-process: exit codes and one-line errors."""
import json

import pytest
from typer.testing import CliRunner

from prune_snr.cli import app

runner = CliRunner()


def invoke(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_train_writes_model_and_metrics(tmp_path):
    result = invoke("train", "--dataset", "synthetic:3", "--width-mult", "0.125", "--epochs", "1", "--batch-size", "32",
                    "--device", "cpu", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["params"] > 0 and 0 <= metrics["test_accuracy"] <= 1


def test_recipe_keys_are_used_and_flags_win(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("dataset: synthetic:3\nwidth_mult: 0.125\nepochs: 5\nbatch_size: 32\ndevice: cpu\n")
    result = invoke("train", "--recipe", recipe, "--epochs", "1", "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "epochs: 1" in (tmp_path / "run" / "config.yaml").read_text()


@pytest.mark.parametrize("args,needle", [
    (["train", "--model", "resnet9", "--dataset", "synthetic"], "unknown model 'resnet9'"),
    (["train", "--dataset", "mnist"], "unknown dataset 'mnist'"),
    (["train", "--dataset", "synthetic", "--epochs", "-1"], "epochs=-1"),
    (["train", "--dataset", "synthetic", "--device", "tpu"], "--device 'tpu'"),
    (["measure", "missing.pt", "--dataset", "synthetic"], "missing.pt does not exist"),
])
def test_bad_input_is_one_line_and_exit_code_2(tmp_path, args, needle):
    result = invoke(*args, "--out", tmp_path / "out")
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_bad_recipe_key_is_one_line(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("modle: vgg16\n")
    result = invoke("train", "--recipe", recipe, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "'modle'" in result.output


def test_corrupt_checkpoint_is_one_line(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    result = invoke("measure", bad, "--dataset", "synthetic", "--out", tmp_path / "m")
    assert result.exit_code == 2 and "corrupt or truncated" in result.output
