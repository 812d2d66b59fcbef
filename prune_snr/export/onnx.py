"""ONNX export (torch.onnx dynamo path), onnx.checker, onnxruntime verification, latency."""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..errors import PruneSnrError

RTOL, ATOL = 1e-3, 1e-4
#: Above this, weights go to an external data file next to the .onnx (protobuf's 2 GB limit).
SINGLE_FILE_LIMIT = 1 << 30


class ExportError(PruneSnrError):
    """The exported model is invalid or disagrees with PyTorch."""


def export_onnx(model: nn.Module, path: str | Path, *, input_size: tuple[int, int] | None = None, batch: int | str = "dynamic",
                opset: int | None = None) -> Path:
    """Export ``model`` to ``path`` (atomically), with a dynamic batch dimension by default.

    Example:
        >>> export_onnx(prune_snr.load("runs/fm/pruned/pruned.pt"), "model.onnx")  # doctest: +SKIP
    """
    import onnx

    model = model.cpu().eval()
    spec = getattr(model, "spec", {}) or {}
    h, w = input_size or (spec.get("input_size", 32),) * 2
    example_batch = 2 if batch == "dynamic" else int(batch)
    x = torch.randn(example_batch, spec.get("in_chans", 3), h, w)
    dynamic = ({0: torch.export.Dim("batch", min=1, max=4096)},) if batch == "dynamic" else None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    large = sum(p.numel() * p.element_size() for p in model.parameters()) > SINGLE_FILE_LIMIT
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        tmp_path = Path(tmp) / path.name
        kwargs = {"opset_version": opset} if opset else {}
        try:
            program = torch.onnx.export(model, (x,), dynamo=True, dynamic_shapes=dynamic, input_names=["input"],
                                        output_names=["logits"], external_data=large, verbose=False, **kwargs)
            program.save(str(tmp_path), external_data=large)
        except Exception as exc:  # torch.export raises many types; report one line
            raise ExportError(f"torch.onnx.export failed for {type(model).__name__}: {str(exc).splitlines()[0]}") from exc
        onnx.checker.check_model(str(tmp_path), full_check=True)
        for f in Path(tmp).iterdir():
            os.replace(f, path.parent / f.name)
    return path


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify_onnx(model: nn.Module, path: str | Path, *, batch_sizes=(1, 8), input_size: tuple[int, int] | None = None, seed: int = 0) -> dict:
    """Compare onnxruntime (CPU) with PyTorch on random inputs; raise above rtol 1e-3 / atol 1e-4."""
    model = model.cpu().eval()
    spec = getattr(model, "spec", {}) or {}
    h, w = input_size or (spec.get("input_size", 32),) * 2
    session = _session(Path(path))
    name = session.get_inputs()[0].name
    g = torch.Generator().manual_seed(seed)
    report = {}
    for n in batch_sizes:
        x = torch.randn(n, spec.get("in_chans", 3), h, w, generator=g)
        with torch.no_grad():
            expected = model(x).numpy()
        try:
            got = session.run(None, {name: x.numpy()})[0]
        except Exception as exc:  # onnxruntime's own error types (e.g. InvalidArgument for a fixed batch)
            raise ExportError(f"{path}: onnxruntime cannot run batch {n} ({str(exc).splitlines()[0][:160]}); "
                              "export with --batch dynamic or that batch size") from None
        diff = float(np.abs(got - expected).max())
        report[f"batch_{n}_max_abs_diff"] = diff
        if not np.allclose(got, expected, rtol=RTOL, atol=ATOL):
            raise ExportError(f"{path}: onnxruntime differs from PyTorch at batch {n} (max abs diff {diff:.2e} > atol {ATOL} + rtol {RTOL})")
    return report


def latency(paths: dict[str, str | Path], *, batch: int, input_shape: tuple[int, int, int], repeats: int = 30,
            warmup: int = 5, block: int = 3) -> dict[str, float]:
    """Median seconds of one onnxruntime CPU run at ``batch`` for each model (see :func:`latency_rounds`)."""
    return {key: statistics.median(t) for key, t in latency_rounds(paths, batch=batch, input_shape=input_shape, repeats=repeats,
                                                                     warmup=warmup, block=block).items()}


def ratio(rounds: dict[str, list[float]], key: str, reference: str) -> float:
    """Median over rounds of ``key``'s time divided by ``reference``'s in the same round.

    Both were timed seconds apart, so a slow drift of the machine's speed (other tenants, clock
    changes) cancels out; a ratio of overall medians would keep it.
    """
    return statistics.median(a / b for a, b in zip(rounds[key], rounds[reference]))


def latency_rounds(paths: dict[str, str | Path], *, batch: int, input_shape: tuple[int, int, int], repeats: int = 30,
                   warmup: int = 5, block: int = 3) -> dict[str, list[float]]:
    """Seconds of one onnxruntime CPU run at ``batch`` for each model, one figure per round.

    Models take turns (a, b, a, b, ...) so that load from elsewhere on the machine hits every model
    alike and the ratio stays fair. Each turn is one untimed run (the caches now hold this model,
    not the previous one) then ``block`` timed runs whose mean is the turn's figure: the steady-state
    latency a deployed model sees, whatever the number of models compared.
    """
    sessions = {key: _session(Path(p)) for key, p in paths.items()}
    x = np.random.default_rng(0).standard_normal((batch, *input_shape), dtype=np.float32)
    feeds = {key: {s.get_inputs()[0].name: x} for key, s in sessions.items()}
    for _ in range(warmup):
        for key, s in sessions.items():
            s.run(None, feeds[key])
    times: dict[str, list[float]] = {key: [] for key in sessions}
    for _ in range(repeats):
        for key, s in sessions.items():
            s.run(None, feeds[key])
            t0 = time.perf_counter()
            for _ in range(block):
                s.run(None, feeds[key])
            times[key].append((time.perf_counter() - t0) / block)
    return times


class LatencyMeter:
    """Latency of models relative to a reference, on this machine (onnxruntime CPU provider).

    Each call exports the candidate to ONNX and times it interleaved with the reference (median of
    ``repeats`` runs each), so that load from elsewhere hits both alike: the ratio is what counts.

    Example:
        >>> meter = LatencyMeter(model, batch=1)  # doctest: +SKIP
        >>> meter.fraction(pruned)               # doctest: +SKIP
        0.51
    """

    def __init__(self, reference: nn.Module, *, batch: int = 32, repeats: int | None = None):
        # runs at batch 1 take ~0.3 ms and jitter on a shared machine: many more repeats there
        self.batch, self.repeats = batch, repeats
        self._tmp = tempfile.TemporaryDirectory()
        self._reference = export_onnx(reference, Path(self._tmp.name) / "reference.onnx")
        spec = getattr(reference, "spec", {}) or {}
        self.shape = (spec.get("in_chans", 3), *(spec.get("input_size", 32),) * 2)
        self._count = 0

    def seconds(self, model: nn.Module, *, batch: int | None = None) -> dict[str, float]:
        """Median seconds of ``model`` and of the reference, and their paired ratio: ``{"model", "reference", "fraction"}``."""
        self._count += 1
        path = export_onnx(model, Path(self._tmp.name) / f"candidate{self._count}.onnx")
        batch = batch or self.batch
        try:
            rounds = latency_rounds({"reference": self._reference, "model": path}, batch=batch, input_shape=self.shape,
                                    repeats=self.repeats or (100 if batch == 1 else 30))
        finally:
            path.unlink(missing_ok=True)
        return {"model": statistics.median(rounds["model"]), "reference": statistics.median(rounds["reference"]),
                "fraction": ratio(rounds, "model", "reference")}

    def fraction(self, model: nn.Module, *, batch: int | None = None) -> float:
        """``model``'s latency as a fraction of the reference's (median of per-round ratios)."""
        return self.seconds(model, batch=batch)["fraction"]

    def close(self) -> None:
        self._tmp.cleanup()
