"""The user's own data: any ``Dataset``, or a ``DataLoader`` yielding ``(images, labels)``, as the stages read it.

The stages read a dataset's ``targets`` (to carve the validation split and stratify) and its label
count, and build their own loaders (batch size, workers, order); so a ``DataLoader`` is taken for
its ``dataset``. Labels are read from ``targets`` or a ``TensorDataset``'s second tensor where the
dataset has them, else once, item by item.

Example:
    >>> from torch.utils.data import TensorDataset
    >>> data = user_dataset(
    ...     TensorDataset(torch.zeros(4, 1, 8, 8), torch.tensor([0, 1, 2, 1])), num_classes=3, role="train"
    ... )
    >>> data.targets.tolist(), data.classes, data.image_shape
    ([0, 1, 2, 1], ['0', '1', '2'], (1, 8, 8))
    >>> user_dataset(TensorDataset(torch.zeros(2, 8, 8), torch.tensor([0, 1])), num_classes=3, role="train")
    Traceback (most recent call last):
    ...
    prune_snr.errors.DataError: train=: images of shape (8, 8); give C x H x W image tensors
"""

from __future__ import annotations

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from ..errors import DataError


class UserDataset(Dataset):
    """A user's dataset with what the stages read: ``targets`` (int64), ``classes`` and ``image_shape``."""

    def __init__(self, source, targets: torch.Tensor, num_classes: int, image_shape: tuple[int, ...]):
        self.source, self.targets, self.image_shape = source, targets, image_shape
        self.classes = [str(c) for c in range(num_classes)]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        image, label = self.source[index][:2]
        return image, int(label)


def user_dataset(data, *, num_classes: int, role: str) -> UserDataset:
    """``data`` (a ``Dataset`` or a ``DataLoader``) checked and wrapped; ``role`` names the argument in errors.

    Raises:
        DataError: not a dataset, an item that is no ``(image, label)`` pair, an image that is not ``C x H x W``,
            or labels outside the classifier's ``0..num_classes-1``.
    """
    if isinstance(data, UserDataset):
        return data
    source = data.dataset if isinstance(data, DataLoader) else data
    if not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
        raise DataError(
            f"{role}=: give a torch Dataset or DataLoader yielding (images, labels), not {type(data).__name__}"
        )
    if len(source) == 0:
        raise DataError(f"{role}=: the dataset is empty")
    try:
        first = source[0]
    except Exception as exc:  # the user's own __getitem__: one line
        raise DataError(
            f"{role}=: reading its first item failed ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    if isinstance(first, dict):
        raise DataError(
            f"{role}=: items are dicts (keys {', '.join(map(str, first))}); give a dataset of (image, label) pairs"
        )
    if not isinstance(first, (tuple, list)) or len(first) < 2:
        raise DataError(f"{role}=: items are {type(first).__name__}, not (image, label) pairs")
    image = first[0]
    if not isinstance(image, torch.Tensor) or image.dim() != 3:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise DataError(f"{role}=: images of shape {shape}; give C x H x W image tensors")
    try:
        targets = _targets(source)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise DataError(
            f"{role}=: its labels are not integers ({type(exc).__name__}: {str(exc).splitlines()[0][:160]})"
        ) from None
    if len(targets) != len(source):
        raise DataError(
            f"{role}=: {len(targets)} labels for {len(source)} images; give one integer label per image "
            "(not one-hot rows)"
        )
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise DataError(
            f"{role}=: labels {int(targets.min())}..{int(targets.max())} but the classifier has {num_classes} outputs "
            f"(labels 0..{num_classes - 1})"
        )
    return UserDataset(source, targets, num_classes, tuple(image.shape))


def _targets(source) -> torch.Tensor:
    if isinstance(source, TensorDataset) and len(source.tensors) >= 2:
        return source.tensors[1].long().flatten()
    if hasattr(source, "targets"):
        return torch.as_tensor(source.targets).long().flatten()
    return torch.tensor([int(source[i][1]) for i in range(len(source))], dtype=torch.long)  # reads every item once


def user_data(labels, *, dataset=None, train=None, val=None, test=None, command: str) -> dict | None:
    """The user's ``train``/``val``/``test`` checked and wrapped (``{"train", "val", "test"}``, ``val`` may be None), or
    None when none is given; ``labels`` is the classifier's label count, or a callable giving it
    (read only when needed).

    Raises:
        DataError: data given twice (a ``dataset`` name too), ``train`` or ``test`` missing, or unreadable (one line).
    """
    if train is None and test is None and val is None:
        return None
    if dataset is not None:
        raise DataError("give the data once: a dataset name, or train=/test= (val= optional)")
    if train is None or test is None:
        raise DataError(f"{command} needs train= and test= (a Dataset or DataLoader each; val= is optional)")
    count = labels() if callable(labels) else labels
    out = {
        role: user_dataset(data, num_classes=count, role=role) if data is not None else None
        for role, data in (("train", train), ("val", val), ("test", test))
    }
    for role in ("val", "test"):
        if out[role] is not None and out[role].image_shape != out["train"].image_shape:
            raise DataError(
                f"{role}=: images of shape {out[role].image_shape} but train='s are {out['train'].image_shape}"
            )
    return out


def fingerprint(dataset) -> str:
    """A digest of a dataset's labels and of three of its images: what keys the user's data in the feature cache
    (the same labels with other images or transforms get another key)."""
    import hashlib

    digest = hashlib.sha256(torch.as_tensor(dataset.targets).numpy().tobytes())
    n = len(dataset)
    for i in sorted({0, n // 2, n - 1}):
        digest.update(torch.as_tensor(dataset[i][0]).float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
