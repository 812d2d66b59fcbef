"""Phase 2, step 2: linear heads for every point, trained on cached features.

Heads see standardized features (better conditioned, Adam converges in a few epochs) and are
folded back to the raw feature scale afterwards, ``W_raw = W / sigma``, because the field
matrices must be computed on raw, un-centered class means (METHOD.md).

At memory speed where the budget allows: points are grouped so that a group's standardized
training (and early-stopping) rows fit ``memory_budget``; such a group reads its rows from the
cache once, computes its statistics on them, standardizes them in place and trains every epoch
from memory; a point too wide to be held streams its mini-batches from the cache every epoch
(:mod:`prune_snr.measure.feed` reads, standardizes, holds or streams the rows). The training rows
are shuffled once into fixed mini-batches, and each epoch visits them in a new random order.
Each mini-batch updates all heads of a group at once (one ``baddbmm`` and one ``bmm`` per
feature width, one Adam). Heads are independent (own loss, element-wise Adam) and every group
walks the same mini-batches in the same order, so grouping, chunking and memory vs stream change
nothing in the result beyond float rounding: it equals training all heads together on one in-memory matrix.
Early stopping (``patience``) reads only the validation rows; see :func:`train_heads`.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import numpy as np
import torch

from .. import choices
from ..config import spelling
from ..errors import DataError
from ..progress import track
from .feed import (
    GroupFeed,
    Rows,
    _Source,
    plan_groups,
    plan_memory,
    release_pinned,
)
from .head_math import _cross_entropy, _scores, _set_gradients, _softmax  # noqa: F401  (named here too)

MIN_CHUNK_BYTES = 64 << 20
#: Early stopping: a validation loss counts as an improvement when it is lower than the last one that
#: counted by this fraction.
REL_IMPROVEMENT = 1e-3
#: A lower-precision ``dtype`` applies to a width class whose heads have at least this many weights (labels x
#: features) each: below it the casts cost more than the matmuls save (2 AMX cores, 1024 rows per step: 10 labels
#: x 512 features 0.75x the float32 step, 10 x 256 1.08x, 100 x 128 0.87x, 100 x 64 1.07x, 100 x 2048 0.30x).
LOW_PRECISION_MIN_WEIGHTS = 4096


class EarlyStopping:
    """Patience on a validation loss: :meth:`step` says whether the loss is the best so far (keep these
    weights) and whether to stop (``patience`` epochs without improving by more than ``REL_IMPROVEMENT`` of
    the loss at the last such improvement, and at least ``min_epochs`` epochs trained)."""

    def __init__(self, patience: int, min_epochs: int):
        self.patience, self.min_epochs = patience, min_epochs
        self.best_loss, self.best_epoch = float("inf"), 0
        self.reference, self.stale = float("inf"), 0  # the loss at the last improvement by more than REL_IMPROVEMENT

    def step(self, loss: float, epoch: int) -> tuple[bool, bool]:
        """``(best so far, stop)`` after ``epoch`` ended with ``loss``."""
        best = loss < self.best_loss
        if best:
            self.best_loss, self.best_epoch = loss, epoch
        if loss < self.reference * (1 - REL_IMPROVEMENT):
            self.reference, self.stale = loss, 0
        else:
            self.stale += 1
        return best, epoch >= self.min_epochs and self.stale >= self.patience


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
        spelling.warn(
            f"--memory-budget {process_budget / 2**30:.2f} GiB: this process already holds "
            f"{held / 2**30:.2f} GiB; the heads read {MIN_CHUNK_BYTES >> 20} MiB chunks and the peak will "
            "exceed the budget. Give a larger budget.",
            stacklevel=2,
        )
    return max(process_budget - held, MIN_CHUNK_BYTES)


@dataclass
class Head:
    weight: torch.Tensor  # L x C x K, raw feature scale
    bias: torch.Tensor  # L, raw feature scale
    train_accuracy: float
    accuracies: dict[str, float] = field(default_factory=dict)  # evaluation set name -> accuracy
    epochs_used: int = 0  # epochs it trained: the cap, unless early stopping stopped it
    best_epoch: int = 0  # the epoch whose weights it keeps (the last one without early stopping)
    stop_loss: float | None = None  # its lowest mean cross-entropy on the early-stopping rows


def _head_optimizer(name: str, params: list[torch.Tensor], *, lr: float, steps: int, device: torch.device):
    """``(optimizer, schedule stepped per mini-batch, schedule stepped per epoch)`` (either schedule may be None)."""
    choices.HEAD_OPTIMIZERS.check(name)
    if name == "sgd":  # the paper authors' heads
        sgd = torch.optim.SGD(params, lr=lr, momentum=choices.SGD_MOMENTUM, weight_decay=choices.SGD_WEIGHT_DECAY)
        return sgd, None, torch.optim.lr_scheduler.ExponentialLR(sgd, gamma=choices.SGD_DECAY)
    # one fused kernel per step: 3-5x faster than foreach on CPU for these shapes (the same update rule)
    adam = torch.optim.Adam(params, lr=lr, **({"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}))
    return adam, torch.optim.lr_scheduler.CosineAnnealingLR(adam, T_max=steps), None


def train_heads(
    train: Rows,
    evaluate: dict[str, Rows],
    *,
    num_classes: int,
    epochs: int = choices.HEAD_EPOCHS,
    lr: float = choices.HEAD_LR,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    memory_budget: int | None = None,
    progress=None,
    description: str = "heads",
    patience: int = 0,
    min_epochs: int = choices.HEAD_MIN_EPOCHS,
    stop_on: str = "val",
    in_memory: bool | None = None,
    dtype: torch.dtype = torch.float32,
    optimizer_name: str = choices.HEAD_OPTIMIZERS.default,
) -> dict[str, Head]:
    """Train one linear head per point on ``train`` rows and score it on every ``evaluate`` set.

    A group of points whose standardized training rows (and ``stop_on`` rows) fit ``memory_budget`` is read and
    standardized once and trains from memory; wider points stream their rows from the cache every epoch. Either
    way each mini-batch updates all heads of a group at once: one batched matmul per feature width, one
    cross-entropy over the stacked logits, one Adam over all heads (heads stay independent: own loss terms,
    element-wise Adam), so the result is the same, up to float rounding, however the points are grouped.

    Early stopping (``patience > 0`` and an ``evaluate[stop_on]`` set): after every epoch each head's mean
    cross-entropy on the ``stop_on`` rows (only those; never a test set) is computed; a head stops updating once
    ``patience`` epochs passed without its loss improving by more than ``REL_IMPROVEMENT`` of it (not before
    ``min_epochs`` epochs), and keeps the weights of its lowest ``stop_on`` loss. ``epochs`` is the cap; a group
    ends when all its heads stopped. Without a ``stop_on`` set, or with ``patience=0``, every head trains
    ``epochs`` epochs and keeps its last weights (the fixed-epoch behaviour). The cosine schedule always spans
    the cap.

    Args:
        train: the training rows (features of every point, row index, labels in 0..L-1).
        evaluate: named evaluation rows, e.g. ``{"val": ..., "test": ...}``.
        memory_budget: bytes the rows held or read at once may take (default: a quarter of RAM less what the
            process already holds; :func:`chunk_budget`).
        patience, min_epochs, stop_on: early stopping (above).
        in_memory: ``None`` decides by the budget; ``False`` streams every group; ``True`` holds every point.
        dtype: precision of the training rows and of the two matmuls of every step (``torch.bfloat16``: each matmul 3-4x
            faster on an AMX CPU; slower where the hardware has no bfloat16 matmuls), for the points whose heads
            have at least ``LOW_PRECISION_MIN_WEIGHTS`` weights (smaller ones stay float32). Weights, Adam, softmax,
            the early-stopping loss and the accuracies of the ``evaluate`` sets stay float32 (the training
            accuracy is scored on the rows as trained on; the forward matmul's logits are rounded to ``dtype``).

    Returns:
        ``{point: Head}`` with raw-scale weights ``L x C x K``, one accuracy per evaluation set and the epochs
        each head trained (``epochs_used``) and whose weights it kept (``best_epoch``).

    Example:
        >>> feats = {"p": np.random.default_rng(0).standard_normal((40, 2, 1)).astype(np.float32)}
        >>> y = torch.tensor([0, 1] * 20); feats["p"][:, 0, 0] += 3 * y.numpy()
        >>> rows = Rows(feats, np.arange(40), y)
        >>> train_heads(
        ...     rows, {"val": rows}, num_classes=2, epochs=20, lr=0.1, batch_size=8
        ... )["p"].accuracies["val"] > 0.9
        True
    """
    names = list(train.features)
    dims = {n: int(np.prod(train.features[n].shape[1:])) for n in names}
    if not len(train.index):
        raise DataError("no training rows for the heads: every label of the measurement needs training images")
    ordered = train
    train, shuffle, batches = _shuffled_batches(train, seed=seed, batch_size=batch_size)
    stop = _stop_set(evaluate, stop_on=stop_on, patience=patience)
    optimizer = functools.partial(_head_optimizer, optimizer_name, lr=lr, steps=epochs * len(batches), device=device)
    stopper = functools.partial(EarlyStopping, patience, min_epochs)
    budget = memory_budget or chunk_budget(default_memory_budget())
    rows = len(train.index) + (len(stop[1].index) if stop else 0)  # what a group held in memory holds of each point
    heads: dict[str, Head] = {}
    for group, held in _plan(dims, rows=rows, budget=budget, in_memory=in_memory, batch_size=batch_size):
        feed = trainer = None  # the previous group's rows go before these are read
        feed = GroupFeed(
            group,
            dims,
            ordered=ordered,
            train=train,
            shuffle=shuffle,
            held=held,
            evaluate=evaluate,
            stop=stop,
            num_classes=num_classes,
            dtype=dtype,
            low_precision_min=LOW_PRECISION_MIN_WEIGHTS,
            batch_size=batch_size,
            budget=budget,
            device=device,
        )
        trainer = _GroupTrainer(
            feed, dims, num_classes=num_classes, optimizer=optimizer, stopper=stopper, epochs=epochs, device=device
        )
        label = description if len(group) == len(names) else f"{description} ({group[0]}..)"
        _train_epochs(trainer, feed, batches, epochs=epochs, seed=seed, stop=stop, progress=progress, label=label)
        heads.update(trainer.heads(feed, {"train": train, **evaluate}, stopped=stop is not None, shapes=train.features))
        release_pinned(device)
    return {n: heads[n] for n in names}


def _shuffled_batches(train: Rows, *, seed: int, batch_size: int) -> tuple[Rows, torch.Tensor, list[tuple[int, int]]]:
    """``(the training rows in one seeded shuffle, that shuffle, its mini-batches as (start, end) positions)``.

    The mini-batches are contiguous runs of at most ``batch_size`` shuffled rows and use every row; held rows are
    read in the cache's order (long runs of adjacent rows) and shuffled in memory.
    """
    shuffle = torch.randperm(len(train.index), generator=torch.Generator().manual_seed(seed))
    train = Rows(train.features, train.index[shuffle.numpy()], train.targets[shuffle])
    batches = [
        (int(b[0]), int(b[-1]) + 1)
        for b in torch.arange(len(train.index)).tensor_split(-(-len(train.index) // batch_size))
        if len(b)
    ]
    return train, shuffle, batches


def _stop_set(evaluate: dict[str, Rows], *, stop_on: str, patience: int) -> tuple[str, Rows] | None:
    """``(name, rows)`` of the early-stopping set; None where no head stops early (``patience`` 0, or no such rows)."""
    stop_rows = evaluate.get(stop_on) if patience > 0 else None
    return (stop_on, stop_rows) if stop_rows is not None and len(stop_rows.index) else None


def _train_epochs(
    trainer: _GroupTrainer,
    feed: GroupFeed,
    batches: list[tuple[int, int]],
    *,
    epochs: int,
    seed: int,
    stop: tuple[str, Rows] | None,
    progress,
    label: str,
) -> None:
    """Train one group's heads for at most ``epochs`` epochs, each visiting the mini-batches in a new seeded order;
    an epoch left with no active head trains nothing."""
    g = torch.Generator().manual_seed(seed)  # every group visits the mini-batches in the same orders
    for epoch in track(progress, range(1, epochs + 1), label, total=epochs):
        if not any(trainer.active):
            continue
        for xs, y in feed.minibatches([batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]):
            trainer.step(xs, y)
            del xs, y  # hold none of this chunk while the feed reads the next (and none of the group once it ends)
        trainer.end_epoch(epoch, feed.sources[stop[0]] if stop else None, len(stop[1].index) if stop else 0)


def _plan(
    dims: dict[str, int], *, rows: int, budget: int, in_memory: bool | None, batch_size: int
) -> list[tuple[list[str], bool]]:
    """``(group, held)`` in training order: groups held in memory within ``budget`` first, then the streamed ones."""
    names = list(dims)
    if in_memory is None:
        memory_groups, streamed = plan_memory(dims, rows=rows, budget=budget)
    else:
        memory_groups, streamed = ([names], []) if in_memory else ([], names)
    plan = [(g, True) for g in memory_groups]
    return plan + [
        (g, False)
        for g in plan_groups({n: dims[n] for n in streamed}, batch_size=batch_size, memory_budget=budget)
        if streamed
    ]


class _GroupTrainer:
    """The heads of one group: their weights, their optimiser and schedules, and each head's early stopping."""

    def __init__(
        self,
        feed: GroupFeed,
        dims: dict[str, int],
        *,
        num_classes: int,
        optimizer,
        stopper,
        epochs: int,
        device: torch.device,
    ):
        """``optimizer(params)`` gives ``(optimizer, per-step schedule, per-epoch schedule)`` (:func:`_head_optimizer`);
        ``stopper()`` one head's :class:`EarlyStopping`."""
        k, self.layout, self.epochs, self.num_classes = len(feed.order), feed.layout, epochs, num_classes
        self.weights = [torch.zeros(num_classes, dims[n], device=device) for n in feed.order]
        self.biases = [torch.zeros(num_classes, device=device) for _ in feed.order]
        self.optimizer, self.scheduler, self.per_epoch = optimizer(self.weights + self.biases)
        self.active, self.epochs_used = [True] * k, [epochs] * k
        self.stoppers = [stopper() for _ in range(k)]
        self.best = [None] * k

    def step(self, xs: list[torch.Tensor], y: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        _set_gradients(xs, y, self.layout, self.active, self.weights, self.biases)
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()

    def end_epoch(self, epoch: int, stop_source: _Source | None, stop_count: int) -> None:
        """Step the per-epoch schedule; score the early-stopping rows, keep each head's best weights, stop the stale."""
        if self.per_epoch is not None:
            self.per_epoch.step()
        if stop_source is None:
            return
        losses = (
            _scores(stop_source, self.layout, self.active, self.weights, self.biases, len(self.weights))[0] / stop_count
        )
        for i in range(len(self.weights)):
            if not self.active[i]:
                continue
            improved, stop = self.stoppers[i].step(losses[i].item(), epoch)
            if improved:
                self.best[i] = (self.weights[i].detach().clone(), self.biases[i].detach().clone())
            if stop:
                self.active[i], self.epochs_used[i] = False, epoch

    def heads(self, feed: GroupFeed, rows_of: dict[str, Rows], *, stopped: bool, shapes: dict) -> dict[str, Head]:
        """The trained heads (each with its best weights under early stopping), scored on every set and folded back to
        the raw feature scale: ``W_raw = W / sigma``, same logits."""
        if stopped:
            with torch.no_grad():
                for i, kept in enumerate(self.best):
                    if kept is not None:
                        self.weights[i].copy_(kept[0])
                        self.biases[i].copy_(kept[1])
        everyone = [True] * len(self.weights)
        correct = {
            key: _scores(feed.sources[key], self.layout, everyone, self.weights, self.biases, len(self.weights))[1]
            for key in rows_of
        }
        heads = {}
        for i, n in enumerate(feed.order):
            mean, std = feed.stats[n][0].flatten().to(feed.device), feed.stats[n][1].flatten().to(feed.device)
            w_raw = self.weights[i].detach() / std
            b_raw = self.biases[i].detach() - w_raw @ mean
            acc = {key: correct[key][i].item() / max(1, len(rows_of[key].index)) for key in correct}
            heads[n] = Head(
                weight=w_raw.reshape(self.num_classes, *shapes[n].shape[1:]).cpu(),
                bias=b_raw.cpu(),
                train_accuracy=acc.pop("train"),
                accuracies=acc,
                epochs_used=self.epochs_used[i],
                best_epoch=self.stoppers[i].best_epoch if stopped else self.epochs,
                stop_loss=self.stoppers[i].best_loss if stopped else None,
            )
        return heads
