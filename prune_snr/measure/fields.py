"""The one home of METHOD.md's phase-3 formulas: field matrices, clusters, noise, SNR.

Everything is vectorised over the filters of a layer (torch, so it runs where the features
are). Shapes: ``mu`` is ``L x F x K`` (class-mean pooled features, K = p*p), ``W`` is
``L x F x K`` (the linear head on the raw feature scale), ``M`` is ``F x L x L`` (rows = input
label, columns = output unit).

Example:
    >>> M = torch.tensor([[[1.0, 0.5], [0.0, 0.8]]])          # one filter, two labels
    >>> stats = filter_stats(M, threshold=0.3)
    >>> stats.snr.tolist(), stats.n_clusters.tolist()
    ([7.666666507720947], [1])
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..choices import THRESHOLD

#: Filters per chunk in the connected-components pass (bounds memory at F x L x L).
CHUNK = 256


def field_matrices(mu: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``M[f, i, j] = sum_k mu[i, f, k] * W[j, f, k]``: the mean field of output unit j on
    inputs of label i when only filter f's head weights are kept (bias excluded)."""
    return torch.einsum("ifk,jfk->fij", mu, weight)


@dataclass
class FilterStats:
    """Per-filter statistics of one layer (each tensor has one entry per filter)."""

    dead: torch.Tensor        # bool: max(M_f) <= 0
    signal: torch.Tensor      # sum of normalised fields inside clusters
    noise: torch.Tensor       # sum of normalised above-threshold fields outside clusters
    n_noise: torch.Tensor     # number of noise elements
    n_clusters: torch.Tensor  # clusters per filter
    n_active: torch.Tensor    # active labels per filter (= labels in clusters)
    snr: torch.Tensor         # signal / (noise + threshold); 0 for dead filters
    strength: torch.Tensor    # max(M_f) (clamped at 0): how strong the filter is before normalising
    component: torch.Tensor   # F x L: cluster id of each label (its smallest label), L if inactive

    def clusters(self, f: int) -> list[list[int]]:
        """Filter ``f``'s clusters as ascending label lists, ordered by first label."""
        comp = self.component[f].tolist()
        L = len(comp)
        groups: dict[int, list[int]] = {}
        for label, c in enumerate(comp):
            if c < L:
                groups.setdefault(c, []).append(label)
        return [groups[c] for c in sorted(groups)]


def _components(adjacency: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """Connected components by min-label propagation; inactive labels get id L."""
    F, L, _ = adjacency.shape
    sentinel = torch.tensor(L, device=adjacency.device)
    labels = torch.arange(L, device=adjacency.device).expand(F, L)
    comp = torch.where(active, labels, sentinel)
    for _ in range(L):
        neighbour_min = torch.where(adjacency, comp[:, None, :], sentinel).amin(-1)
        new = torch.where(active, torch.minimum(comp, neighbour_min), sentinel)
        if torch.equal(new, comp):
            break
        comp = new
    return comp


def filter_stats(M: torch.Tensor, *, threshold: float = THRESHOLD) -> FilterStats:
    """Clusters, signal, noise and SNR of every filter of a layer (METHOD.md, phase 3).

    Args:
        M: ``F x L x L`` un-normalised field matrices.
        threshold: θ; an element counts when its normalised value is strictly above θ.
    """
    M = M.float()
    F, L, _ = M.shape
    peak = M.flatten(1).amax(1)
    dead = peak <= 0
    norm = M / torch.where(dead, torch.ones_like(peak), peak)[:, None, None]
    above = (norm > threshold) & ~dead[:, None, None]
    active = above.diagonal(dim1=1, dim2=2)  # F x L
    parts = []
    for start in range(0, F, CHUNK):
        a, act = above[start:start + CHUNK], active[start:start + CHUNK]
        both = act[:, :, None] & act[:, None, :]
        parts.append(_components((a | a.transpose(1, 2)) & both, act))
    comp = torch.cat(parts) if parts else torch.zeros(0, L, dtype=torch.long, device=M.device)
    same = (comp[:, :, None] == comp[:, None, :]) & active[:, :, None] & active[:, None, :]
    signal_mask, noise_mask = above & same, above & ~same
    signal = (norm * signal_mask).sum((1, 2))
    noise = (norm * noise_mask).sum((1, 2))
    n_active = active.sum(1)
    # A cluster is identified by its smallest label, which is the only label whose id is itself.
    n_clusters = (comp == torch.arange(L, device=M.device)).sum(1)
    snr = torch.where(dead, torch.zeros_like(signal), signal / (noise + threshold))
    return FilterStats(dead=dead, signal=signal, noise=noise, n_noise=noise_mask.sum((1, 2)), n_clusters=n_clusters,
                       n_active=n_active, snr=snr, strength=peak.clamp(min=0), component=comp)


def layer_summary(stats: FilterStats) -> dict[str, float]:
    """Per-layer figures of METHOD.md: means over all filters (dead included) and clusters."""
    n_filters = len(stats.snr)
    total_clusters = int(stats.n_clusters.sum())
    noise = float(stats.noise.sum())
    signal = float(stats.signal.sum())
    return {
        "snr": signal / noise if noise > 0 else (math.inf if signal > 0 else 0.0),
        "noise_per_filter": float(stats.n_noise.float().mean()),
        "clusters_per_filter": total_clusters / n_filters,
        "cluster_size": float(stats.n_active.sum()) / total_clusters if total_clusters else 0.0,
        "dead_fraction": float(stats.dead.float().mean()),
        "signal_sum": signal,
        "noise_sum": noise,
    }
