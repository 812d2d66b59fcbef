"""Small datasets held in memory as uint8 tensors: CIFAR, Fashion-MNIST, synthetic."""

from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import Dataset

from ..atomic import atomic_save_bytes
from ..errors import DataError
from .transforms import RANDOM_STEPS, tensor_transform

FASHION_MNIST_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)


class TensorImages(Dataset):
    """``images``: N x C x H x W uint8; ``targets``: N int64; yields (float image, label)."""

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes, transform=None):
        self.images, self.targets, self.classes, self.transform = images, targets.long(), list(classes), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        x = self.images[i]
        return (self.transform(x) if self.transform else x), int(self.targets[i])

    def __getitems__(self, indices: list[int]) -> list[tuple[torch.Tensor, int]]:
        """A DataLoader's batch at once: a transform without random steps (evaluation's: scale and normalize) runs
        on the whole batch, where one call per image would cost as much as the forward pass of a small model."""
        if self.transform is not None and any(isinstance(t, RANDOM_STEPS) for t in self.transform.transforms):
            return [self[i] for i in indices]
        index = torch.as_tensor(indices, dtype=torch.long)
        x = self.images[index]
        x = self.transform(x) if self.transform else x
        return list(zip(x.unbind(0), self.targets[index].tolist()))


def _to_chw(images: torch.Tensor, channels: int, size: int) -> torch.Tensor:
    if images.ndim == 3:
        images = images.unsqueeze(1)
    if images.shape[1] != channels:
        if images.shape[1] == 1:
            images = images.expand(-1, channels, -1, -1)
        else:  # RGB -> grey
            images = images.float().mean(1, keepdim=True).round().to(torch.uint8).expand(-1, channels, -1, -1)
    h = images.shape[-1]
    if h < size and (size - h) % 2 == 0:
        p = (size - h) // 2
        images = F.pad(images, (p, p, p, p))
    elif h != size:
        images = (
            F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True)
            .round()
            .clamp(0, 255)
            .to(torch.uint8)
        )
    return images.contiguous()


def _cache_dir() -> Path:
    return Path(os.environ.get("PRUNE_SNR_CACHE", Path.home() / ".cache" / "prune-snr"))


def _fashion_mnist_root(data_dir: str | None) -> Path | None:
    """A root that torchvision's FashionMNIST reader accepts (``ROOT/FashionMNIST/raw/<idx files>``).

    Uncompressed files in ``DATA_DIR/FashionMNIST/raw`` are used as they are; ``.gz`` files in
    DATA_DIR or Debian's /usr/share/datasets/fashion-mnist are decompressed once into the cache.
    ``None`` when there are none (then the files are downloaded).
    """
    candidates = [Path(data_dir)] if data_dir else []
    candidates += FASHION_MNIST_DIRS
    for base in candidates:
        raw = base / "FashionMNIST" / "raw"
        if all((raw / f).is_file() for f in FASHION_MNIST_FILES):
            return base
        for folder in (base, raw):
            if all((folder / f).is_file() or (folder / f"{f}.gz").is_file() for f in FASHION_MNIST_FILES):
                # one cache entry per source folder and file state: another copy of the files never reads this one's
                sources = [folder / f if (folder / f).is_file() else folder / f"{f}.gz" for f in FASHION_MNIST_FILES]
                key = hashlib.sha256(
                    repr([(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in sources]).encode()
                )
                root = _cache_dir() / "fashion-mnist" / key.hexdigest()[:16]
                cache_raw = root / "FashionMNIST" / "raw"
                for f, src in zip(FASHION_MNIST_FILES, sources):
                    if not (cache_raw / f).is_file():
                        data = src.read_bytes() if src.suffix != ".gz" else gzip.decompress(src.read_bytes())
                        atomic_save_bytes(cache_raw / f, data, all_ranks=True)
                return root
    return None


def fashion_mnist(split: str, data_dir: str | None, *, channels: int, size: int, train_aug: bool) -> TensorImages:
    from torchvision.datasets import FashionMNIST

    root = _fashion_mnist_root(data_dir)
    if root is None:  # nowhere on disk: torchvision's downloader, into the cache
        where = " or ".join(str(c) for c in ([Path(data_dir)] if data_dir else []) + list(FASHION_MNIST_DIRS))
        return _fashion_mnist_tensors(
            _download(
                FashionMNIST,
                _cache_dir(),
                split,
                lambda why: DataError(
                    f"Fashion-MNIST IDX files not found in {where} and not downloaded ({why}); install Debian's "
                    "package (apt-get install dataset-fashion-mnist) or put "
                    "train-/t10k-{images-idx3,labels-idx1}-ubyte[.gz] in --data-dir"
                ),
            ),
            channels=channels,
            size=size,
            train_aug=train_aug,
        )
    try:
        ds = FashionMNIST(str(root), train=(split == "train"), download=False)
    except RuntimeError as exc:
        raise DataError(
            f"Fashion-MNIST files under {root} are unreadable ({exc}); delete {_cache_dir()} and retry"
        ) from exc
    return _fashion_mnist_tensors(ds, channels=channels, size=size, train_aug=train_aug)


def _fashion_mnist_tensors(ds, *, channels: int, size: int, train_aug: bool) -> TensorImages:
    images = _to_chw(ds.data, channels, size)
    pad = 2 if size == 32 else 4
    return TensorImages(
        images,
        ds.targets,
        FASHION_MNIST_CLASSES,
        tensor_transform("fashion-mnist", channels, train=train_aug, size=size, pad=pad),
    )


def cifar(name: str, split: str, data_dir: str | None, *, channels: int, size: int, train_aug: bool) -> TensorImages:
    from torchvision.datasets import CIFAR10, CIFAR100

    cls, folder = (CIFAR10, "cifar-10-batches-py") if name == "cifar10" else (CIFAR100, "cifar-100-python")
    root = Path(data_dir) if data_dir else _cache_dir() / "datasets"
    try:
        ds = cls(str(root), train=(split == "train"), download=False)
    except RuntimeError:
        ds = _download(
            cls,
            root,
            split,
            lambda why: DataError(
                f"{name} not found in {root / folder}/ and not downloaded ({why}): fetch {cls.url} (md5 "
                f"{cls.tgz_md5}) and unpack it in {root} "
                f"({'data_batch_1..5, test_batch, batches.meta' if name == 'cifar10' else 'train, test, meta'}), or "
                "pass the folder holding it as --data-dir"
            ),
        )
    images = _to_chw(torch.from_numpy(ds.data).permute(0, 3, 1, 2), channels, size)
    return TensorImages(
        images, torch.tensor(ds.targets), ds.classes, tensor_transform(name, channels, train=train_aug, size=size)
    )


def _download(cls, root: Path, split: str, error):
    """``cls`` (a torchvision dataset) downloaded into ``root`` by torchvision's own downloader, which
    verifies the archive's checksum; ``error(reason)`` is raised when that fails (offline, a bad file)."""
    import urllib.error

    try:
        root.mkdir(parents=True, exist_ok=True)
        return cls(str(root), train=(split == "train"), download=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise error(f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no network'}") from exc


def synthetic(
    split: str,
    *,
    num_classes: int = 10,
    channels: int = 3,
    size: int = 32,
    per_class: int | None = None,
    train_aug: bool = False,
    seed: int = 0,
) -> TensorImages:
    """Images with learnable class structure: a smooth per-class prototype, shifted, plus noise.

    Prototypes depend only on ``seed`` and ``num_classes``, so train and test share classes;
    the noise differs by split. Small enough for unit tests (64 train / 32 test per class).
    """
    g = torch.Generator().manual_seed(seed)
    prototypes = F.interpolate(
        torch.rand(num_classes, channels, 4, 4, generator=g), size=(size, size), mode="bilinear", align_corners=False
    )
    n = per_class or (64 if split == "train" else 32)
    g.manual_seed(seed + (1 if split == "train" else 2))
    labels = torch.arange(num_classes).repeat_interleave(n)
    shifts = torch.randint(-2, 3, (len(labels), 2), generator=g)
    images = torch.stack([torch.roll(prototypes[c], tuple(s.tolist()), dims=(1, 2)) for c, s in zip(labels, shifts)])
    images = (images + 0.15 * torch.randn(images.shape, generator=g)).clamp(0, 1)
    images = (images * 255).round().to(torch.uint8)
    return TensorImages(
        images,
        labels,
        [f"class{c}" for c in range(num_classes)],
        tensor_transform("synthetic", channels, train=train_aug, size=size, pad=2),
    )
