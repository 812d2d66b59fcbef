"""Structural pruning to a target: torch-pruning's MetaPruner, with the ratio found by bisection.

``--target 0.5`` removes 50 % of the prunable part of the metric (params or MACs; the final
classifier keeps its label outputs and is not counted), or 50 % of the whole model's latency
(``latency``: the exported model timed in ONNX Runtime on this machine, interleaved with the
original, median of repeated runs; it lands within 5 % of the target). One scalar is searched:
the uniform/global ratio, or ``r_max`` of the measured allocation.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from torch import nn
from torch.nn import functional as F

from ..choices import ALLOCATIONS as ALLOCATION_CHOICES
from ..choices import MEASURED_ALLOCATIONS
from ..choices import METRICS as METRIC_CHOICES
from ..config import check_target, spelling
from ..errors import ConfigError
from ..latency import LatencyMeter
from ..models import classifier_name, count, example_input, point_conv, prunable_base
from ..models.graph import DEFAULT_TIMEOUT, ChannelGraph
from ..runtime import broadcast_object, rank_zero_alone, world
from .allocation import ALLOCATION_BUILDERS
from .bisection import Attempt, bisect, most_removed

TOLERANCE = 0.02
LATENCY_TOLERANCE = 0.05  # relative to the target: timings are medians of noisy runs
MAX_RATIO = 0.8  # at most 80 % of a layer (torch-pruning floors kept channels: 0.9 of 8 would remove all)


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
        return _search_and_share(search)
    found = broadcast_object(None)
    if "error" in found:
        raise found["error"]
    return _prune_at_found(
        model,
        importance_factory,
        found,
        allocation or Allocation(),
        round_to=round_to,
        iterative_steps=iterative_steps,
        gradient_batches=gradient_batches,
        graph_timeout=graph_timeout,
    )


def _search_and_share(search: Callable[[], PruneOutcome]) -> PruneOutcome:
    """Rank 0's search, run alone, with what it found (or its error) broadcast to the ranks waiting for a ratio."""
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


def _prune_at_found(
    model: nn.Module,
    importance_factory,
    found: dict,
    allocation: Allocation,
    *,
    round_to: int | None,
    iterative_steps: int,
    gradient_batches: list | None,
    graph_timeout: float | None,
) -> PruneOutcome:
    """A non-zero rank's outcome: ``model`` pruned once at the ratio rank 0 ``found``, reported as rank 0 found it."""
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
    attempt = _Attempts(
        graph,
        importance_factory,
        allocation,
        removed_of,
        round_to=round_to,
        iterative_steps=iterative_steps,
        gradient_batches=gradient_batches,
    )
    aligned = bool(round_to and round_to > 1)
    label = f"target search ({metric})"
    task = progress.add_task(label, total=None) if progress is not None else None
    best = most_removed(
        attempt, 1.0 if allocation.kind == "measured" else MAX_RATIO, enough=target - tol, aligned=aligned
    )
    unreached = None
    if best.removed < target - tol:  # the most that can be removed is then the closest point: no search
        unreached = _beyond_reach(target, best.removed, metric, allocation.kind, round_to if aligned else None)
        if exact:
            raise ConfigError(f"{unreached}; lower --target")
    else:
        best = bisect(attempt, best, target=target, tol=tol, step=_progress_step(progress, task, label))
    if progress is not None:
        progress.remove_task(task)
    removed = best.removed
    if unreached is None and abs(removed - target) > tol:
        unreached = _missed(target, removed, metric, round_to if aligned else None)
        if exact:
            raise ConfigError(unreached)
    if unreached:
        spelling.warn(
            f"{unreached}; pruned to that closest point, {removed:.1%} (--exact-target makes this an error)",
            stacklevel=2,
        )
    return _outcome(best, attempt.trials, unreached)


class _Attempts:
    """Prunes a copy of ``graph``'s model at a given ratio, counting the trials."""

    def __init__(
        self,
        graph: ChannelGraph,
        importance_factory,
        allocation: Allocation,
        removed_of: Callable[[nn.Module], float],
        *,
        round_to: int | None,
        iterative_steps: int,
        gradient_batches: list | None,
    ):
        self.graph, self.importance_factory = graph, importance_factory
        self.allocation, self.removed_of = allocation, removed_of
        self.round_to, self.iterative_steps, self.gradient_batches = round_to, iterative_steps, gradient_batches
        self.trials = 0

    def __call__(self, r: float) -> Attempt:
        """The pruned copy at ratio ``r`` and what it removed."""
        self.trials += 1
        m, history, fallback = prune_at(
            self.graph,
            self.importance_factory,
            r,
            self.allocation,
            round_to=self.round_to,
            iterative_steps=self.iterative_steps,
            gradient_batches=self.gradient_batches,
        )
        return Attempt(m, history, fallback, self.removed_of(m), r)


def _outcome(best: Attempt, trials: int, unreached: str | None) -> PruneOutcome:
    """The search's outcome: the ``best`` attempt after ``trials`` of them, and why it missed the target if it did."""
    return PruneOutcome(
        model=best.model,
        ratio=best.ratio,
        removed=best.removed,
        history=best.history,
        fallback_groups=sorted(set(best.fallback_groups)),
        trials=trials,
        unreached=unreached,
    )


def _progress_step(progress, task, label: str):
    """``text ->`` shows ``text`` on the search's progress line (nothing without ``progress``)."""
    return lambda text: progress.update(task, description=f"{label}: {text}") if progress is not None else None


def _beyond_reach(target: float, most: float, metric: str, kind: str, round_to: int | None) -> str:
    """Why ``target`` is out of reach when the largest ratio removes only ``most`` (``round_to`` when aligned)."""
    return (
        f"--target {target:.4g}: at most {most:.1%} of the prunable {metric} can be removed with --allocation {kind}"
        + (
            f" and --round-to {round_to} (channel counts kept multiples of {round_to}; --round-to 1 frees them)"
            if round_to
            else ""
        )
    )


def _missed(target: float, removed: float, metric: str, round_to: int | None) -> str:
    """Why the bisection's closest attempt, which removes ``removed``, misses ``target`` (``round_to`` when aligned)."""
    return f"--target {target:.4g}: the closest reachable is {removed:.1%} of {metric}" + (
        f" with --round-to {round_to}; try --round-to 1" if round_to else "; try another target"
    )


def _removed(model: nn.Module, metric: str, latency: LatencyMeter | None):
    """``m ->`` the fraction of ``model``'s prunable ``metric`` that ``m`` removed."""
    if metric == "latency":
        meter = latency or LatencyMeter(model)
        return lambda m: 1 - meter.fraction(m)
    total, base = count(model)[metric], prunable_base(model, metric)
    return lambda m: (total - count(m)[metric]) / base
