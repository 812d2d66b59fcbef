"""METHOD.md's rule for a win, in one place: beyond 2 × the pooled seed std *and* a paired 95 % t-interval of
the differences that excludes 0 (seeds shared by both sides are the pairs).

    >>> v = rule({0: 0.91, 1: 0.92, 2: 0.93}, {0: 0.88, 1: 0.89, 2: 0.90})
    >>> v["verdict"], round(v["diff"], 4), v["pairs"]
    ('win', 0.03, 3)
    >>> rule({0: 0.91}, {0: 0.89})["verdict"]
    'n < 2 seeds: undecided'

Not part of the installed package (see ``_common.py`` for how scripts import it).
"""

from __future__ import annotations

import math

import numpy as np

#: two-sided 95 % Student t quantiles by degrees of freedom (scipy-free; 30+ ~ normal)
T95 = {
    1: 12.706,
    2: 4.303,
    3: 3.182,
    4: 2.776,
    5: 2.571,
    6: 2.447,
    7: 2.365,
    8: 2.306,
    9: 2.262,
    10: 2.228,
    12: 2.179,
    15: 2.131,
    20: 2.086,
    30: 2.042,
}
UNDECIDED = "n < 2 seeds: undecided"


def mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def t95(df: int) -> float:
    return T95.get(df) or T95[max(k for k in T95 if k <= df)] if df >= 1 else float("nan")


def paired_interval(a: dict[int, float], b: dict[int, float]) -> tuple[float, float, int]:
    """95 % t-interval of the mean paired difference a - b over the seeds both have: ``(low, high, pairs)``."""
    seeds = sorted(set(a) & set(b))
    diffs = np.array([a[s] - b[s] for s in seeds])
    if len(diffs) < 2:
        return float("nan"), float("nan"), len(diffs)
    half = t95(len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return float(diffs.mean() - half), float(diffs.mean() + half), len(diffs)


def rule(a: dict[int, float], b: dict[int, float]) -> dict:
    """Side ``a`` against side ``b``, each ``{seed: value}`` (higher is better): the mean difference, twice the
    pooled seed std, the paired 95 % interval, and ``verdict`` (win, loss, no significant difference, or undecided
    below 2 pairs) with its ``direction`` (``"win"``, ``"loss"`` or None)."""
    (a_mean, sd), (b_mean, se) = mean_std(list(a.values())), mean_std(list(b.values()))
    pooled = math.sqrt((sd**2 + se**2) / 2)
    diff = a_mean - b_mean
    low, high, pairs = paired_interval(a, b)
    direction = None
    if math.isnan(pooled) or pairs < 2:
        verdict = UNDECIDED
    elif diff > 2 * pooled and low > 0:
        verdict = direction = "win"
    elif diff < -2 * pooled and high < 0:
        verdict = direction = "loss"
    else:
        verdict = "no significant difference"
    return {
        "a_mean": a_mean,
        "b_mean": b_mean,
        "diff": diff,
        "two_pooled_std": 2 * pooled,
        "paired_95": (low, high),
        "pairs": pairs,
        "verdict": verdict,
        "direction": direction,
    }


def both_splits(val: dict, test: dict) -> str:
    """The overall verdict of two :func:`rule` results: a win (or loss) only when validation and test agree."""
    if UNDECIDED in (val["verdict"], test["verdict"]):
        return UNDECIDED
    if val["direction"] and val["direction"] == test["direction"]:
        return val["verdict"]
    return "no significant difference"
