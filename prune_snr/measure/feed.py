"""The heads' data feed: rows of the feature cache read, standardized, and walked in mini-batches.

A group of heads either holds its standardized training rows in memory (read once, in the cache's
order, and placed at their positions in one seeded shuffle, so that a mini-batch is a slice) or
streams them: every epoch reads its mini-batches chunk by chunk from the cache. Reads go through
``preadv`` in file order rather than through the memory mapping (see :func:`_gather_into`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

ROWS_PER_CHUNK = 8192  # rows per read of one point (statistics, class means)
#: Bytes per feature value of a chunk: the float32 matrix the rows are standardized in, in place.
BYTES_PER_VALUE = 4
#: Bytes per value of the widest point, read before it is copied in (its rows as cached, then as float32).
BYTES_PER_READ_VALUE = 8


@dataclass
class Rows:
    """Some rows of a feature cache: ``features[point][index]`` with labels ``targets`` (0..L-1)."""

    features: dict[str, np.ndarray]  # point -> N x C x K (memory-mapped is fine)
    index: np.ndarray
    targets: torch.Tensor


def _gather_into(out: torch.Tensor, features: np.ndarray, index: np.ndarray) -> None:
    """Copy rows ``index`` of ``features`` (flattened) into the float32 matrix ``out``, in the order of ``index``.

    From a memory-mapped cache the rows are read with ``preadv`` (sorted, so the file is read
    forward, one call per run of adjacent rows) instead of through the mapping: touching scattered
    rows of a mapping faults whole neighbourhoods of pages into the process, so its resident memory
    would grow to the size of the cache. ``out`` may be a column block of a wider matrix: the rows
    land in place, with no second copy of the chunk.
    """
    if not len(index):
        return
    mapped = isinstance(features, np.memmap) and features.filename
    if (
        mapped
        and features.dtype == np.float32
        and out.dtype == torch.float32
        and out.is_contiguous()
        and bool(np.all(np.diff(index) > 0))
    ):
        _read_rows(features, index, into=out.numpy())  # already in file order: straight into place
        return
    order = np.argsort(index, kind="stable")
    wanted = index[order]
    if mapped:
        rows = _read_rows(features, wanted)
    else:
        rows = np.asarray(features[wanted])
    out.index_copy_(0, torch.from_numpy(order), torch.from_numpy(rows.reshape(len(wanted), -1)).float())


def _rows(features: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """Rows ``index`` of ``features`` as a float32 tensor of their cached shape."""
    out = torch.empty(len(index), int(np.prod(features.shape[1:])))
    _gather_into(out, features, index)
    return out.view(len(index), *features.shape[1:])


def _read_rows(features: np.memmap, wanted: np.ndarray, into: np.ndarray | None = None) -> np.ndarray:
    """Rows ``wanted`` (ascending) of a memory-mapped ``.npy``, read from its file (into ``into``, a contiguous array of
    the cache's dtype with one row per wanted row, when given)."""
    row_bytes = int(np.prod(features.shape[1:])) * features.dtype.itemsize
    rows = np.empty((len(wanted), *features.shape[1:]), dtype=features.dtype) if into is None else into
    raw = rows.reshape(len(wanted), -1).view(np.uint8)
    breaks = np.flatnonzero(np.diff(wanted) != 1) + 1
    starts, ends = np.concatenate([[0], breaks]), np.concatenate([breaks, [len(wanted)]])
    with open(features.filename, "rb", buffering=0) as f:
        for s, e in zip(starts.tolist(), ends.tolist()):
            position = features.offset + int(wanted[s]) * row_bytes
            if os.preadv(f.fileno(), [raw[s:e]], position) != (e - s) * row_bytes:
                raise OSError(
                    f"{features.filename}: short read; the feature cache is damaged, delete it and re-measure"
                )
    return rows


class Moments:
    """Per-feature mean and variance over chunks of rows: each chunk's in float32 (two passes: its mean, then the
    squared deviations from it), merged in float64 (Chan et al.'s pairwise update), so no chunk is copied to float64."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, None, None

    def add(self, x: torch.Tensor) -> None:
        mean = x.mean(0)
        k, mean, m2 = len(x), mean.double(), (x - mean).square_().sum(0).double()
        if self.mean is None:
            self.n, self.mean, self.m2 = k, mean, m2
            return
        n = self.n + k
        delta = mean - self.mean
        self.mean += delta * (k / n)
        self.m2 += m2 + delta * delta * (self.n * k / n)
        self.n = n

    def finish(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean.float(), (self.m2 / self.n).sqrt().float().clamp(min=1e-6)


def feature_stats(features: np.ndarray, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std over ``index`` rows, read chunk by chunk."""
    moments = Moments()
    for start in range(0, len(index), ROWS_PER_CHUNK):
        moments.add(_rows(features, index[start : start + ROWS_PER_CHUNK]))
    return moments.finish()


def class_means(features: np.ndarray, index: np.ndarray, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``mu[i]`` = mean feature over the rows of label i: ``L x C x K``."""
    sums = torch.zeros((num_classes, *features.shape[1:]), dtype=torch.float64)
    for start in range(0, len(index), ROWS_PER_CHUNK):
        x = _rows(features, index[start : start + ROWS_PER_CHUNK]).double()
        sums.index_add_(0, targets[start : start + ROWS_PER_CHUNK], x)
    counts = torch.bincount(targets, minlength=num_classes).clamp(min=1).double()
    return (sums / counts.view(-1, *([1] * (sums.ndim - 1)))).float()


def _width_classes(names: list[str], dims: dict[str, int]) -> list[list[str]]:
    """The points of a group by feature width: the heads of one class train as one batched matmul."""
    classes: dict[int, list[str]] = {}
    for n in names:
        classes.setdefault(dims[n], []).append(n)
    return list(classes.values())


def _standardized(
    rows: Rows, classes: list[list[str]], stats: dict, positions: np.ndarray | slice = slice(None)
) -> list[torch.Tensor]:
    """Rows ``rows.index[positions]`` of the points of ``classes``, standardized with ``stats``: one ``k x n x d``
    float32 tensor per width class, filled in place point by point (read ``ROWS_PER_CHUNK`` rows at a time)."""
    index = rows.index[positions]
    out = []
    for names in classes:
        x = torch.empty(len(names), len(index), int(np.prod(rows.features[names[0]].shape[1:])))
        for j, n in enumerate(names):
            for s in range(0, len(index), ROWS_PER_CHUNK):
                _gather_into(x[j, s : s + ROWS_PER_CHUNK], rows.features[n], index[s : s + ROWS_PER_CHUNK])
            x[j].sub_(stats[n][0].flatten()).div_(stats[n][1].flatten())
        out.append(x)
    return out


def _held_shuffled(
    ordered: Rows, classes: list[list[str]], shuffle: torch.Tensor, dtypes: list[torch.dtype]
) -> tuple[list[torch.Tensor], dict]:
    """The rows of ``ordered`` standardized on their own statistics (returned; the same chunks, hence the same figures,
    as :func:`feature_stats`), each row placed at its position in the shuffle (row ``k`` is ``ordered``'s row
    ``shuffle[k]``): read in the cache's order, a chunk at a time, and copied into place, so no second copy of a point's
    rows is ever made. Each class is then stored in its ``dtypes`` entry (a lower precision copy is made while its
    float32 rows still exist: one class at a time)."""
    n = len(ordered.index)
    place = torch.empty_like(shuffle)
    place[shuffle] = torch.arange(n)
    stats, out = {}, []
    for names, dtype in zip(classes, dtypes):
        x = torch.empty(len(names), n, int(np.prod(ordered.features[names[0]].shape[1:])))
        for j, name in enumerate(names):
            moments = Moments()
            for s in range(0, n, ROWS_PER_CHUNK):
                chunk = _rows(ordered.features[name], ordered.index[s : s + ROWS_PER_CHUNK]).flatten(1)
                moments.add(chunk)
                x[j].index_copy_(0, place[s : s + ROWS_PER_CHUNK], chunk)
            stats[name] = moments.finish()
            x[j].sub_(stats[name][0].flatten()).div_(stats[name][1].flatten())
        out.append(x.to(dtype))
        x = None
    return out, stats


class _Source:
    """The standardized rows of one set for one group of heads, in ``rows.index`` order: held in memory
    (``held``, read once) or read from the cache chunk by chunk every time they are walked."""

    def __init__(
        self,
        rows: Rows,
        classes,
        stats,
        *,
        chunk: int,
        device,
        held: list[torch.Tensor] | None = None,
        dtypes: list[torch.dtype] | None = None,
    ):
        self.rows, self.classes, self.stats, self.chunk, self.device, self.held = (
            rows,
            classes,
            stats,
            chunk,
            device,
            held,
        )
        self.dtypes = dtypes or [torch.float32] * len(classes)

    def chunks(self):
        n = len(self.rows.index)
        step = min(self.chunk, ROWS_PER_CHUNK) if self.held is not None else self.chunk
        for start in range(0, n, step):
            if self.held is not None:
                xs = [x[:, start : start + step] for x in self.held]
            else:
                xs = None  # free the previous chunk before the next is read
                xs = _standardized(self.rows, self.classes, self.stats, slice(start, start + step))
            yield (
                [x.to(self.device, d) for x, d in zip(xs, self.dtypes)],
                self.rows.targets[start : start + step].to(self.device),
            )


def device_budget(device: torch.device) -> int | None:
    """Bytes of a GPU's memory the heads' rows may take at once: half of what is free (the heads' weights, their
    gradients and the matmuls' workspace take the rest); None on the CPU, where the memory budget decides."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()  # what the caching allocator still holds from the feature pass is free for the heads
    free, _ = torch.cuda.mem_get_info(device)
    return free // 2


def _fits_device(tensors_bytes: int, device: torch.device) -> bool:
    budget = device_budget(device)
    return budget is None or tensors_bytes < budget


def _gathered(x: torch.Tensor, spans: list[tuple[int, int]], *, pin: bool) -> torch.Tensor:
    """The mini-batches ``spans`` of a ``k x n x d`` tensor side by side, contiguous (and page-locked with ``pin``):
    one copy per chunk to the GPU, without a staging copy, rather than one per mini-batch."""
    out = torch.empty(x.shape[0], sum(end - start for start, end in spans), x.shape[2], dtype=x.dtype, pin_memory=pin)
    offset = 0
    for start, end in spans:  # a slice copy per span: several times faster than index_select over dim 1
        out[:, offset : offset + end - start].copy_(x[:, start:end])
        offset += end - start
    return out


def release_pinned(device: torch.device) -> None:
    """Give the page-locked chunks of a group back to the system: PyTorch keeps freed ones until the process ends."""
    if device.type == "cuda":
        torch.accelerator.empty_host_cache()


def chunk_rows(widths: list[int], *, batch_size: int, budget: int) -> int:
    """Rows per chunk so that the chunk (all ``widths`` side by side) and the read of its widest point fit ``budget``:
    a whole number of mini-batches, at least one.

    Example:
        >>> chunk_rows([100, 300], batch_size=10, budget=100 * (400 * BYTES_PER_VALUE + 300 * BYTES_PER_READ_VALUE))
        100
    """
    per_row = sum(widths) * BYTES_PER_VALUE + max(widths) * BYTES_PER_READ_VALUE
    return max(batch_size, budget // per_row // batch_size * batch_size)


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


def plan_memory(dims: dict[str, int], *, rows: int, budget: int) -> tuple[list[list[str]], list[str]]:
    """Points in order, grouped so that a group's ``rows`` standardized rows stay in memory within ``budget``
    (beside one evaluation chunk and one read of its widest point), and the points too wide to fit alone.

    Example:
        >>> plan_memory({"a": 10, "b": 10, "c": 10**6}, rows=1000, budget=(1000 + ROWS_PER_CHUNK) * 20 * BYTES_PER_VALUE
        ...             + ROWS_PER_CHUNK * 10 * BYTES_PER_READ_VALUE)
        ([['a', 'b']], ['c'])
    """

    def cost(widths):
        return (rows + ROWS_PER_CHUNK) * sum(widths) * BYTES_PER_VALUE + ROWS_PER_CHUNK * max(
            widths
        ) * BYTES_PER_READ_VALUE

    groups: list[list[str]] = []
    streamed: list[str] = []
    for name, d in dims.items():
        if cost([d]) > budget:
            streamed.append(name)
        elif groups and cost([dims[n] for n in groups[-1]] + [d]) <= budget:
            groups[-1].append(name)
        else:
            groups.append([name])
    return groups, streamed


class GroupFeed:
    """The rows one group of heads trains and is scored on: its statistics, its mini-batches, its scoring sources."""

    def __init__(
        self,
        group: list[str],
        dims: dict[str, int],
        *,
        ordered: Rows,
        train: Rows,
        shuffle: torch.Tensor,
        held: bool,
        evaluate: dict[str, Rows],
        stop: tuple[str, Rows] | None,
        num_classes: int,
        dtype: torch.dtype,
        low_precision_min: int,
        batch_size: int,
        budget: int,
        device: torch.device,
    ):
        self.classes = _width_classes(group, dims)
        self.order = [n for c in self.classes for n in c]  # the heads in width-class order
        self.layout, i = [], 0
        for c in self.classes:
            self.layout.append(list(range(i, i + len(c))))
            i += len(c)
        self.row_dtypes = dtypes = [
            dtype if dims[c[0]] * num_classes >= low_precision_min else torch.float32 for c in self.classes
        ]
        self.train, self.held, self.batch_size, self.device = train, held, batch_size, device
        # sliced: mini-batches are views of rows on the device; pin: held rows the GPU cannot take go through pinned
        # chunks (streamed chunks stay pageable: sized by the budget, read every epoch)
        self.sliced, self.pin = False, device.type == "cuda" and held
        train_x = stop_x = None
        if held:
            train_x, self.stats = _held_shuffled(ordered, self.classes, shuffle, dtypes)
            self.sliced = _fits_device(sum(x.numel() * x.element_size() for x in train_x), device)
            train_x = [x.to(device) for x in train_x] if self.sliced else train_x
            stop_x = _standardized(stop[1], self.classes, self.stats) if stop is not None else None
        else:
            self.stats = {n: feature_stats(ordered.features[n], ordered.index) for n in group}
        # chunks sized by what the GPU has left once held rows are on it, as well as by the memory budget
        on_gpu = device_budget(device)
        self.chunk = chunk = chunk_rows(
            [dims[n] for n in group], batch_size=batch_size, budget=budget if on_gpu is None else min(budget, on_gpu)
        )
        self.train_x, self.train_y = train_x, train.targets.to(device)
        # the training accuracy is scored in the precision the heads trained in, held or streamed
        self.sources = {
            key: _Source(
                rows,
                self.classes,
                self.stats,
                chunk=chunk,
                device=device,
                held=train_x if key == "train" else None,
                dtypes=dtypes if key == "train" else None,
            )
            for key, rows in {"train": train if held else ordered, **evaluate}.items()
        }  # streamed: scored in file order
        if stop is not None:
            self.sources[stop[0]] = _Source(stop[1], self.classes, self.stats, chunk=chunk, device=device, held=stop_x)

    def minibatches(self, visit: list[tuple[int, int]]):
        """``(rows per width class, labels)`` of each mini-batch ``(start, end)`` of the shuffle, in ``visit`` order."""
        if self.sliced:
            for start, end in visit:
                yield [x[:, start:end] for x in self.train_x], self.train_y[start:end]
            return
        # a gathered chunk stays within the ROWS_PER_CHUNK rows plan_memory reserves (or one mini-batch), at half of
        # them because a page-locked block may be rounded up to twice its size
        rows_per_chunk = min(self.chunk, ROWS_PER_CHUNK // 2) if self.held else self.chunk
        per_chunk = max(1, rows_per_chunk // self.batch_size)
        for c in range(0, len(visit), per_chunk):
            spans = visit[c : c + per_chunk]
            positions = np.concatenate([np.arange(start, end) for start, end in spans])
            x_chunk = None  # free the previous chunk before the next is read
            if self.held:  # held in host memory, the GPU too small for them: copied a chunk at a time
                rows = [_gathered(x, spans, pin=self.pin) for x in self.train_x]
            else:
                rows = _standardized(self.train, self.classes, self.stats, positions)
            x_chunk = [x.to(self.device, d, non_blocking=self.pin) for x, d in zip(rows, self.row_dtypes)]
            rows = None
            y_chunk = self.train.targets[positions].to(self.device)
            offset = 0
            for start, end in spans:
                yield [x[:, offset : offset + end - start] for x in x_chunk], y_chunk[offset : offset + end - start]
                offset += end - start
