"""The one home of METHOD.md's phase-3 formulas: field matrices, clusters, noise, SNR.

Everything is vectorised over the filters of a layer (torch, so it runs where the features
are). Shapes: ``mu`` is ``L x F x K`` (class-mean pooled features, K = p*p), ``W`` is
``L x F x K`` (the linear head on the raw feature scale), ``M`` is ``F x L x L`` (rows = input
label, columns = output unit).

Example:
    >>> M = torch.tensor([[[1.0, 0.5], [0.0, 0.8]]])          # one filter, two labels
    >>> stats = filter_stats(M, threshold=0.3)
    >>> stats.snr.tolist(), stats.n_clusters.tolist()   # 1 -> 0 is below θ: no complete block, so two clusters
    ([2.25], [2])
    >>> filter_stats(M, threshold=0.3, clusters="components").n_clusters.tolist()
    [1]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..choices import CLUSTERS, THRESHOLD

#: Most filters per chunk of the statistics pass (the memory budget usually sets fewer).
CHUNK = 256
#: Bytes one element of an ``F x L x L`` chunk costs at the peak of the statistics pass: the matrix
#: (float32, normalised in place), the signal and noise masks, one float temporary, and slack.
BYTES_PER_ELEMENT = 16
#: Bytes one element costs in the connected-components pass at worst (every element an edge:
#: its index, endpoints and the sparse graph's copy); that pass runs on sub-blocks of a chunk.
BYTES_PER_EDGE = 48
#: Phase 3's working memory when no budget is given.
DEFAULT_BUDGET = 1 << 30


def field_matrices(mu: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``M[f, i, j] = sum_k mu[i, f, k] * W[j, f, k]``: the mean field of output unit j on
    inputs of label i when only filter f's head weights are kept (bias excluded)."""
    return torch.einsum("ifk,jfk->fij", mu, weight)


@dataclass
class FilterStats:
    """Per-filter statistics of one layer (each tensor has one entry per filter)."""

    dead: torch.Tensor  # bool: max(M_f) <= 0
    signal: torch.Tensor  # sum of normalised fields inside clusters
    noise: torch.Tensor  # sum of normalised above-threshold fields outside clusters
    n_noise: torch.Tensor  # number of noise elements
    n_clusters: torch.Tensor  # clusters per filter
    n_active: torch.Tensor  # active labels per filter (= labels in clusters: the clustered labels)
    snr: torch.Tensor  # signal / (noise + threshold); 0 for dead filters
    strength: torch.Tensor  # max(M_f) (clamped at 0): how strong the filter is before normalising
    component: torch.Tensor  # F x L int32: cluster id of each label (its smallest label), L if inactive

    def clusters(self, f: int) -> list[list[int]]:
        """Filter ``f``'s clusters as ascending label lists, ordered by first label."""
        comp = self.component[f].tolist()
        L = len(comp)
        groups: dict[int, list[int]] = {}
        for label, c in enumerate(comp):
            if c < L:
                groups.setdefault(c, []).append(label)
        return [groups[c] for c in sorted(groups)]


def chunk_filters(labels: int, memory_budget: int | None = None) -> int:
    """Filters per chunk so that a chunk's phase-3 working set fits ``memory_budget`` bytes (at least one).

    Example:
        >>> chunk_filters(1000, 2 << 30)  # full-width EfficientNet-B0 conv_head at 1000 labels, 2 GiB
        67
    """
    budget = DEFAULT_BUDGET if memory_budget is None else memory_budget
    return int(max(1, min(CHUNK, budget // 2 // (labels * labels * BYTES_PER_ELEMENT))))


def _components(edges: torch.Tensor, active: torch.Tensor, memory_budget: int) -> torch.Tensor:
    """Connected components of every filter of a chunk (scipy's, on the sparse graph ``edges``: ``c x L x L``
    bool, the above-θ pairs of active labels); a component's id is its smallest label, inactive labels get id L."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    device = edges.device
    edges, active = edges.cpu(), active.cpu()
    n, L, _ = edges.shape
    comp = torch.full((n, L), L, dtype=torch.int32)
    step = int(max(1, memory_budget // 2 // (L * L * BYTES_PER_EDGE)))
    for start in range(0, n, step):
        act = active[start : start + step]
        m = len(act)
        pairs = edges[start : start + step].nonzero()  # E x 3: (filter, i, j); self-loops included, harmless
        base = pairs[:, 0] * L
        rows, cols = (base + pairs[:, 1]).numpy().astype(np.int32), (base + pairs[:, 2]).numpy().astype(np.int32)
        del pairs, base
        graph = csr_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(m * L, m * L))
        del rows, cols
        _, ids = connected_components(graph, directed=True, connection="weak")  # weak: i~j if B[i, j] or B[j, i]
        del graph
        # a component's smallest node is where it first occurs; filters never share a component
        _, first = np.unique(ids, return_index=True)
        smallest = torch.from_numpy((first[ids] % L).astype(np.int32)).view(m, L)
        comp[start : start + m] = torch.where(act, smallest, torch.tensor(L, dtype=torch.int32))
    return comp.to(device)


def _blocks(mutual: torch.Tensor, active: torch.Tensor) -> torch.Tensor:
    """The paper authors' clusters (AFCC's ``return_squares``) of every filter of a chunk, in one ascending pass.

    ``mutual`` is ``c x L x L`` bool: both directions above θ between active labels. The authors walk the seeds
    in ascending order and, for each, the later untaken labels; a label joins when the cluster plus it is a
    complete block. A label's fate is fixed at its own step (by the members below it of each earlier-seeded
    cluster), so one pass over the labels decides every cluster at once: label j joins the first open cluster
    whose members are all mutual with it, or seeds a new one. ``compat[f, k, j]`` = j is mutual with every
    member of the cluster seeded at k. A cluster's id is its seed, its smallest label; inactive labels get L.
    """
    n, L, _ = mutual.shape
    comp = torch.full((n, L), L, dtype=torch.int32, device=mutual.device)
    compat = torch.zeros_like(mutual)
    rows = torch.arange(n, device=mutual.device)
    for j in active.any(0).nonzero().flatten().tolist():
        act = active[:, j]
        fits = compat[:, :, j]
        joins = fits.any(1)
        seed = torch.where(joins, fits.to(torch.uint8).argmax(1), j)[act]  # argmax: the first (lowest-seeded) cluster
        f = rows[act]
        compat[f, seed] = torch.where(joins[act, None], compat[f, seed] & mutual[f, j], mutual[f, j])
        comp[f, j] = seed.to(torch.int32)
    return comp


def _chunk_stats(
    M: torch.Tensor, threshold: float, memory_budget: int, *, owned: bool, clusters: str = CLUSTERS.default
) -> dict[str, torch.Tensor]:
    """METHOD.md's per-filter statistics of a chunk ``M`` (``c x L x L``); ``owned``: ``M`` may be overwritten.

    Signal elements are the pairs of labels of one cluster. With ``components`` every above-θ element between
    active labels is an edge, so the signal elements are exactly those; with ``blocks`` a cluster is a complete
    block, so its pairs are all above θ and the noise count is ``|B| - sum |c|^2`` as in the authors' code.
    """
    M = M.float()
    n, L, _ = M.shape
    peak = M.flatten(1).amax(1)
    dead = peak <= 0
    scale = torch.where(dead, torch.ones_like(peak), peak)[:, None, None]
    norm = M.div_(scale) if owned else M / scale
    del M
    above = norm > threshold
    if bool(dead.any()):
        above &= ~dead[:, None, None]
    active = above.diagonal(dim1=1, dim2=2).clone()  # c x L
    between_active = above & active[:, :, None]
    between_active &= active[:, None, :]
    if clusters == "components":
        comp = _components(between_active, active, memory_budget)
        signal_mask = between_active
    else:
        mutual = between_active & between_active.transpose(1, 2)
        del between_active
        comp = _blocks(mutual, active)
        del mutual
        signal_mask = comp[:, :, None] == comp[:, None, :]
        signal_mask &= active[:, :, None]
    above ^= signal_mask  # now the noise elements (every signal element is above θ)
    noise_mask = above
    signal = (norm * signal_mask).sum((1, 2))
    noise = (norm * noise_mask).sum((1, 2))
    n_noise = noise_mask.sum((1, 2))
    del norm, noise_mask, above, signal_mask
    n_clusters = (comp == torch.arange(L, dtype=torch.int32, device=comp.device)).sum(1)
    snr = torch.where(dead, torch.zeros_like(signal), signal / (noise + threshold))
    out = {
        "dead": dead,
        "signal": signal,
        "noise": noise,
        "n_noise": n_noise,
        "n_clusters": n_clusters,
        "n_active": active.sum(1),
        "snr": snr,
        "strength": peak.clamp(min=0),
        "component": comp,
    }
    return {k: v.cpu() for k, v in out.items()}


def _gather(parts: list[dict[str, torch.Tensor]], L: int) -> FilterStats:
    if not parts:
        empty = torch.zeros(0)
        return FilterStats(
            dead=empty.bool(),
            signal=empty,
            noise=empty,
            n_noise=empty.long(),
            n_clusters=empty.long(),
            n_active=empty.long(),
            snr=empty,
            strength=empty,
            component=torch.zeros(0, L, dtype=torch.int32),
        )
    return FilterStats(**{k: torch.cat([p[k] for p in parts]) for k in parts[0]})


def filter_stats(
    M: torch.Tensor, *, threshold: float = THRESHOLD, memory_budget: int | None = None, clusters: str = CLUSTERS.default
) -> FilterStats:
    """Clusters, signal, noise and SNR of every filter of a layer (METHOD.md, phase 3).

    Args:
        M: ``F x L x L`` un-normalised field matrices (left unchanged).
        threshold: θ; an element counts when its normalised value is strictly above θ.
        memory_budget: bytes the pass may hold besides ``M`` (default 1 GiB); it runs on chunks of filters.
        clusters: ``blocks`` (the paper authors' complete blocks, default) or ``components`` (connected components).
    """
    CLUSTERS.check(clusters)
    F, L, _ = M.shape
    budget = DEFAULT_BUDGET if memory_budget is None else memory_budget
    step = chunk_filters(L, budget)
    parts = [
        _chunk_stats(M[s : s + step], threshold, budget, owned=False, clusters=clusters) for s in range(0, F, step)
    ]
    return _gather(parts, L)


def layer_stats(
    mu: torch.Tensor,
    weight: torch.Tensor,
    *,
    threshold: float = THRESHOLD,
    memory_budget: int | None = None,
    clusters: str = CLUSTERS.default,
) -> FilterStats:
    """:func:`filter_stats` of ``field_matrices(mu, weight)`` without ever holding the layer's ``F x L x L``
    matrices: each chunk of filters (sized so the pass fits ``memory_budget`` bytes, default 1 GiB) gets its
    matrices, its statistics, and is dropped; only the per-filter statistics stay.

    Args:
        mu: ``L x F x K`` class-mean features; weight: ``L x F x K`` head weights (raw feature scale).

    Example:
        >>> mu, W = torch.ones(3, 2, 1), torch.eye(3)[:, None, :1].expand(3, 2, 1)
        >>> layer_stats(mu, W).n_clusters.tolist()
        [1, 1]
    """
    CLUSTERS.check(clusters)
    L, F = mu.shape[:2]
    budget = DEFAULT_BUDGET if memory_budget is None else memory_budget
    step = chunk_filters(L, budget)
    parts = []
    for s in range(0, F, step):
        M = field_matrices(mu[:, s : s + step], weight[:, s : s + step])
        parts.append(_chunk_stats(M, threshold, budget, owned=True, clusters=clusters))
        del M
    return _gather(parts, L)


def top_filters(stats: FilterStats, keep: int | None) -> np.ndarray:
    """Ascending indices of the ``keep`` highest-SNR filters (all of them for ``None``)."""
    F = len(stats.snr)
    if keep is None or keep >= F:
        return np.arange(F)
    order = np.argsort(-stats.snr.numpy(), kind="stable")[:keep]
    return np.sort(order)


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
        "clustered_labels_per_filter": float(stats.n_active.float().mean()),
        "dead_fraction": float(stats.dead.float().mean()),
        "signal_sum": signal,
        "noise_sum": noise,
    }
