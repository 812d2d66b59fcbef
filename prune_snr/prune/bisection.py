"""The bisection of the target search over one pruning scalar: each attempt prunes a copy at a ratio and reports
the fraction of the metric it removed, which grows with the ratio except where channel alignment rounds it."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from torch import nn

ALIGNED_SCAN = 8  # ratios tried below the largest when alignment keeps the target out of reach there


class Attempt(NamedTuple):
    """One pruning of the bisection: the pruned copy at ``ratio`` and what it removed."""

    model: nn.Module
    history: list
    fallback_groups: list[str]
    removed: float  # fraction of the prunable metric (or of the latency) removed
    ratio: float


def most_removed(attempt, hi: float, *, enough: float, aligned: bool) -> Attempt:
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


def bisect(attempt, best: Attempt, *, target: float, tol: float, step) -> Attempt:
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
