"""``prune_snr.export``: any model to an ONNX file, checked against PyTorch with onnxruntime."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import ExportError
from ..onnx_io import export_onnx
from .onnx import verify_onnx


def export(
    model: nn.Module,
    path: str | Path,
    *,
    example_input: torch.Tensor | None = None,
    batch: int | str = "dynamic",
    verify: bool = True,
) -> dict:
    """Write ``model`` to ``path`` as ONNX (atomically, a dynamic batch dimension by default) and, with ``verify``,
    compare onnxruntime's outputs with PyTorch's on random inputs of that shape (an error above rtol 1e-3 / atol 1e-4,
    and ``path`` is left as it was). ``model`` stays on its device, in its mode.

    Args:
        example_input: a batch of the images the model reads (only its ``C x H x W`` is used); default: the shape a
            prune-snr model records.

    Returns:
        ``{"path": ..., "batch_1_max_abs_diff": ..., "batch_8_max_abs_diff": ...}`` (no diffs without ``verify``).

    Example:
        >>> import tempfile, os
        >>> net = torch.nn.Sequential(
        ...     torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 3)
        ... )
        >>> report = export(net, os.path.join(tempfile.mkdtemp(), "net.onnx"), example_input=torch.zeros(1, 1, 8, 8))
        >>> report["batch_8_max_abs_diff"] < 1e-4
        True
    """
    if example_input is not None and example_input.dim() != 4:
        raise ExportError(
            f"example_input of shape {tuple(example_input.shape)}: give a batch N x C x H x W (e.g. x.unsqueeze(0))"
        )
    shape = tuple(example_input.shape[1:]) if example_input is not None else None
    report = {}

    def checked(written: Path) -> None:  # before the file replaces ``path``: a failed check leaves it as it was
        sizes = (1, 8) if batch == "dynamic" else (int(batch),)  # export_onnx has checked the batch by now
        report.update(verify_onnx(model, written, batch_sizes=sizes, image_shape=shape))

    written = export_onnx(model, path, batch=batch, image_shape=shape, check=checked if verify else None)
    return {"path": str(written), **report}
