"""Per-dataset normalization and the standard augmentation of each dataset family.

- CIFAR-10/100, Fashion-MNIST, synthetic (in-memory uint8 tensors): train = random crop
  with 4-pixel zero padding (2 for 28->32 Fashion-MNIST, which is padded first) and
  horizontal flip; eval = none. Then per-channel normalization.
- ImageNet / ImageFolder (files on disk): train = RandomResizedCrop(size) + flip;
  eval = Resize(size * 256/224) + CenterCrop(size). Then normalization.
"""

from __future__ import annotations

import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torchvision.transforms import v2

STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "synthetic": ((0.5,), (0.25,)),
}


def stats(family: str, channels: int) -> tuple[list[float], list[float]]:
    mean, std = STATS.get(family, STATS["imagenet"])
    if len(mean) != channels:  # grey stats on replicated channels, or RGB stats averaged to grey
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    return list(mean), list(std)


#: The steps of :func:`tensor_transform` that differ from image to image (augmentation).
RANDOM_STEPS = (v2.RandomCrop, v2.RandomHorizontalFlip)


def tensor_transform(family: str, channels: int, *, train: bool, size: int, pad: int = 4) -> v2.Compose:
    """For uint8 C x H x W tensors already at ``size``."""
    steps = [v2.RandomCrop(size, padding=pad), v2.RandomHorizontalFlip()] if train else []
    mean, std = stats(family, channels)
    return v2.Compose([*steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])


def file_transform(family: str, channels: int, *, train: bool, size: int) -> v2.Compose:
    """For PIL images read from disk (ImageNet / ImageFolder)."""
    if train:
        steps = [v2.RandomResizedCrop(size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        steps = [v2.Resize(int(round(size * 256 / 224)), antialias=True), v2.CenterCrop(size)]
    grey = [v2.Grayscale(num_output_channels=channels)] if channels != 3 else [v2.RGB()]
    mean, std = stats(family, channels)
    return v2.Compose([*grey, v2.PILToTensor(), *steps, v2.ToDtype(torch.float32, scale=True), v2.Normalize(mean, std)])
