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


def validation_split(targets, fraction: float, *, seed: int = VALIDATION_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(rest, val)`` row indices (ascending) with ``round(fraction * n_label)`` rows of every label in ``val``.

    Raises:
        DataError: ``fraction`` outside [0, 1).
    """
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise DataError(f"--val-fraction {fraction}: use a fraction of the training split in [0, 1) (0.1 = 10 %)")
    targets = np.asarray(torch.as_tensor(targets).cpu().numpy())
    rng = np.random.default_rng(seed)
    val = []
    for label in np.unique(targets):
        rows = np.flatnonzero(targets == label)
        take = int(round(fraction * len(rows)))
        if fraction > 0 and len(rows) > 1:
            take = min(max(take, 1), len(rows) - 1)  # every label validated, none emptied from training
        val.append(rng.permutation(rows)[:take])
    val_idx = np.sort(np.concatenate(val)) if val else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(targets), dtype=bool)
    mask[val_idx] = False
    return np.flatnonzero(mask), val_idx


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


def hold_out(dataset, fraction: float, *, seed: int = VALIDATION_SEED) -> tuple[Dataset, Dataset | None]:
    """``(training rows, validation rows)`` of a training split; ``(dataset, None)`` when ``fraction`` is 0."""
    if fraction == 0:
        return dataset, None
    rest, val = validation_split(dataset.targets, fraction, seed=seed)
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
