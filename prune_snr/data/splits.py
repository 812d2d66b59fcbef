"""The validation split: a seeded, label-stratified part of the training split (METHOD.md, "Splits").

Every decision (layer allocation, truncation cut, saliency fields, search objectives, ``--pick``)
reads validation figures; the test split only grades. The split depends on the labels, the
fraction and :data:`VALIDATION_SEED` alone, so ``train``, ``measure``, ``prune`` and ``search``
all hold out the same images.

Example:
    >>> import torch
    >>> rest, val = validation_split(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), 0.5)
    >>> len(val), sorted(torch.tensor([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])[val].tolist())
    (5, [0, 0, 1, 1, 1])
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import DataError

#: One seed for the split everywhere: a model trained with ``--val-fraction F`` never saw the
#: images that ``measure`` and ``prune`` (same F) decide on.
VALIDATION_SEED = 0
DEFAULT_VAL_FRACTION = 0.1


def validation_split(
    targets, fraction: float, *, seed: int = VALIDATION_SEED, split_seed: int | None = None, pool: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, val)`` row indices (ascending) with ``round(fraction * n_label)`` rows of every label in ``val``.

    A smaller ``fraction`` gives a subset of a larger one's rows (the same seeded order per label), so a
    model trained holding out 10 % never saw the 5 % that a later run validates on.

    ``split_seed`` varies the validation split between repeated trials without touching images a model
    trained on: the rows are a ``split_seed``-seeded draw from the rows that holding out ``pool`` (the
    fraction the model's training held out; ``None``: every row, e.g. a test split) would give.

    Example:
        >>> targets = torch.tensor([0] * 10 + [1] * 10)
        >>> pool = set(validation_split(targets, 0.4)[1].tolist())
        >>> set(validation_split(targets, 0.2, split_seed=3, pool=0.4)[1].tolist()) <= pool
        True

    Raises:
        DataError: ``fraction`` outside [0, 1), or more than ``pool``.
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise DataError(f"--val-fraction {fraction}: use a fraction of the training split in [0, 1) (0.1 = 10 %)")
    if split_seed is not None and pool is not None and fraction > pool:
        raise DataError(
            f"--val-fraction {fraction} with --split-seed: the validation split is drawn from the {pool:.0%} the "
            f"model's training held out; use --val-fraction {pool / 2:g} or less"
        )
    targets = np.asarray(torch.as_tensor(targets).cpu().numpy())
    rng = np.random.default_rng(seed)
    redraw = np.random.default_rng(split_seed) if split_seed is not None else None
    val = []
    for label in np.unique(targets):
        rows = np.flatnonzero(targets == label)
        order = rng.permutation(rows)
        if redraw is not None:
            held = _take(len(rows), pool) if pool is not None else len(rows)
            order = np.concatenate([redraw.permutation(order[:held]), order[held:]])
        val.append(order[: _take(len(rows), fraction)])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(targets), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


def _take(n: int, fraction: float) -> int:
    """Rows of a label with ``n`` rows that ``fraction`` holds out: every label validated, none
    emptied from training."""
    take = int(round(fraction * n))
    if fraction > 0 and n > 1:
        take = min(max(take, 1), n - 1)
    return take


class IndexSubset(Dataset):
    """Rows ``indices`` of ``dataset``, keeping ``.classes``, ``.targets`` and ``.input_size``."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = torch.as_tensor(np.asarray(indices), dtype=torch.long)
        self.targets = torch.as_tensor(dataset.targets)[self.indices]
        self.classes = dataset.classes
        self.input_size = getattr(dataset, "input_size", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        return self.dataset[int(self.indices[i])]

    def __getitems__(self, indices: list[int]) -> list:
        """A batch at once, where the dataset fetches batches (:meth:`TensorImages.__getitems__`)."""
        rows = self.indices[torch.as_tensor(indices, dtype=torch.long)].tolist()
        fetch = getattr(self.dataset, "__getitems__", None)
        return fetch(rows) if fetch else [self.dataset[i] for i in rows]


def hold_out(
    dataset, fraction: float, *, split_seed: int | None = None, pool: float | None = None
) -> tuple[Dataset, Dataset | None]:
    """``(training rows, validation rows)`` of a split; ``(dataset, None)`` when ``fraction`` is 0
    (``split_seed``, ``pool``: see :func:`validation_split`)."""
    if fraction == 0:
        return dataset, None
    rest, val = validation_split(dataset.targets, fraction, split_seed=split_seed, pool=pool)
    return IndexSubset(dataset, rest), IndexSubset(dataset, val)


def per_class_subset(targets, rows, per_class: int, *, seed: int) -> np.ndarray:
    """At most ``per_class`` of ``rows`` (ascending) for every label: a seeded, label-stratified draw.

    ``measure --train-per-class`` reads only these training images; the validation rows are
    carved first (from all of the training split) and are never among ``rows``.

    Example:
        >>> per_class_subset([0, 0, 0, 1, 1, 2], np.arange(6), 2, seed=0).tolist()
        [0, 2, 3, 4, 5]
    """
    if not (isinstance(per_class, int) and not isinstance(per_class, bool) and per_class >= 1):
        raise DataError(f"--train-per-class {per_class}: give 1 or more images per label")
    targets = np.asarray(torch.as_tensor(targets).cpu().numpy())
    rows = np.asarray(rows, dtype=np.int64)
    rng = np.random.default_rng(seed)
    labels = targets[rows]
    kept = [rng.permutation(rows[labels == label])[:per_class] for label in np.unique(labels)]
    return np.sort(np.concatenate(kept)) if kept else np.zeros(0, dtype=np.int64)
