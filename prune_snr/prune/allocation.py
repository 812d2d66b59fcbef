"""Where to prune: per-layer ratios from the measured layer accuracy (METHOD.md, allocation).

Each measured layer gets ``r_l = r_max * (1 - u_l)`` where ``g_l`` is its marginal head
accuracy (``A_l - A_{l-1}``, chance before the first point) clipped at 0,
``u_l = min(1, g_l / max_{l'>=2} g_l')`` and ``u_1 = 1``. Layers that add accuracy keep their
filters; layers that add none give up the most. ``r_max`` is found by the target search.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..models.counting import point_macs


def marginal_gains(accuracies: list[float], num_classes: int) -> np.ndarray:
    previous = np.concatenate([[1.0 / num_classes], accuracies[:-1]])
    return np.clip(np.asarray(accuracies) - previous, 0, None)


def keep_weights(accuracies: list[float], num_classes: int) -> np.ndarray:
    """``u_l`` in [0, 1] for each point (1 = keep all its filters)."""
    gains = marginal_gains(accuracies, num_classes)
    u = np.ones(len(gains))
    rest = gains[1:]
    if len(rest) and rest.max() > 0:
        u[1:] = np.minimum(1.0, rest / rest.max())
    elif len(rest):
        u[1:] = 0.0  # no later layer adds accuracy: all give up the same
    return u


def gain_per_mac_keep_weights(accuracies: list[float], macs: list[float], num_classes: int) -> np.ndarray:
    """``u_l`` from the marginal accuracy per MAC: a layer that adds much for little compute keeps its
    filters, an expensive layer that adds little gives up the most (the first point keeps all)."""
    gains = marginal_gains(accuracies, num_classes) / np.maximum(np.asarray(macs, dtype=float), 1.0)
    u = np.ones(len(gains))
    rest = gains[1:]
    if len(rest) and rest.max() > 0:
        u[1:] = np.minimum(1.0, rest / rest.max())
    elif len(rest):
        u[1:] = 0.0
    return u


def snr_keep_weights(snrs: list[float]) -> np.ndarray:
    """``u_l`` = layer SNR / the largest layer SNR (an infinite SNR counts as the largest finite one)."""
    s = np.asarray(snrs, dtype=float)
    finite = s[np.isfinite(s)]
    top = finite.max() if len(finite) and finite.max() > 0 else 1.0
    return np.clip(np.where(np.isfinite(s), s, top) / top, 0.0, 1.0)


def layer_ratios(accuracies: list[float], num_classes: int, r_max: float) -> np.ndarray:
    return r_max * (1.0 - keep_weights(accuracies, num_classes))


#: ``--allocation`` name -> ``u_l`` per point (1 = keep all its filters) from an
#: :class:`prune_snr.prune.target.Allocation` and the model, for the rows of
#: :data:`prune_snr.choices.ALLOCATIONS` that read a measurement (``uniform`` and ``global`` are
#: torch-pruning's own ratios and need no builder).
ALLOCATION_BUILDERS: dict[str, Callable[..., np.ndarray]] = {
    "measured": lambda allocation, model: keep_weights(allocation.accuracies, allocation.num_classes),
    "gain-per-mac": lambda allocation, model: gain_per_mac_keep_weights(
        allocation.accuracies, point_macs(model, allocation.points), allocation.num_classes
    ),
    "snr": lambda allocation, model: snr_keep_weights(allocation.snrs),
}
