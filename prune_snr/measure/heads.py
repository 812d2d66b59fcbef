"""Phase 2, step 2: linear heads for every point, trained on cached features that stream from disk.

Heads see standardized features (better conditioned, Adam converges in a few epochs) and are
folded back to the raw feature scale afterwards, ``W_raw = W / sigma``, because the field
matrices must be computed on raw, un-centered class means (METHOD.md).

Memory stays bounded whatever the number of rows: each epoch walks one random permutation of
the training rows in chunks; a chunk's rows are read from the cache file (sorted, so the file
is read forward, with ``preadv`` rather than through the mapping, whose page faults would pull
the whole file into the process), standardized, and cut into the mini-batches of that stretch of
the permutation.
Points whose rows are too wide to share one chunk under ``memory_budget`` are trained in
groups, one pass over the data per group. Heads are independent (own loss, own Adam state) and
every group walks the same permutation, so grouping and chunking change nothing in the result:
it equals training all heads together on one in-memory matrix.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ..progress import track

ROWS_PER_CHUNK = 8192  # rows per read of one point (statistics, class means)
#: Bytes per feature value of a chunk: the float32 matrix the rows are standardized in, in place.
BYTES_PER_VALUE = 4
#: Bytes per value of the widest point, read before it is copied in (its rows as cached, then as float32).
BYTES_PER_READ_VALUE = 8
MIN_CHUNK_BYTES = 64 << 20


def default_memory_budget() -> int:
    """A quarter of the machine's RAM, in bytes."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 4 << 30


def resident_bytes() -> int:
    """This process's resident memory now (Linux ``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def chunk_budget(process_budget: int) -> int:
    """Bytes a chunk may take so that the process stays within ``process_budget``: what it does not already hold
    (at least ``MIN_CHUNK_BYTES``, with a warning when the process already holds the whole budget)."""
    held = resident_bytes()
    if process_budget - held < MIN_CHUNK_BYTES:
        warnings.warn(f"--memory-budget {process_budget / 2**30:.2f} GiB: this process already holds {held / 2**30:.2f} GiB; "
                      f"the heads read {MIN_CHUNK_BYTES >> 20} MiB chunks and the peak will exceed the budget. Give a larger budget.",
                      stacklevel=2)
    return max(process_budget - held, MIN_CHUNK_BYTES)


def chunk_rows(widths: list[int], *, batch_size: int, budget: int) -> int:
    """Rows per chunk so that the chunk (all ``widths`` side by side) and the read of its widest point fit ``budget``:
    a whole number of mini-batches, at least one.

    Example:
        >>> chunk_rows([100, 300], batch_size=10, budget=100 * (400 * BYTES_PER_VALUE + 300 * BYTES_PER_READ_VALUE))
        100
    """
    per_row = sum(widths) * BYTES_PER_VALUE + max(widths) * BYTES_PER_READ_VALUE
    return max(batch_size, budget // per_row // batch_size * batch_size)


@dataclass
class Rows:
    """Some rows of a feature cache: ``features[point][index]`` with labels ``targets`` (0..L-1)."""

    features: dict[str, np.ndarray]  # point -> N x C x K (memory-mapped is fine)
    index: np.ndarray
    targets: torch.Tensor


@dataclass
class Head:
    weight: torch.Tensor  # L x C x K, raw feature scale
    bias: torch.Tensor    # L, raw feature scale
    train_accuracy: float
    accuracies: dict[str, float] = field(default_factory=dict)  # evaluation set name -> accuracy


def _gather_into(out: torch.Tensor, features: np.ndarray, index: np.ndarray) -> None:
    """Copy rows ``index`` of ``features`` (flattened) into the float32 matrix ``out``, in the order of ``index``.

    From a memory-mapped cache the rows are read with ``preadv`` (sorted, so the file is read
    forward, one call per run of adjacent rows) instead of through the mapping: touching scattered
    rows of a mapping faults whole neighbourhoods of pages into the process, so its resident memory
    would grow to the size of the cache. ``out`` may be a column block of a wider matrix: the rows
    land in place, with no second copy of the chunk.
    """
    order = np.argsort(index, kind="stable")
    wanted = index[order]
    if isinstance(features, np.memmap) and features.filename:
        rows = _read_rows(features, wanted)
    else:
        rows = np.asarray(features[wanted])
    out.index_copy_(0, torch.from_numpy(order), torch.from_numpy(rows.reshape(len(wanted), -1)).float())


def _rows(features: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of ``features`` as a float32 tensor of their cached shape."""
    out = torch.empty(len(index), int(np.prod(features.shape[1:])))
    _gather_into(out, features, index)
    return out.view(len(index), *features.shape[1:])


def _read_rows(features: np.memmap, wanted: np.ndarray) -> np.ndarray:
    """Rows ``wanted`` (ascending) of a memory-mapped ``.npy``, read from its file."""
    row_bytes = int(np.prod(features.shape[1:])) * features.dtype.itemsize
    rows = np.empty((len(wanted), *features.shape[1:]), dtype=features.dtype)
    raw = rows.reshape(len(wanted), -1).view(np.uint8)
    breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
    starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(wanted)]])
    with open(features.filename, "rb", buffering=0) as f:
        for s, e in zip(starts.tolist(), ends.tolist()):
            position = features.offset + int(wanted[s]) * row_bytes
            if os.preadv(f.fileno(), [raw[s:e]], position) != (e - s) * row_bytes:
                raise OSError(f"{features.filename}: short read; the feature cache is damaged, delete it and re-measure")
    return rows


def feature_stats(features: np.ndarray, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std over ``index`` rows, accumulated in float64 chunk by chunk."""
    total = torch.zeros(features.shape[1:], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(index), ROWS_PER_CHUNK):
        x = _rows(features, index[start:start + ROWS_PER_CHUNK]).double()
        total += x.sum(0)
        total_sq += (x * x).sum(0)
    n = len(index)
    mean = total / n
    std = (total_sq / n - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.float().clamp(min=1e-6)


def class_means(features: np.ndarray, index: np.ndarray, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``mu[i]`` = mean feature over the rows of label i: ``L x C x K``."""
    sums = torch.zeros((num_classes, *features.shape[1:]), dtype=torch.float64)
    for start in range(0, len(index), ROWS_PER_CHUNK):
        x = _rows(features, index[start:start + ROWS_PER_CHUNK]).double()
        sums.index_add_(0, targets[start:start + ROWS_PER_CHUNK], x)
    counts = torch.bincount(targets, minlength=num_classes).clamp(min=1).double()
    return (sums / counts.view(-1, *([1] * (sums.ndim - 1)))).float()


def plan_groups(dims: dict[str, int], *, batch_size: int, memory_budget: int) -> list[list[str]]:
    """Points in order, grouped so that one mini-batch of a group's rows fits ``memory_budget``.

    Example:
        >>> plan_groups({"a": 100, "b": 100, "c": 100}, batch_size=10, memory_budget=2 * 100 * 10 * BYTES_PER_VALUE)
        [['a', 'b'], ['c']]
    """
    cap = memory_budget // (BYTES_PER_VALUE * batch_size)
    groups: list[list[str]] = [[]]
    width = 0
    for name, d in dims.items():
        if groups[-1] and width + d > cap:
            groups.append([])
            width = 0
        groups[-1].append(name)
        width += d
    return groups


def _standardized(rows: Rows, names: list[str], stats: dict, positions: np.ndarray | slice = slice(None)) -> torch.Tensor:
    """Rows ``rows.index[positions]`` of the points ``names``, standardized side by side: ``n x sum(C*K)``,
    filled in place one point at a time (one float32 matrix, no concatenated copy)."""
    index = rows.index[positions]
    widths = [int(np.prod(rows.features[n].shape[1:])) for n in names]
    out = torch.empty(len(index), sum(widths))
    lo = 0
    for n, d in zip(names, widths):
        block = out[:, lo:lo + d]
        _gather_into(block, rows.features[n], index)
        block.sub_(stats[n][0].flatten()).div_(stats[n][1].flatten())
        lo += d
    return out


def train_heads(
    train: Rows,
    evaluate: dict[str, Rows],
    *,
    num_classes: int,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    memory_budget: int | None = None,
    progress=None,
    description: str = "heads",
) -> dict[str, Head]:
    """Train one linear head per point on ``train`` rows and score it on every ``evaluate`` set.

    Args:
        train: the training rows (features of every point, row index, labels in 0..L-1).
        evaluate: named evaluation rows, e.g. ``{"val": ..., "test": ...}``.
        memory_budget: bytes one chunk of rows may take, read and standardized (default: a quarter
            of RAM less what the process already holds; :func:`chunk_budget`).

    Returns:
        ``{point: Head}`` with raw-scale weights ``L x C x K`` and one accuracy per evaluation set.

    Example:
        >>> feats = {"p": np.random.default_rng(0).standard_normal((40, 2, 1)).astype(np.float32)}
        >>> y = torch.tensor([0, 1] * 20); feats["p"][:, 0, 0] += 3 * y.numpy()
        >>> rows = Rows(feats, np.arange(40), y)
        >>> train_heads(rows, {"val": rows}, num_classes=2, epochs=20, lr=0.1, batch_size=8)["p"].accuracies["val"] > 0.9
        True
    """
    names = list(train.features)
    stats = {n: feature_stats(train.features[n], train.index) for n in names}
    dims = {n: int(np.prod(train.features[n].shape[1:])) for n in names}
    steps_per_epoch = max(1, len(train.index) // batch_size)
    used = min(len(train.index), steps_per_epoch * batch_size)
    heads: dict[str, Head] = {}
    budget = memory_budget or chunk_budget(default_memory_budget())
    for group in plan_groups(dims, batch_size=batch_size, memory_budget=budget):
        chunk = chunk_rows([dims[n] for n in group], batch_size=batch_size, budget=budget)
        offsets = np.concatenate([[0], np.cumsum([dims[n] for n in group])])
        weights = [torch.zeros(num_classes, dims[n], device=device, requires_grad=True) for n in group]
        biases = [torch.zeros(num_classes, device=device, requires_grad=True) for _ in group]
        optimizer = torch.optim.Adam(weights + biases, lr=lr)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
        g = torch.Generator().manual_seed(seed)  # every group walks the same permutations
        label = description if len(group) == len(names) else f"{description} ({group[0]}..)"
        for _ in track(progress, range(epochs), label, total=epochs):
            perm = torch.randperm(len(train.index), generator=g)[:used].numpy()
            for start in range(0, used, chunk):
                positions = perm[start:start + chunk]
                x_chunk = x = None  # a mini-batch view keeps its whole chunk alive: free it before the next is read
                x_chunk = _standardized(train, group, stats, positions).to(device)
                y_chunk = train.targets[positions].to(device)
                for b in range(0, len(positions), batch_size):
                    x, y = x_chunk[b:b + batch_size], y_chunk[b:b + batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    loss = sum(F.cross_entropy(torch.addmm(bias, x[:, lo:hi], w.t()), y)
                               for w, bias, lo, hi in zip(weights, biases, offsets[:-1], offsets[1:]))
                    loss.backward()
                    optimizer.step()
                    scheduler.step()
            x_chunk = x = None
        with torch.no_grad():
            scored = {"train": train, **evaluate}
            correct = {key: [0] * len(group) for key in scored}
            for key, rows in scored.items():
                for start in range(0, len(rows.index), chunk):
                    positions = slice(start, start + chunk)
                    x = None
                    x = _standardized(rows, group, stats, positions).to(device)
                    y = rows.targets[positions]
                    for i, (w, bias, lo, hi) in enumerate(zip(weights, biases, offsets[:-1], offsets[1:])):
                        correct[key][i] += (torch.addmm(bias, x[:, lo:hi], w.t()).argmax(1).cpu() == y).sum().item()
            for i, (n, w, bias) in enumerate(zip(group, weights, biases)):
                mean, std = stats[n][0].flatten().to(device), stats[n][1].flatten().to(device)
                w_raw = w / std  # fold the standardization back: raw-scale head, same logits
                b_raw = bias - w_raw @ mean
                acc = {key: correct[key][i] / max(1, len(rows.index)) for key, rows in scored.items()}
                heads[n] = Head(weight=w_raw.reshape(num_classes, *train.features[n].shape[1:]).cpu(), bias=b_raw.cpu(),
                                train_accuracy=acc.pop("train"), accuracies=acc)
    return {n: heads[n] for n in names}
