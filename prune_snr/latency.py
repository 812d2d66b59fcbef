"""Latency on this machine: ONNX Runtime (CPU provider) runs of exported models, timed in turns.

Below the stages: ``prune --metric latency`` bisects against :class:`LatencyMeter`, and
``prune-snr export`` reports :func:`latency_rounds` of the slimmed, original and int8 models.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from torch import nn

from .onnx_io import export_onnx, ort_session
from .runtime import broadcast_object, world


def latency(
    paths: dict[str, str | Path],
    *,
    batch: int,
    input_shape: tuple[int, int, int],
    repeats: int = 30,
    warmup: int = 5,
    block: int = 3,
) -> dict[str, float]:
    """Median seconds of one onnxruntime CPU run at ``batch`` for each model (see :func:`latency_rounds`)."""
    return {
        key: statistics.median(t)
        for key, t in latency_rounds(
            paths, batch=batch, input_shape=input_shape, repeats=repeats, warmup=warmup, block=block
        ).items()
    }


def ratio(rounds: dict[str, list[float]], key: str, reference: str) -> float:
    """Median over rounds of ``key``'s time divided by ``reference``'s in the same round.

    Both were timed seconds apart, so a slow drift of the machine's speed (other tenants, clock
    changes) cancels out; a ratio of overall medians would keep it.
    """
    return statistics.median(a / b for a, b in zip(rounds[key], rounds[reference]))


def latency_rounds(
    paths: dict[str, str | Path],
    *,
    batch: int,
    input_shape: tuple[int, int, int],
    repeats: int = 30,
    warmup: int = 5,
    block: int = 3,
) -> dict[str, list[float]]:
    """Seconds of one onnxruntime CPU run at ``batch`` for each model, one figure per round.

    Models take turns (a, b, a, b, ...) so that load from elsewhere on the machine hits every model
    alike and the ratio stays fair. Each turn is one untimed run (the caches now hold this model,
    not the previous one) then ``block`` timed runs whose mean is the turn's figure: the steady-state
    latency a deployed model sees, whatever the number of models compared.
    """
    sessions = {key: ort_session(Path(p)) for key, p in paths.items()}
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
    Under torchrun only rank 0 times (ranks timing the same CPUs at once would disturb one another and
    get different figures, hence different architectures) and every rank gets its figures: every rank
    must make the same calls, in the same order.

    Example:
        >>> meter = LatencyMeter(model, batch=1)  # doctest: +SKIP
        >>> meter.fraction(pruned)               # doctest: +SKIP
        0.51
    """

    def __init__(self, reference: nn.Module, *, batch: int = 32, repeats: int | None = None):
        # runs at batch 1 take ~0.3 ms and jitter on a shared machine: many more repeats there
        self.batch, self.repeats = batch, repeats
        self._tmp = tempfile.TemporaryDirectory()
        self._reference = export_onnx(reference, Path(self._tmp.name) / "reference.onnx") if world()[0] == 0 else None
        spec = getattr(reference, "spec", {}) or {}
        self.shape = (spec.get("in_chans", 3), *(spec.get("input_size", 32),) * 2)
        self._count = 0

    def seconds(self, model: nn.Module, *, batch: int | None = None) -> dict[str, float]:
        """Median seconds of ``model`` and of the reference, and their paired ratio:
        ``{"model", "reference", "fraction"}``."""
        self._count += 1
        return broadcast_object(self._timed(model, batch or self.batch) if world()[0] == 0 else None)

    def _timed(self, model: nn.Module, batch: int) -> dict[str, float]:
        path = export_onnx(model, Path(self._tmp.name) / f"candidate{self._count}.onnx")
        try:
            rounds = latency_rounds(
                {"reference": self._reference, "model": path},
                batch=batch,
                input_shape=self.shape,
                repeats=self.repeats or (100 if batch == 1 else 30),
            )
        finally:
            path.unlink(missing_ok=True)
        return {
            "model": statistics.median(rounds["model"]),
            "reference": statistics.median(rounds["reference"]),
            "fraction": ratio(rounds, "model", "reference"),
        }

    def fraction(self, model: nn.Module, *, batch: int | None = None) -> float:
        """``model``'s latency as a fraction of the reference's (median of per-round ratios)."""
        return self.seconds(model, batch=batch)["fraction"]

    def close(self) -> None:
        self._tmp.cleanup()
