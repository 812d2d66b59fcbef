"""Specs of ONNX export: checker, onnxruntime agreement, latency, CLI."""

import json

import onnx
import pytest
import torch
from typer.testing import CliRunner

import prune_snr
from prune_snr.checkpoint import save_checkpoint
from prune_snr.cli import app
from prune_snr.export import ExportError, export_onnx, latency, verify_onnx
from prune_snr.models import build_model
from prune_snr.prune import build_importance, prune_to_target


@pytest.fixture(scope="module")
def pruned_models():
    models = {}
    for name, kw in (("vgg16", {"width_mult": 0.25}), ("efficientnet_b0", {})):
        model = build_model(name, num_classes=10, **kw).eval()
        with torch.no_grad():  # non-trivial BN statistics, so a wrong graph would show
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2)
        models[name] = (model, prune_to_target(model, lambda m: build_importance("l1", model=m), target=0.5))
    return models


@pytest.mark.parametrize("name", ["vgg16", "efficientnet_b0"])
def test_pruned_model_exports_and_onnxruntime_matches_pytorch(pruned_models, tmp_path, name):
    _, outcome = pruned_models[name]
    path = export_onnx(outcome.model, tmp_path / f"{name}.onnx")
    onnx.checker.check_model(str(path))
    report = verify_onnx(outcome.model, path, batch_sizes=(1, 5))
    assert report["batch_1_max_abs_diff"] < 1e-4 and report["batch_5_max_abs_diff"] < 1e-4
    assert [p.name for p in tmp_path.iterdir()] == [f"{name}.onnx"]  # one self-contained file, no temp left


def test_a_graph_that_disagrees_with_pytorch_is_refused(pruned_models, tmp_path):
    model, outcome = pruned_models["vgg16"]
    path = export_onnx(outcome.model, tmp_path / "m.onnx")
    with pytest.raises(ExportError, match="differs from PyTorch"):
        verify_onnx(model, path)  # same input/output shapes, different weights


def test_fixed_batch_export_rejects_other_batch_sizes(pruned_models, tmp_path):
    _, outcome = pruned_models["vgg16"]
    path = export_onnx(outcome.model, tmp_path / "m.onnx", batch=4)
    assert verify_onnx(outcome.model, path, batch_sizes=(4,))["batch_4_max_abs_diff"] < 1e-4
    with pytest.raises(ExportError, match="batch 3"):
        verify_onnx(outcome.model, path, batch_sizes=(3,))


def test_latency_times_every_model_at_the_batch(pruned_models, tmp_path):
    model, outcome = pruned_models["vgg16"]
    paths = {"slim": export_onnx(outcome.model, tmp_path / "s.onnx"), "full": export_onnx(model, tmp_path / "f.onnx")}
    times = latency(paths, batch=2, input_shape=(3, 32, 32), repeats=3, warmup=1)
    assert set(times) == {"slim", "full"} and all(t > 0 for t in times.values())


def test_export_cli_writes_onnx_and_a_report_with_speedup(pruned_models, tmp_path):
    model, outcome = pruned_models["vgg16"]
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "config": {"model": model.spec}})
    save_checkpoint(
        tmp_path / "pruned.pt",
        {
            "model": outcome.model.state_dict(),
            "pruning": outcome.history,
            "config": {"model": outcome.model.spec, "source": str(tmp_path / "model.pt")},
        },
    )
    result = CliRunner().invoke(
        app, ["export", str(tmp_path / "pruned.pt"), "--out", str(tmp_path / "p.onnx"), "--repeats", "3"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "p.onnx.json").read_text())
    assert set(report["speedup"]) == {"batch_1", "batch_32"} and report["batch_8_max_abs_diff"] < 1e-4
    for key, speedup in report[
        "speedup"
    ].items():  # the table prints the report's paired-round speedup, not a ratio of medians
        assert f"{speedup:.2f}x" in result.output, (key, speedup, result.output)


def test_a_baseline_that_does_not_exist_is_refused_before_anything_is_written(pruned_models, tmp_path):
    model, _ = pruned_models["vgg16"]
    save_checkpoint(tmp_path / "model.pt", {"model": model.state_dict(), "config": {"model": model.spec}})
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(
        app, ["export", str(tmp_path / "model.pt"), "--out", str(out), "--baseline", str(tmp_path / "typo.pt")]
    )
    assert result.exit_code != 0 and "--baseline" in result.output and "typo.pt" in result.output
    assert not out.exists()


def test_the_python_export_refuses_a_bad_batch_and_names_example_input_when_the_shape_is_wrong(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(2))
    net(torch.zeros(1, 1, 8, 8))
    with pytest.raises(ExportError, match=r"batch 'abc'"):
        prune_snr.export(net, tmp_path / "a.onnx", batch="abc")
    # a 1-channel model and no example_input: the guessed shape is named
    with pytest.raises(ExportError, match=r"3x32x32 inputs \(guessed: example_input="):
        prune_snr.export(net, tmp_path / "b.onnx")
    assert not list(tmp_path.iterdir())


def test_a_failed_export_leaves_the_file_as_it_was_and_the_model_as_it_was(tmp_path):
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)
    )
    path, x = tmp_path / "net.onnx", torch.zeros(1, 1, 8, 8)
    prune_snr.export(net, path, example_input=x)
    assert net.training, "the model is handed back in its mode"
    good = path.read_bytes()

    class Noisy(torch.nn.Module):  # PyTorch and onnxruntime disagree: eager runs draw new noise
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            noise = 0 if torch.compiler.is_compiling() else torch.rand(1)
            return self.net(x) + noise

    class Dict(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return {"logits": self.net(x)}

    with pytest.raises(ExportError, match=f"{path}: onnxruntime differs from PyTorch"):
        prune_snr.export(Noisy(), path, example_input=x)
    with pytest.raises(ExportError, match="returns a dict, not a tensor of logits"):
        prune_snr.export(Dict(), path, example_input=x)
    with pytest.raises(ExportError, match=r"cannot run on 3x8x8 inputs: RuntimeError: .*3 channels"):
        prune_snr.export(net, path, example_input=torch.zeros(1, 3, 8, 8))
    with pytest.raises(ExportError, match=r"example_input of shape \(1, 8, 8\): give a batch N x C x H x W"):
        prune_snr.export(net, path, example_input=torch.zeros(1, 8, 8))
    assert path.read_bytes() == good and sorted(p.name for p in tmp_path.iterdir()) == ["net.onnx"]
    assert net.training, "a failed export hands the model back in its mode too"
