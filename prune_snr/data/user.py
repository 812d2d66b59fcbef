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
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
    default_collate,
    default_convert,
)

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


def user_dataset(data, *, num_classes: int | None, role: str) -> UserDataset:
    """``data`` (a ``Dataset`` or a ``DataLoader``) checked and wrapped; ``role`` names the argument in errors;
    ``num_classes`` None leaves the labels' range to :func:`check_labels`.

    Raises:
        DataError: not a map-style dataset, a loader whose sampler or collate_fn the stages would drop, an item that
            is no ``(image, label)`` pair, an image that is not a ``C x H x W`` tensor, or labels outside the
            classifier's ``0..num_classes-1``.
    """
    if isinstance(data, UserDataset):
        return check_labels(data, num_classes, role)
    source = _loader_dataset(data, role) if isinstance(data, DataLoader) else data
    if isinstance(source, IterableDataset) or not (hasattr(source, "__getitem__") and hasattr(source, "__len__")):
        raise DataError(
            f"{role}=: give a map-style torch Dataset (with __getitem__ and __len__), or a DataLoader of one, yielding "
            f"(images, labels); not {type(source).__name__}"
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
    _check_image(first[0], role)
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
    return check_labels(UserDataset(source, targets, num_classes or 0, tuple(first[0].shape)), num_classes, role)


def check_labels(data: UserDataset, num_classes: int | None, role: str) -> UserDataset:
    """``data`` with ``num_classes`` labels, once its labels are known to lie in ``0..num_classes-1``."""
    if num_classes is None:
        return data
    targets = data.targets
    if len(targets) and (int(targets.min()) < 0 or int(targets.max()) >= num_classes):
        raise DataError(
            f"{role}=: labels {int(targets.min())}..{int(targets.max())} but the classifier has {num_classes} outputs "
            f"(labels 0..{num_classes - 1})"
        )
    data.classes = [str(c) for c in range(num_classes)]
    return data


def _loader_dataset(loader: DataLoader, role: str):
    """A loader's dataset, where reading the dataset alone reads what the loader would yield: the stages build their
    own loaders (batch size, workers, order), so a sampler that picks a part, or a collate_fn that changes the
    batch, would be dropped without a word."""
    if isinstance(loader.dataset, IterableDataset):
        return loader.dataset
    batches = loader.batch_sampler
    sampler = batches.sampler if type(batches) is BatchSampler else batches if batches is not None else loader.sampler
    if not _whole(sampler, len(loader.dataset)):
        raise DataError(
            f"{role}=: the DataLoader has its own sampler ({type(sampler).__name__}), which the stages would "
            "not use (they read its dataset); give torch.utils.data.Subset(dataset, indices) for a part of it"
        )
    if loader.collate_fn not in (default_collate, default_convert):
        raise DataError(
            f"{role}=: the DataLoader has its own collate_fn, which the stages would not use (they read its dataset); "
            "do that work in the dataset (a transform)"
        )
    return loader.dataset


def _whole(sampler, size: int) -> bool:
    """Whether ``sampler`` reads every item once (in order or shuffled): what the stages' own loaders read."""
    if isinstance(sampler, SequentialSampler):
        return True
    return isinstance(sampler, RandomSampler) and not sampler.replacement and sampler.num_samples == size


def _check_image(image, role: str) -> None:
    if isinstance(image, torch.Tensor) and image.dim() == 3:
        return
    if isinstance(image, torch.Tensor):
        raise DataError(f"{role}=: images of shape {tuple(image.shape)}; give C x H x W image tensors")
    shape = f" of shape {tuple(image.shape)}" if hasattr(image, "shape") else ""
    kind = f"{type(image).__module__.split('.')[0]}.{type(image).__name__}"
    raise DataError(
        f"{role}=: images are {kind}{shape}, not torch tensors; give C x H x W tensors (e.g. the dataset's transform "
        "ending in transforms.ToTensor(), or torch.from_numpy)"
    )


def _targets(source) -> torch.Tensor:
    if isinstance(source, TensorDataset) and len(source.tensors) >= 2:
        return source.tensors[1].long().flatten()
    if hasattr(source, "targets"):
        return torch.as_tensor(source.targets).long().flatten()
    return torch.tensor([int(source[i][1]) for i in range(len(source))], dtype=torch.long)  # reads every item once


def user_data(labels, *, dataset=None, train=None, val=None, test=None, command: str) -> dict | None:
    """The user's ``train``/``val``/``test`` checked and wrapped (``{"train", "val", "test"}``, ``val`` may be None), or
    None when none is given; ``labels`` is the classifier's label count, or a callable that gives it from one
    training image (where the model is run once on it, see :func:`prune_snr.models.logits_width`).

    Raises:
        DataError: data given twice (a ``dataset`` name too), ``train`` or ``test`` missing, or unreadable (one line).
    """
    if train is None and test is None and val is None:
        return None
    if dataset is not None:
        raise DataError("give the data once: a dataset name, or train=/test= (val= optional)")
    if train is None or test is None:
        raise DataError(f"{command} needs train= and test= (a Dataset or DataLoader each; val= is optional)")
    out = {
        role: user_dataset(data, num_classes=None, role=role) if data is not None else None
        for role, data in (("train", train), ("val", val), ("test", test))
    }
    for role in ("val", "test"):
        if out[role] is not None and out[role].image_shape != out["train"].image_shape:
            raise DataError(
                f"{role}=: images of shape {out[role].image_shape} but train='s are {out['train'].image_shape}"
            )
    count = labels(out["train"][0][0]) if callable(labels) else labels
    return {role: data if data is None else check_labels(data, count, role) for role, data in out.items()}


def fingerprint(dataset) -> str:
    """A digest of a dataset's labels and of three of its images: what keys the user's data in the feature cache
    (the same labels with other images or transforms get another key)."""
    import hashlib

    digest = hashlib.sha256(torch.as_tensor(dataset.targets).numpy().tobytes())
    n = len(dataset)
    for i in sorted({0, n // 2, n - 1}):
        digest.update(torch.as_tensor(dataset[i][0]).float().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]
