"""One entry point for every dataset: ``build_dataset(name, split, root, ...)``."""

from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

from torch.utils.data import Dataset

from ..choices import DATASETS
from ..errors import DataError
from . import folder, memory
from .subset import LabelSubset, choose_labels

SPLITS = ("train", "test")
DEFAULT_SIZE = {"imagenet": 224, "imagefolder": 224}


def build_dataset(
    name: str,
    split: str,
    root: str | None = None,
    *,
    labels: int | Sequence[int] | None = None,
    label_seed: int | None = None,
    channels: int = 3,
    input_size: int | None = None,
    augment: bool | None = None,
) -> Dataset:
    """Build a split of a dataset, optionally restricted to a subset of its labels.

    Args:
        name: ``cifar10``, ``cifar100``, ``imagenet``, ``fashion-mnist``, ``synthetic``
            (10 classes) / ``synthetic:K`` (K classes), or ``imagefolder:PATH``.
        split: ``train`` or ``test`` (ImageFolder/ImageNet read ``val/`` for test).
        root: the data folder (``--data-dir``). CIFAR expects the unpacked python tarball
            folder in it; ImageNet ``root/train`` and ``root/val`` in ImageFolder layout.
        labels: keep the first K labels (int) or these labels (list), renumbered 0..K-1.
        label_seed: with an int ``labels``, draw the K labels at random with this seed.
        channels: 3 replicates grey images; 1 turns RGB to grey.
        input_size: side of the square images; default 32 (224 for ImageNet; an ImageFolder's own
            size when its training images are square and share one, else 224).
        augment: standard augmentation (see ``data/transforms.py``); default: on for train.

    Returns:
        A dataset of ``(float image C x H x W, label)`` with ``.classes``, ``.targets``
        (int64 tensor) and ``.input_size``.

    Raises:
        DataError: unknown name or split, files missing (the message says the layout expected),
            or an empty / single-label result.

    Example:
        >>> ds = build_dataset("synthetic", "train", labels=3)
        >>> len(ds.classes), ds[0][0].shape
        (3, torch.Size([3, 32, 32]))
    """
    if split not in SPLITS:
        raise DataError(f"split {split!r}: use one of {', '.join(SPLITS)}")
    family, _, arg = name.partition(":")
    size = (
        input_size
        or (folder.native_size(arg) if family == "imagefolder" and arg else None)
        or DEFAULT_SIZE.get(family, 32)
    )
    train_aug = (split == "train") if augment is None else augment
    entry = FAMILIES.get(family)
    if entry is None or (entry.arg == "required" and not arg) or (entry.arg == "none" and arg):
        raise DataError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS.names)}")
    ds = entry.build(
        name=name, family=family, arg=arg, split=split, root=root, channels=channels, size=size, train_aug=train_aug
    )
    if labels is not None:
        ds = LabelSubset(ds, choose_labels(len(ds.classes), labels, label_seed))
    if len(ds) == 0:
        raise DataError(f"dataset {name!r} ({split}) is empty; check --data-dir and --num-labels")
    if len(set(ds.targets.tolist())) < 2:
        raise DataError(f"dataset {name!r} ({split}) holds a single label; a classifier needs at least 2")
    ds.input_size = size
    return ds


def _fashion_mnist(*, split, root, channels, size, train_aug, **_):
    return memory.fashion_mnist(split, root, channels=channels, size=size, train_aug=train_aug)


def _cifar(*, family, split, root, channels, size, train_aug, **_):
    return memory.cifar(family, split, root, channels=channels, size=size, train_aug=train_aug)


def _synthetic(*, name, arg, split, channels, size, train_aug, **_):
    try:
        num_classes = int(arg) if arg else 10
    except ValueError:
        raise DataError(f"dataset {name!r}: synthetic:K needs an integer K") from None
    if num_classes < 2:
        raise DataError(f"dataset {name!r}: synthetic needs K >= 2 classes")
    return memory.synthetic(split, num_classes=num_classes, channels=channels, size=size, train_aug=train_aug)


def _imagenet(*, split, root, channels, size, train_aug, **_):
    if not root:
        raise DataError("imagenet needs --data-dir pointing at a folder with train/<wnid>/*.JPEG and val/<wnid>/*.JPEG")
    return folder.image_folder(root, split, family="imagenet", channels=channels, size=size, train_aug=train_aug)


def _imagefolder(*, arg, split, channels, size, train_aug, **_):
    return folder.image_folder(arg, split, family="imagefolder", channels=channels, size=size, train_aug=train_aug)


class Family(NamedTuple):
    build: Callable[..., Dataset]
    arg: str = "none"  # what may follow "name:": none, optional (synthetic:K) or required (imagefolder:PATH)


#: The dataset families: the name before ":" picks the builder. The names users see (and their help)
#: are the rows of :data:`prune_snr.choices.DATASETS`; ``tests/test_choices.py`` keeps the two in step.
FAMILIES = {
    "fashion-mnist": Family(_fashion_mnist),
    "cifar10": Family(_cifar),
    "cifar100": Family(_cifar),
    "synthetic": Family(_synthetic, arg="optional"),
    "imagenet": Family(_imagenet),
    "imagefolder": Family(_imagefolder, arg="required"),
}
