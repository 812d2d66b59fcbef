"""ONNX export with its checks: onnx.checker (in :func:`export_onnx`) and onnxruntime against PyTorch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import ExportError
from ..onnx_io import input_chw, on_cpu, ort_session

RTOL, ATOL = 1e-3, 1e-4


def verify_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    batch_sizes=(1, 8),
    input_size: tuple[int, int] | None = None,
    seed: int = 0,
    image_shape: tuple[int, int, int] | None = None,
) -> dict:
    """Compare onnxruntime (CPU) with PyTorch on random inputs; raise above rtol 1e-3 / atol 1e-4. ``model`` is left
    on its device, in its mode."""
    c, h, w = image_shape or input_chw(model, input_size)
    session = ort_session(Path(path))
    name = session.get_inputs()[0].name
    g = torch.Generator().manual_seed(seed)
    report = {}
    for n in batch_sizes:
        x = torch.randn(n, c, h, w, generator=g)
        with torch.no_grad(), on_cpu(model):
            expected = model(x).numpy()
        try:
            got = session.run(None, {name: x.numpy()})[0]
        except Exception as exc:  # onnxruntime's own error types (e.g. InvalidArgument for a fixed batch)
            raise ExportError(
                f"{path}: onnxruntime cannot run batch {n} ({str(exc).splitlines()[0][:160]}); "
                "export with --batch dynamic or that batch size"
            ) from None
        diff = float(np.abs(got - expected).max())
        report[f"batch_{n}_max_abs_diff"] = diff
        if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            raise ExportError(
                f"{path}: onnxruntime differs from PyTorch at batch {n} (max abs diff {diff:.2e} > atol {ATOL} + rtol "
                f"{RTOL})"
            )
    return report
