"""Label subsets: keep K of the labels and renumber them 0..K-1 (the label sweep needs it)."""

from __future__ import annotations

from typing import Sequence

import torch
from torch.utils.data import Dataset

from ..errors import DataError


def choose_labels(num_classes: int, labels: int | Sequence[int], seed: int | None = None) -> list[int]:
    """``K`` -> the first K labels, or K labels drawn with ``seed``; a list is used as given."""
    if isinstance(labels, int):
        if not 2 <= labels <= num_classes:
            raise DataError(f"{labels} labels asked for: this dataset has {num_classes}; give 2 to {num_classes}")
        if seed is None:
            return list(range(labels))
        g = torch.Generator().manual_seed(seed)
        return sorted(torch.randperm(num_classes, generator=g)[:labels].tolist())
    chosen = list(labels)
    bad = [c for c in chosen if not 0 <= c < num_classes]
    if bad or len(set(chosen)) != len(chosen) or len(chosen) < 2:
        raise DataError(f"labels {chosen}: give 2 or more distinct labels in 0..{num_classes - 1}")
    return chosen


class LabelSubset(Dataset):
    """The samples of ``dataset`` whose label is in ``labels``, relabelled by position in ``labels``."""

    def __init__(self, dataset, labels: Sequence[int]):
        targets = torch.as_tensor(dataset.targets)
        remap = torch.full((int(targets.max()) + 1,), -1, dtype=torch.long)
        remap[torch.tensor(labels)] = torch.arange(len(labels))
        keep = (remap[targets] >= 0).nonzero().squeeze(1)
        self.dataset, self.indices, self.labels = dataset, keep, list(labels)
        self.targets = remap[targets[keep]]
        self.classes = [dataset.classes[c] for c in labels]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i):
        x, _ = self.dataset[int(self.indices[i])]
        return x, int(self.targets[i])
