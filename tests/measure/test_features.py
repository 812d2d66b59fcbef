"""Specs of the feature cache shared by concurrent processes: entries appear whole, by one rename."""

import importlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from torch.utils.data import TensorDataset

from prune_snr.measure.features import extract, pooled
from tests.test_reliability import measurement_without_timings


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def _data():
    torch.manual_seed(0)
    return TensorDataset(torch.randn(20, 3, 8, 8), torch.arange(20) % 3)


def test_an_entry_is_published_whole_and_leaves_no_temporary_folder(tmp_path):
    folder = tmp_path / "key" / "train"
    feats, targets = extract(Tiny(), _data(), ["conv"], pool=2, folder=folder, batch_size=8)
    assert feats["conv"].shape == (20, 4, 4) and targets.tolist() == (torch.arange(20) % 3).tolist()
    assert json.loads((folder / "done.json").read_text())["n"] == 20
    assert [p.name for p in (tmp_path / "key").iterdir()] == ["train"], "the private temporary folder is gone"


def test_a_process_that_loses_the_race_reads_the_published_entry(tmp_path, monkeypatch):
    features = importlib.import_module("prune_snr.measure.features")

    folder = tmp_path / "key" / "train"

    def another_process_publishes_first(tmp, target):
        # another process's complete entry lands while ours is being written
        shutil.copytree(tmp, target)
        (target / "theirs").touch()
        original_publish(tmp, target)

    original_publish = features._publish
    monkeypatch.setattr(features, "_publish", another_process_publishes_first)
    feats, _ = extract(Tiny(), _data(), ["conv"], pool=2, folder=folder, batch_size=8)
    assert (folder / "theirs").is_file(), "the first published entry stays"
    assert feats["conv"].shape == (20, 4, 4)
    assert [p.name for p in (tmp_path / "key").iterdir()] == ["train"], "the loser discarded its own copy"


def test_an_entry_left_half_written_by_an_older_version_is_replaced(tmp_path):
    folder = tmp_path / "key" / "train"
    folder.mkdir(parents=True)
    (folder / "0.npy").write_bytes(b"\x93NUMPY truncated")  # written in place, no done.json
    feats, _ = extract(Tiny(), _data(), ["conv"], pool=2, folder=folder, batch_size=8)
    assert np.asarray(feats["conv"]).shape == (20, 4, 4)
    assert [p.name for p in (tmp_path / "key").iterdir()] == ["train"]


def test_temporary_folders_of_dead_processes_are_removed(tmp_path):
    import socket

    folder = tmp_path / "key" / "train"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    orphan = tmp_path / "key" / f".train.tmp-{socket.gethostname()}-{dead}-deadbeef"
    orphan.mkdir(parents=True)
    (orphan / "0.npy").write_bytes(b"partial")
    extract(Tiny(), _data(), ["conv"], pool=2, folder=folder, batch_size=8)
    assert not orphan.exists()


@pytest.mark.slow
def test_three_processes_measuring_at_once_on_one_cache_agree(tiny_run, tmp_path):
    out, _ = tiny_run
    env = {**os.environ, "PRUNE_SNR_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [
        sys.executable,
        "-m",
        "prune_snr.cli",
        "measure",
        str(out / "model.pt"),
        "--head-epochs",
        "3",
        "--device",
        "cpu",
        "--no-plots",
        "--out",
    ]
    procs = [
        subprocess.Popen(
            [*cmd, str(tmp_path / f"m{i}")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(3)
    ]
    results = [(p.wait(timeout=300), p.communicate()[1]) for p in procs]
    assert all(rc == 0 for rc, _ in results), [err[-1500:] for _, err in results]
    first, *others = (measurement_without_timings(tmp_path / f"m{i}") for i in range(3))
    assert all(other == first for other in others)
    entries = [
        p
        for p in (tmp_path / "cache" / "features").rglob("*")
        if p.is_dir() and p.parent.parent == tmp_path / "cache" / "features"
    ]
    assert sorted(p.name for p in entries) == ["test", "train"], (
        "one published entry per split, no temporary folder left"
    )


@pytest.mark.parametrize("pool", [1, 2, 3])
@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (2, 3, 7, 5), (2, 3, 2, 2), (2, 3, 1, 1)])
def test_pooled_features_equal_adaptive_average_pooling(shape, pool):
    x = torch.randn(*shape)
    expected = F.adaptive_avg_pool2d(x, pool).flatten(2)
    assert torch.allclose(pooled(x, pool), expected, atol=1e-6)
    assert torch.allclose(pooled(x.contiguous(memory_format=torch.channels_last), pool), expected, atol=1e-6)


def test_pooled_features_stay_float32_under_autocast():
    x = torch.randn(2, 3, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pooled(x, 2)
    assert out.dtype == torch.float32
    assert torch.allclose(out, F.adaptive_avg_pool2d(x, 2).flatten(2), atol=1e-6)


def test_a_bfloat16_output_is_pooled_before_any_float32_copy_and_averaged_in_float32():
    x = torch.randn(2, 3, 9, 7).bfloat16()
    out = pooled(x, 2)
    assert out.dtype == torch.bfloat16, "the whole map is never copied to float32 first"
    exact = F.adaptive_avg_pool2d(x.float(), 2).flatten(2)
    assert torch.allclose(out.float(), exact.bfloat16().float()), "one rounding of the float32 average"


def test_loader_workers_give_the_features_one_process_gives(tmp_path):
    model = Tiny()
    one, _ = extract(model, _data(), ["conv"], pool=2, folder=tmp_path / "a" / "train", batch_size=8, workers=0)
    two, _ = extract(model, _data(), ["conv"], pool=2, folder=tmp_path / "b" / "train", batch_size=8, workers=2)
    assert np.array_equal(np.asarray(one["conv"]), np.asarray(two["conv"]))


def test_a_failed_write_of_the_features_is_raised_and_publishes_nothing(tmp_path, monkeypatch):
    features = importlib.import_module("prune_snr.measure.features")

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(features, "_npy_writer", full_disk)
    with pytest.raises(OSError, match="No space left"):
        extract(Tiny(), _data(), ["conv"], pool=2, folder=tmp_path / "key" / "train", batch_size=4)
    assert not (tmp_path / "key" / "train").exists()


def test_the_torchrun_join_holds_at_most_one_point_twice_on_disk(tmp_path, monkeypatch):
    features = importlib.import_module("prune_snr.measure.features")
    widths = [16, 64, 32]
    parts = [tmp_path / "cache" / f"part{r}" for r in range(2)]
    for r, part in enumerate(parts):
        part.mkdir(parents=True)
        np.save(part / "targets.npy", np.arange(100) + 100 * r)
        for i, w in enumerate(widths):
            np.save(part / f"{i}.npy", np.full((100, w), r, dtype=np.float32))
    cache = sum(f.stat().st_size for p in parts for f in p.iterdir())
    seen, writer = [], features._npy_writer

    def measured(path, dtype, shape):
        seen.append(sum(f.stat().st_size for f in (tmp_path / "cache").rglob("*") if f.is_file()))
        return writer(path, dtype, shape)

    monkeypatch.setattr(features, "_npy_writer", measured)
    features._join(parts, tmp_path / "cache", len(widths))
    assert max(seen) <= cache + 200 * max(widths) * 4 + 4096
    joined = np.load(tmp_path / "cache" / "1.npy")
    assert joined.shape == (200, 64) and joined[:100].max() == 0 and joined[100:].min() == 1
    assert not any(p.exists() for p in parts)


def test_channels_last_feature_maps_pool_to_the_same_values_as_contiguous_ones():
    import torch

    from prune_snr.measure.pooling import pooled

    x = torch.randn(4, 16, 7, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(pooled(x.contiguous(memory_format=torch.channels_last), 2), pooled(x, 2))
