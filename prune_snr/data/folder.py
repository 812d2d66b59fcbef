"""Datasets read from image folders: ImageNet and any ``imagefolder:PATH``."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import DataError
from .transforms import file_transform

SPLIT_DIRS = {"train": ("train",), "test": ("val", "test")}
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")


def native_size(root: str | Path, *, sample: int = 64) -> int | None:
    """The side of the images in ``ROOT/train`` when a sample of them are square and share one, else ``None``.

    An image folder of 32x32 images then trains at 32 px, not at ImageNet's 224 (49x the work).
    """
    from PIL import Image

    files = sorted(p for p in (Path(root) / "train").rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)[:sample]
    sizes = set()
    for path in files:
        with Image.open(path) as image:
            sizes.add(image.size)
    if len(sizes) == 1:
        ((w, h),) = sizes
        return w if w == h else None
    return None


def image_folder(root: str | Path, split: str, *, family: str, channels: int, size: int, train_aug: bool):
    """``ROOT/train/<class>/*`` and ``ROOT/val/<class>/*`` (or ``ROOT/test``): torchvision's ImageFolder."""
    from torchvision.datasets import ImageFolder

    root = Path(root)
    folder = next((root / d for d in SPLIT_DIRS[split] if (root / d).is_dir()), None)
    if folder is None:
        raise DataError(
            f"{root}: no {' or '.join(SPLIT_DIRS[split])}/ folder; expected ROOT/train/<class>/*.jpg and "
            f"ROOT/val/<class>/*.jpg"
        )
    try:
        ds = ImageFolder(str(folder), transform=file_transform(family, channels, train=train_aug, size=size))
    except (FileNotFoundError, RuntimeError) as exc:
        raise DataError(f"{folder}: {exc}; every class needs its own sub-folder of images") from exc
    ds.targets = torch.tensor(ds.targets)
    return ds
