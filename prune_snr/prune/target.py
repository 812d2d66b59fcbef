"""Structural pruning to a target: torch-pruning's MetaPruner, with the ratio found by bisection.

``--target 0.5`` removes 50 % of the prunable part of the metric (params or MACs; the final
classifier keeps its label outputs and is not counted), or 50 % of the whole model's latency
(``latency``: the exported model timed in ONNX Runtime on this machine, interleaved with the
original, median of repeated runs; it lands within 5 % of the target). One scalar is searched:
the uniform/global ratio, or ``r_max`` of the measured allocation.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
from torch import nn
from torch.nn import functional as F

from ..choices import ALLOCATIONS as ALLOCATION_CHOICES
from ..choices import MEASURED_ALLOCATIONS
from ..choices import METRICS as METRIC_CHOICES
from ..config import check_target
from ..errors import ConfigError
from ..latency import LatencyMeter
from ..models import classifier_name, count, example_input, point_conv, prunable_base
from ..models.graph import DEFAULT_TIMEOUT, ChannelGraph
from ..runtime import broadcast_object, rank_zero_alone, world
from .allocation import ALLOCATION_BUILDERS

TOLERANCE = 0.02
LATENCY_TOLERANCE = 0.05  # relative to the target: timings are medians of noisy runs
MAX_RATIO = 0.8  # at most 80 % of a layer (torch-pruning floors kept channels: 0.9 of 8 would remove all)
ALIGNED_SCAN = 8  # ratios tried below the largest when alignment keeps the target out of reach there


def machine_round_to(cpuinfo: str | None = None) -> int:
    """The channel alignment ONNX Runtime's CPU convolutions want here: their blocked (NCHWc) kernels
    work on 16 floats with AVX-512 and 8 with AVX2; unaligned counts fall back to a slower path.

    Example:
        >>> machine_round_to("flags : fpu sse avx2 avx512f"), machine_round_to("flags : fpu sse avx2")
        (16, 8)
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return 8
    return 16 if "avx512f" in cpuinfo.split() else 8


@functools.cache
def default_round_to() -> int:
    """What ``--round-to`` defaults to on this machine (``prune --round-to 1`` switches alignment off).

    Read on first use, not at import: importing the package should not read ``/proc/cpuinfo``.
    """
    return machine_round_to()


def size_metric(metric: str) -> str:
    """What a candidate cut's or dropped block's ``kept`` counts: the budget's metric, or MACs for a
    latency budget (timing every candidate costs too much)."""
    return "macs" if metric == "latency" else metric


@dataclass
class Allocation:
    """How the pruning budget is spread over layers."""

    kind: str = "uniform"  # a row of prune_snr.choices.ALLOCATIONS
    points: list[str] | None = None  # measured kinds: the points, input to output
    accuracies: list[float] | None = None  # measured kinds: their validation head accuracies
    num_classes: int = 10
    snrs: list[float] | None = None  # snr: the layer SNRs

    def __post_init__(self):
        ALLOCATION_CHOICES.check(self.kind)
        if self.kind in MEASURED_ALLOCATIONS and not self.points:
            raise ConfigError(f"--allocation {self.kind} needs a measurement (per-layer head accuracy and SNR)")

    def keep_weights(self, model: nn.Module) -> np.ndarray:
        """``u_l`` per point (1 = keep all its filters); measured kinds only."""
        return ALLOCATION_BUILDERS[self.kind](self, model)

    def pruner_kwargs(self, model: nn.Module, ratio: float) -> dict:
        if self.kind not in MEASURED_ALLOCATIONS:
            return {"pruning_ratio": ratio, "global_pruning": self.kind == "global"}
        ratios = ratio * (1.0 - self.keep_weights(model))
        return {
            "pruning_ratio": 0.0,
            "pruning_ratio_dict": {point_conv(model, p): float(min(r, MAX_RATIO)) for p, r in zip(self.points, ratios)},
        }


@dataclass
class PruneOutcome:
    model: nn.Module
    ratio: float  # the searched scalar (uniform/global ratio or r_max)
    removed: float  # fraction of the prunable metric removed
    history: list  # torch-pruning pruning_history()
    fallback_groups: list[str]
    trials: int
    unreached: str | None = None  # why the target was not met, when the closest reachable point was taken instead


def prune_at(
    graph: ChannelGraph,
    importance_factory: Callable[[nn.Module], object],
    ratio: float,
    allocation: Allocation,
    *,
    round_to: int | None = None,
    iterative_steps: int = 1,
    gradient_batches: list | None = None,
):
    """Prune a fresh copy of ``graph``'s model at ``ratio``; returns (pruned copy, history, fallback groups)."""
    m, pruner, importance = graph.pruner(
        importance_factory,
        lambda copy: allocation.pruner_kwargs(copy, ratio),
        max_pruning_ratio=1.0,
        round_to=round_to,
        iterative_steps=iterative_steps,
    )
    for _ in range(iterative_steps):
        if gradient_batches is not None:  # gradient-based criteria (taylor) read .grad
            m.zero_grad()
            for x, y in gradient_batches:
                F.cross_entropy(m(x), y).backward()
        graph.step(m, pruner)
    m.zero_grad(set_to_none=True)
    return m, pruner.pruning_history(), list(getattr(importance, "fallback_groups", []))


class Attempt(NamedTuple):
    """One pruning of the bisection: the pruned copy at ``ratio`` and what it removed."""

    model: nn.Module
    history: list
    fallback_groups: list[str]
    removed: float  # fraction of the prunable metric (or of the latency) removed
    ratio: float


def tolerance(metric: str, target: float) -> float:
    return LATENCY_TOLERANCE * target if metric == "latency" else TOLERANCE


def prune_to_target(
    model: nn.Module,
    importance_factory,
    *,
    target: float,
    metric: str = "params",
    allocation: Allocation | None = None,
    round_to: int | None = None,
    iterative_steps: int = 1,
    gradient_batches: list | None = None,
    latency: LatencyMeter | None = None,
    progress=None,
    exact: bool = False,
    graph_timeout: float | None = DEFAULT_TIMEOUT,
) -> PruneOutcome:
    """:func:`search_target`, once: under torchrun rank 0 searches (timing alone, for a latency target) and the
    other ranks prune once at the ratio it found, so every rank holds the same architecture."""
    search = functools.partial(
        search_target,
        model,
        importance_factory,
        target=target,
        metric=metric,
        allocation=allocation,
        round_to=round_to,
        iterative_steps=iterative_steps,
        gradient_batches=gradient_batches,
        latency=latency,
        progress=progress,
        exact=exact,
        graph_timeout=graph_timeout,
    )
    if world()[1] == 1:
        return search()
    if world()[0] == 0:
        try:
            with rank_zero_alone():
                outcome = search()
        except Exception as err:  # the other ranks wait for a ratio: hand them the error instead
            broadcast_object({"error": err})
            raise
        broadcast_object(
            {
                "ratio": outcome.ratio,
                "removed": outcome.removed,
                "trials": outcome.trials,
                "unreached": outcome.unreached,
            }
        )
        return outcome
    found = broadcast_object(None)
    if "error" in found:
        raise found["error"]
    allocation = allocation or Allocation()
    graph = ChannelGraph(model, example_input(model), ignored=[classifier_name(model)], timeout=graph_timeout)
    m, history, fallback = prune_at(
        graph,
        importance_factory,
        found["ratio"],
        allocation,
        round_to=round_to,
        iterative_steps=iterative_steps,
        gradient_batches=gradient_batches,
    )
    return PruneOutcome(
        model=m,
        ratio=found["ratio"],
        removed=found["removed"],
        history=history,
        fallback_groups=sorted(set(fallback)),
        trials=found["trials"],
        unreached=found["unreached"],
    )


def search_target(
    model: nn.Module,
    importance_factory,
    *,
    target: float,
    metric: str = "params",
    allocation: Allocation | None = None,
    round_to: int | None = None,
    iterative_steps: int = 1,
    gradient_batches: list | None = None,
    latency: LatencyMeter | None = None,
    progress=None,
    exact: bool = False,
    graph_timeout: float | None = DEFAULT_TIMEOUT,
) -> PruneOutcome:
    """Bisect the pruning ratio so that ``target`` of the prunable ``metric`` is removed (±2 points;
    for ``latency``, ±5 % of the target, timed against ``model`` with ``latency`` or a new meter at batch 32).

    A target that channel alignment or the architecture's coupling puts out of reach gives the
    closest reachable point, with a one-line warning naming it (``outcome.unreached`` says why),
    unless ``exact``. torch-pruning's dependency graph is traced once, within ``graph_timeout`` seconds, and
    every attempt of the bisection prunes a copy of it.

    Raises:
        ConfigError: the target is outside (0, 1), or ``exact`` and it cannot be reached.
        ModelError: torch-pruning cannot trace the model, or not within ``graph_timeout``.
    """
    check_target(target)
    METRIC_CHOICES.check(metric)
    allocation = allocation or Allocation()
    tol, removed_of = tolerance(metric, target), _removed(model, metric, latency)
    graph = ChannelGraph(
        model, example_input(model), ignored=[classifier_name(model)], timeout=graph_timeout, progress=progress
    )
    trials = 0

    def attempt(r: float) -> Attempt:
        nonlocal trials
        trials += 1
        m, history, fallback = prune_at(
            graph,
            importance_factory,
            r,
            allocation,
            round_to=round_to,
            iterative_steps=iterative_steps,
            gradient_batches=gradient_batches,
        )
        return Attempt(m, history, fallback, removed_of(m), r)

    aligned = bool(round_to and round_to > 1)
    label = f"target search ({metric})"
    task = progress.add_task(label, total=None) if progress is not None else None
    best = _most_removed(
        attempt, 1.0 if allocation.kind == "measured" else MAX_RATIO, enough=target - tol, aligned=aligned
    )
    unreached = None
    if best.removed < target - tol:  # the most that can be removed is then the closest point: no search
        unreached = (
            f"--target {target:.4g}: at most {best.removed:.1%} of the prunable {metric} can be removed with "
            f"--allocation {allocation.kind}"
            + (
                f" and --round-to {round_to} (channel counts kept multiples of {round_to}; --round-to 1 frees them)"
                if aligned
                else ""
            )
        )
        if exact:
            raise ConfigError(f"{unreached}; lower --target")
    else:
        best = _bisect(
            attempt,
            best,
            target=target,
            tol=tol,
            step=lambda text: progress.update(task, description=f"{label}: {text}") if progress is not None else None,
        )
    if progress is not None:
        progress.remove_task(task)
    removed = best.removed
    if unreached is None and abs(removed - target) > tol:
        unreached = f"--target {target:.4g}: the closest reachable is {removed:.1%} of {metric}" + (
            f" with --round-to {round_to}; try --round-to 1" if aligned else "; try another target"
        )
        if exact:
            raise ConfigError(unreached)
    if unreached:
        warnings.warn(
            f"{unreached}; pruned to that closest point, {removed:.1%} (--exact-target makes this an error)",
            stacklevel=2,
        )
    return PruneOutcome(
        model=best.model,
        ratio=best.ratio,
        removed=removed,
        history=best.history,
        fallback_groups=sorted(set(best.fallback_groups)),
        trials=trials,
        unreached=unreached,
    )


def _removed(model: nn.Module, metric: str, latency: LatencyMeter | None):
    """``m ->`` the fraction of ``model``'s prunable ``metric`` that ``m`` removed."""
    if metric == "latency":
        meter = latency or LatencyMeter(model)
        return lambda m: 1 - meter.fraction(m)
    total, base = count(model)[metric], prunable_base(model, metric)
    return lambda m: (total - count(m)[metric]) / base


def _most_removed(attempt, hi: float, *, enough: float, aligned: bool) -> Attempt:
    """The attempt at the largest ratio ``hi``; when it removes less than ``enough`` under channel alignment, the one
    that removes most along the way down: alignment can round a layer's kept channels down to 0, and torch-pruning then
    leaves that layer whole, so the most that can be removed may lie below the largest ratio."""
    best = attempt(hi)
    if best.removed >= enough or not aligned:
        return best
    for r in np.linspace(hi, 0.0, ALIGNED_SCAN + 1)[1:-1]:
        result = attempt(float(r))
        if result.removed > best.removed:
            best = result
    return best


def _bisect(attempt, best: Attempt, *, target: float, tol: float, step) -> Attempt:
    """Bisect the ratio between 0 and ``best``'s for the attempt closest to ``target``;
    ``step(text)`` tells progress."""
    lo, hi = 0.0, best.ratio
    for _ in range(20):
        if abs(best.removed - target) <= tol / 4 or hi - lo < 1e-3:
            break
        mid = (lo + hi) / 2
        result = attempt(mid)
        step(f"ratio {mid:.3f} removes {result.removed:.1%}")
        if abs(result.removed - target) < abs(best.removed - target):
            best = result
        lo, hi = (mid, hi) if result.removed < target else (lo, mid)
    return best
