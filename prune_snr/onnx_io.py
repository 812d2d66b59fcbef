"""A model as an ONNX file, and an ONNX Runtime session on it: the mechanics below the stages.

The export stage (:mod:`prune_snr.export`) writes and checks these files for users; the latency
meter (:mod:`prune_snr.latency`) writes them to time candidates while ``prune`` searches a latency
target. Both convert with :func:`export_onnx`, so what is timed is what is shipped.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .errors import ExportError, cause
from .models import handed_back

#: Above this, weights go to an external data file next to the .onnx (protobuf's 2 GB limit).
SINGLE_FILE_LIMIT = 1 << 30


def input_chw(model: nn.Module, input_size: tuple[int, int] | None = None) -> tuple[int, int, int]:
    """``(C, H, W)`` of the images ``model`` reads: its spec's (``input_size`` overrides the side)."""
    spec = getattr(model, "spec", {}) or {}
    if input_size is None and spec.get("input_shape"):
        return tuple(spec["input_shape"])
    h, w = input_size or (spec.get("input_size", 32),) * 2
    return spec.get("in_chans", 3), h, w


def is_batch(batch) -> bool:
    """Whether ``batch`` names an export batch: ``"dynamic"`` or a positive integer (also as text)."""
    return batch == "dynamic" or (str(batch).isdigit() and int(batch) > 0)


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    batch: int | str = "dynamic",
    opset: int | None = None,
    image_shape: tuple[int, int, int] | None = None,
    check: Callable[[Path], object] | None = None,
) -> Path:
    """Export ``model`` to ``path`` (atomically), with a dynamic batch dimension by default. ``check`` runs on the
    written file before it replaces ``path``: a check that raises leaves ``path`` as it was. The model is exported on
    the CPU in eval mode and handed back on its device, in its mode.

    Example:
        >>> export_onnx(prune_snr.load("runs/fm/pruned/pruned.pt"), "model.onnx")  # doctest: +SKIP
    """
    import onnx

    if not is_batch(batch):
        raise ExportError(f"batch {batch!r}: use 'dynamic' or a positive integer")
    c, h, w = image_shape or input_chw(model, input_size)
    guessed = (
        ""
        if image_shape or input_size or getattr(model, "spec", None)
        else " (guessed: example_input= or --input-size give the shape)"
    )
    x = torch.randn(2 if batch == "dynamic" else int(batch), c, h, w)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if batch == "dynamic" else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > SINGLE_FILE_LIMIT
    with on_cpu(model), tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        _logits_of(model, x, guessed)
        tmp_path = Path(tmp) / path.name
        kwargs = {"opset_version": opset} if opset else {}
        try:
            program = torch.onnx.export(
                model,
                (x,),
                dynamo=True,
                dynamic_shapes=dynamic,
                input_names=["input"],
                output_names=["logits"],
                external_data=large,
                verbose=False,
                **kwargs,
            )
            program.save(str(tmp_path), external_data=large)
        except Exception as exc:  # torch.export raises many types; report one line
            raise ExportError(
                f"torch.onnx.export failed for {type(model).__name__} on {c}x{h}x{w} inputs{guessed}: {cause(exc)}"
            ) from exc
        onnx.checker.check_model(str(tmp_path), full_check=True)
        if check is not None:
            try:
                check(tmp_path)
            except ExportError as exc:  # it names the file the user asked for, not the temporary one
                raise ExportError(str(exc).replace(str(tmp_path), str(path))) from None
        for f in Path(tmp).iterdir():
            os.replace(f, path.parent / f.name)
    return path


@contextlib.contextmanager
def on_cpu(model: nn.Module):
    """Within the block ``model`` is on the CPU in eval mode; after it, back on its device in its mode."""
    with handed_back(model):
        yield model.cpu().eval()


def _logits_of(model: nn.Module, x: torch.Tensor, guessed: str) -> None:
    """One forward before exporting: a model that cannot run on ``x``, or gives no logits tensor, says so in one
    line (torch.export's own message would bury it)."""
    shape = "x".join(map(str, x.shape[1:]))
    try:
        with torch.no_grad():
            out = model(x)
    except Exception as exc:  # the user's forward: whatever it raises, one line
        raise ExportError(f"the model cannot run on {shape} inputs{guessed}: {cause(exc)}") from None
    if not isinstance(out, torch.Tensor):
        raise ExportError(
            f"the model returns a {type(out).__name__}, not a tensor of logits; export a module whose forward returns "
            "the logits tensor"
        )


def ort_session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
