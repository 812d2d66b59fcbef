"""Specs of int8 export: real onnxruntime static quantization, calibrated on training images."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import prune_snr
from prune_snr.cli import app
from prune_snr.data import build_dataset
from prune_snr.export import QuantizationError, calibration_images, export_onnx, onnx_accuracy, quantize_int8


@pytest.fixture(scope="module")
def fp32(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    return out, export_onnx(prune_snr.load(out / "model.pt"), tmp_path_factory.mktemp("int8") / "model.onnx")


def test_int8_model_keeps_the_accuracy_of_fp32_on_the_test_split(fp32):
    _, path = fp32
    train, test = (build_dataset("synthetic", s, augment=False) for s in ("train", "test"))
    quantized = quantize_int8(path, path.with_suffix(".int8.onnx"), calibration_images(train, size=64))
    int8_acc, fp32_acc = onnx_accuracy(quantized, test), onnx_accuracy(path, test)
    assert fp32_acc > 0.5 and abs(int8_acc - fp32_acc) <= 0.05
    assert quantized.stat().st_size < path.stat().st_size / 2, "int8 weights take a quarter of the bytes"


def test_too_few_calibration_images_is_a_one_line_error():
    with pytest.raises(QuantizationError, match="at least 32"):
        calibration_images(build_dataset("synthetic", "train", augment=False), size=8)


def test_calibration_images_of_the_wrong_shape_are_refused(fp32):
    _, path = fp32
    with pytest.raises(QuantizationError, match="input_size"):
        quantize_int8(path, path.with_name("bad.onnx"), np.zeros((64, 3, 16, 16), dtype=np.float32))
    assert not path.with_name("bad.onnx").exists()


def test_export_int8_reports_accuracy_and_latency_of_fp32_and_int8(fp32, tmp_path):
    out, _ = fp32
    result = CliRunner().invoke(
        app,
        [
            "export",
            str(out / "model.pt"),
            "--out",
            str(tmp_path / "m.onnx"),
            "--int8",
            "--calibration-size",
            "64",
            "--repeats",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "m.onnx.json").read_text())
    q = report["int8"]
    assert (tmp_path / "m.int8.onnx").is_file() and q["calibration"]["split"] == "train"
    assert abs(q["accuracy"] - q["fp32_accuracy"]) <= 0.05 and q["split"] == "test"
    assert set(q["latency_s"]) == {"batch_1", "batch_32"} and all(v > 0 for v in q["speedup_over_fp32"].values())
    assert "int8" in result.output and "fp32" in result.output
