"""int8 ONNX: ONNX Runtime static quantization (QDQ, per-channel weights) calibrated on training images.

Calibration reads a seeded sample of the training split (never the test split, which grades):
activation ranges come from MinMax statistics over those images. The fp32 model is first
pre-processed (shape inference, graph optimization) as ONNX Runtime recommends.

Example:
    >>> calib = calibration_images(build_dataset("fashion-mnist", "train", augment=False), size=512)  # doctest: +SKIP
    >>> quantize_int8("slim.onnx", "slim.int8.onnx", calib)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import PruneSnrError
from ..onnx_io import ort_session

MIN_CALIBRATION = 32
CALIBRATION_BATCH = 32


class QuantizationError(PruneSnrError):
    """The calibration set or the quantization itself is unusable."""


def calibration_images(dataset, *, size: int = 512, seed: int = 0) -> np.ndarray:
    """``size`` images drawn with ``seed`` from ``dataset`` (un-augmented), as one float32 array."""
    if size < MIN_CALIBRATION:
        raise QuantizationError(
            f"--calibration-size {size}: use at least {MIN_CALIBRATION} images for stable activation ranges"
        )
    if len(dataset) < size:
        raise QuantizationError(
            f"--calibration-size {size}: the training split has only {len(dataset)} images; lower it"
        )
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))[:size]
    return torch.stack([dataset[int(i)][0] for i in order]).numpy().astype(np.float32)


def quantize_int8(fp32_path: str | Path, out_path: str | Path, images: np.ndarray) -> Path:
    """Write the QDQ int8 version of ``fp32_path`` to ``out_path`` (atomically), calibrated on ``images``.

    Raises:
        QuantizationError: too few images, or images of another shape than the model's input.
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    shape = [
        d.dim_value or None
        for d in onnx.load(str(fp32_path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    ]
    if images.ndim != 4 or len(images) < MIN_CALIBRATION:
        raise QuantizationError(
            f"calibration set of shape {tuple(images.shape)}: need at least {MIN_CALIBRATION} images N x C x H x W"
        )
    if [s for s in shape[1:]] != list(images.shape[1:]):
        raise QuantizationError(
            f"calibration images are {tuple(images.shape[1:])} but {fp32_path} takes {tuple(shape[1:])}; "
            "pass --input-size matching the export"
        )
    input_name = onnx.load(str(fp32_path), load_external_data=False).graph.input[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([images[i : i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {input_name: batch}

    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
        staged = Path(tmp) / out_path.name
        quantize_static(
            str(prepared),
            str(staged),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
        )
        os.replace(staged, out_path)
    return out_path


def onnx_accuracy(path: str | Path, dataset, *, batch_size: int = 256) -> float:
    """Top-1 accuracy of an ONNX model on ``dataset`` through onnxruntime (CPU)."""
    session = ort_session(Path(path))
    name = session.get_inputs()[0].name
    correct = 0
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    for x, y in loader:
        logits = session.run(None, {name: x.numpy().astype(np.float32)})[0]
        correct += int((logits.argmax(1) == y.numpy()).sum())
    return correct / len(dataset)
