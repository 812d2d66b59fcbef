"""Specs of build_dataset: every registry entry, on small files made here."""

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from prune_snr.data import build_dataset, choose_labels
from prune_snr.errors import DataError


def write_idx_images(path, images: np.ndarray):
    n, h, w = images.shape
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, n, h, w) + images.astype(np.uint8).tobytes()))


def write_idx_labels(path, labels: np.ndarray):
    path.write_bytes(gzip.compress(struct.pack(">II", 0x801, len(labels)) + labels.astype(np.uint8).tobytes()))


@pytest.fixture
def fashion_dir(tmp_path):
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx_images(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx_labels(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_synthetic_has_ten_labels_of_three_channel_32px_images():
    ds = build_dataset("synthetic", "train")
    x, y = ds[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert len(ds.classes) == 10 and set(ds.targets.tolist()) == set(range(10))


def test_synthetic_k_sets_the_class_count_and_splits_differ():
    train, test = build_dataset("synthetic:4", "train"), build_dataset("synthetic:4", "test")
    assert len(train.classes) == 4 and len(test) < len(train)
    assert not torch.equal(train.images[:5], test.images[:5])


def test_fashion_mnist_reads_gzipped_idx_pads_to_32_and_replicates_grey(fashion_dir):
    ds = build_dataset("fashion-mnist", "train", str(fashion_dir), augment=False)
    assert len(ds) == 40 and ds.classes[0] == "T-shirt/top"
    x, _ = ds[0]
    assert x.shape == (3, 32, 32)
    assert torch.equal(x[0], x[1])  # grey replicated
    assert torch.allclose(x[:, 0, :], x[:, 0, :1].expand(3, 32))  # 2-pixel zero padding is constant
    assert len(build_dataset("fashion-mnist", "test", str(fashion_dir), channels=1)[0][0]) == 1


def test_two_copies_of_fashion_mnist_files_never_read_each_others_decompressed_cache(fashion_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("other-fashion")
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx_images(other / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        write_idx_labels(other / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) + 3) % 10)
    first = build_dataset("fashion-mnist", "train", str(fashion_dir), augment=False)
    second = build_dataset("fashion-mnist", "train", str(other), augment=False)
    assert not torch.equal(first.images, second.images) and second.targets[0] == 3


def test_fashion_mnist_missing_files_names_the_folder_and_the_package(tmp_path, monkeypatch):
    from prune_snr.data import memory

    monkeypatch.setattr(memory, "FASHION_MNIST_DIRS", ())
    monkeypatch.setenv("PRUNE_SNR_CACHE", str(tmp_path / "empty-cache"))  # nothing cached, no network: not downloaded
    with pytest.raises(DataError, match=r"not downloaded .*dataset-fashion-mnist"):
        build_dataset("fashion-mnist", "train", str(tmp_path))


def _write_cifar(root, name):
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        folder.mkdir()
        for f in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
            with open(folder / f, "wb") as fh:
                pickle.dump({"data": rng.integers(0, 255, (6, 3072), dtype=np.uint8), "labels": list(range(6))}, fh)
        with open(folder / "batches.meta", "wb") as fh:
            pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, fh)
    else:
        folder = root / "cifar-100-python"
        folder.mkdir()
        for f in ("train", "test"):
            with open(folder / f, "wb") as fh:
                pickle.dump(
                    {"data": rng.integers(0, 255, (6, 3072), dtype=np.uint8), "fine_labels": list(range(6))}, fh
                )
        with open(folder / "meta", "wb") as fh:
            pickle.dump({"fine_label_names": [f"c{i}" for i in range(100)]}, fh)


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_reads_the_python_tarball_layout(tmp_path, monkeypatch, name, classes):
    from torchvision.datasets import cifar

    # Our files are tiny stand-ins in the real layout and format; only their md5 differs.
    monkeypatch.setattr(cifar, "check_integrity", lambda *args, **kwargs: True)
    _write_cifar(tmp_path, name)
    ds = build_dataset(name, "train", str(tmp_path))
    assert len(ds.classes) == classes and ds[0][0].shape == (3, 32, 32)
    assert len(ds) == (30 if name == "cifar10" else 6)


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")])
def test_cifar_missing_says_which_folder_layout_is_expected(tmp_path, name, folder):
    with pytest.raises(DataError, match=folder):
        build_dataset(name, "test", str(tmp_path))


def _write_image_folder(root, splits=("train", "val"), shape=(40, 50)):
    from PIL import Image

    for split in splits:
        for cls in ("cat", "dog", "fox"):
            (root / split / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((*shape, 3), 40 * i + 60, dtype=np.uint8)).save(root / split / cls / f"{i}.png")


def test_an_image_folder_of_one_square_size_is_read_at_that_size(tmp_path):
    _write_image_folder(tmp_path, shape=(24, 24))
    assert build_dataset(f"imagefolder:{tmp_path}", "train").input_size == 24
    assert build_dataset(f"imagefolder:{tmp_path}", "test")[0][0].shape == (3, 24, 24)


def test_an_image_folder_of_mixed_or_oblong_sizes_defaults_to_224(tmp_path):
    _write_image_folder(tmp_path)  # 40 x 50
    assert build_dataset(f"imagefolder:{tmp_path}", "train").input_size == 224


def test_imagefolder_reads_train_and_val_folders(tmp_path):
    _write_image_folder(tmp_path)
    train = build_dataset(f"imagefolder:{tmp_path}", "train", input_size=32)
    test = build_dataset(f"imagefolder:{tmp_path}", "test", input_size=32)
    assert train.classes == ["cat", "dog", "fox"] and len(test) == 6
    assert train[0][0].shape == (3, 32, 32)


def test_imagenet_uses_the_imagefolder_layout_at_224(tmp_path):
    _write_image_folder(tmp_path)
    ds = build_dataset("imagenet", "test", str(tmp_path))
    assert ds.input_size == 224 and ds[0][0].shape == (3, 224, 224)


def test_imagefolder_without_val_folder_is_a_clear_error(tmp_path):
    _write_image_folder(tmp_path, splits=("train",))
    with pytest.raises(DataError, match="val or test"):
        build_dataset(f"imagefolder:{tmp_path}", "test")


def test_first_k_labels_are_kept_and_renumbered():
    ds = build_dataset("synthetic", "test", labels=3)
    assert set(ds.targets.tolist()) == {0, 1, 2} and ds.classes == ["class0", "class1", "class2"]
    assert len(ds) == 3 * 32


def test_seeded_random_label_subset_is_reproducible_and_remapped():
    a = build_dataset("synthetic", "test", labels=4, label_seed=7)
    b = build_dataset("synthetic", "test", labels=4, label_seed=7)
    assert a.classes == b.classes and a.classes != ["class0", "class1", "class2", "class3"]
    assert set(a.targets.tolist()) == {0, 1, 2, 3}
    original = int(a.classes[a.targets[0]].removeprefix("class"))
    assert a.dataset.targets[a.indices[0]] == original


@pytest.mark.parametrize("labels", [1, 11, [0, 0], [3, 10]])
def test_bad_label_choices_are_refused(labels):
    with pytest.raises(DataError):
        choose_labels(10, labels)


@pytest.mark.parametrize("name", ["mnist", "cifar10:x", "imagefolder", "synthetic:1", "synthetic:abc"])
def test_unknown_or_malformed_dataset_names_are_refused(name):
    with pytest.raises(DataError):
        build_dataset(name, "train")


def test_unknown_split_is_refused():
    with pytest.raises(DataError, match="split"):
        build_dataset("synthetic", "validation")


def _serve(folder):
    """A throwaway HTTP server on 127.0.0.1 serving ``folder``; returns (base URL, server)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


@pytest.mark.parametrize("tamper", [False, True])
def test_missing_cifar_is_downloaded_into_the_cache_with_its_checksum_verified(tmp_path, monkeypatch, tamper):
    import hashlib
    import tarfile

    from torchvision.datasets import CIFAR10

    _write_cifar(tmp_path, "cifar10")
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in (tmp_path / "cifar-10-batches-py").iterdir()}
    served = tmp_path / "served"
    served.mkdir()
    with tarfile.open(served / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    url, server = _serve(served)
    tgz_md5 = "0" * 32 if tamper else hashlib.md5((served / "cifar-10-python.tar.gz").read_bytes()).hexdigest()
    monkeypatch.setattr(CIFAR10, "url", url + "cifar-10-python.tar.gz")
    monkeypatch.setattr(CIFAR10, "tgz_md5", tgz_md5)
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setitem(CIFAR10.meta, "md5", md5["batches.meta"])
    cache = tmp_path / "cache"
    monkeypatch.setenv("PRUNE_SNR_CACHE", str(cache))
    try:
        if tamper:
            with pytest.raises(DataError, match=r"cifar10 not found .* not downloaded .*fetch http://127.0.0.1"):
                build_dataset("cifar10", "test")
        else:
            assert len(build_dataset("cifar10", "test")) == 6
            assert (cache / "datasets" / "cifar-10-batches-py" / "test_batch").is_file()
    finally:
        server.shutdown()


def test_an_evaluation_batch_is_the_images_item_by_item_and_augmentation_still_draws_per_image():
    from torch.utils.data import DataLoader

    from prune_snr.data.splits import IndexSubset

    plain = build_dataset("synthetic", "test", augment=False)
    part = IndexSubset(plain, [5, 3, 200, 7])
    images, labels = next(iter(DataLoader(part, batch_size=4)))
    assert torch.equal(images, torch.stack([part[i][0] for i in range(4)])) and labels.tolist() == [
        part[i][1] for i in range(4)
    ]
    augmented = build_dataset("synthetic", "train", augment=True)
    torch.manual_seed(0)
    batch = augmented.__getitems__([0] * 16)  # one image, sixteen draws of crop and flip
    assert len({tuple(x.flatten()[:64].tolist()) for x, _ in batch}) > 1
