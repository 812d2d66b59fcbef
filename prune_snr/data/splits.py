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
