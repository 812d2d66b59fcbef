"""Phase 2, step 1: one backbone pass per split captures the pooled output of every point.

Forward hooks (:mod:`prune_snr.measure.pooling`) are installed in a context manager that removes them in
``finally``; each point's output is adaptive-average-pooled to ``p x p`` and stored as ``N x C x p*p`` float32 (or
float16 with ``cache_dtype="float16"``: half the disk and the reads).
Features go straight into ``.npy`` files (memory-mapped, so a dataset larger than RAM streams to
disk). An entry is written into a private temporary folder beside it (``.NAME.tmp-HOST-PID-...``)
and published by one atomic ``os.rename`` of that folder, ``done.json`` included: processes that
share ``PRUNE_SNR_CACHE`` may compute the same entry at once, the first complete one wins, a loser
discards its own copy and reads the published one, and no reader ever opens a half-written file.
A rerun with the same key reuses the published entry.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import shutil
import socket
import threading
import uuid
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Subset

from ..atomic import atomic_save_json
from ..errors import DataError
from ..progress import track
from ..runtime import autocast, barrier, broadcast_object, cpu_channels_last, first_image, is_main, make_loader, world
from .pooling import capture, pooled  # noqa: F401  (named here too)


def cache_key(model: nn.Module, dataset_id: str, points: list[str], pool: int, dtype: str = "float32") -> str:
    """Hash of everything the features depend on: the weights, the data and the points."""
    h = _weights_hash(model)
    h.update(json.dumps([dataset_id, points, pool] + ([dtype] if dtype != "float32" else [])).encode())
    return h.hexdigest()[:16]


def weights_digest(model: nn.Module) -> str:
    """A digest of ``model``'s weights alone: what a measurement records of the model it measured."""
    return _weights_hash(model).hexdigest()[:16]


def _weights_hash(model: nn.Module):
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())  # any dtype
    return h


@torch.no_grad()
def point_widths(
    model: nn.Module, sample: torch.Tensor, points: list[str], *, pool: int, device: torch.device = torch.device("cpu")
) -> dict[str, int]:
    """``{point: C * p * p}``, the values one image adds to each point's cache: one forward pass of
    ``sample`` (one image)."""
    model.eval().to(device)
    with capture(model, points, pool) as store:
        model(sample.unsqueeze(0).to(device))
    return {name: int(store[name][0].numel()) for name in points}


def projected_bytes(rows: int, widths: dict[str, int], dtype: str = "float32") -> int:
    """Bytes a feature cache of ``rows`` images takes: rows x sum over points of ``C x p x p`` x bytes per
    value (+ the targets)."""
    return rows * (sum(widths.values()) * np.dtype(dtype).itemsize + np.dtype(np.int64).itemsize)


def join_headroom(rows: int, widths: dict[str, int], dtype: str = "float32") -> int:
    """Bytes the torchrun join needs besides the cache: its widest point once more (0 outside torchrun)."""
    return rows * max(widths.values()) * np.dtype(dtype).itemsize if world()[1] > 1 and widths else 0


def check_disk(folder: Path, need: int) -> None:
    """Refuse, in one line, a feature pass whose cache would not fit the free disk of ``folder``'s filesystem.

    Raises:
        DataError: ``need`` bytes exceed what ``shutil.disk_usage`` reports free; the message names the options that
            shrink the cache.
    """
    where = Path(folder)
    while not where.exists() and where != where.parent:
        where = where.parent
    free = shutil.disk_usage(where).free
    if need > free:
        raise DataError(
            f"the feature cache needs {need / 1e9:.2f} GB in {folder} but only {free / 1e9:.2f} GB are free there; "
            "shrink it with --train-per-class N (images per label), --pool 1, --cache-dtype float16 or fewer --points, "
            "or point PRUNE_SNR_CACHE at a larger disk"
        )


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (0 when it does not exist)."""
    return sum(f.stat().st_size for f in Path(folder).rglob("*") if f.is_file())


def load_cached(folder: Path, points: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray] | None:
    if not (folder / "done.json").is_file():
        return None
    feats = {p: np.load(folder / f"{i}.npy", mmap_mode="r") for i, p in enumerate(points)}
    return feats, np.load(folder / "targets.npy")


@torch.no_grad()
def extract(
    model: nn.Module,
    dataset,
    points: list[str],
    *,
    pool: int,
    folder: Path,
    batch_size: int = 256,
    device: torch.device = torch.device("cpu"),
    amp: bool = False,
    channels_last: bool = False,
    workers: int | None = None,
    dtype: str = "float32",
    progress=None,
    description: str = "features",
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Run ``model`` once over ``dataset`` and return ``({point: N x C x p*p}, targets)``.

    The arrays are memory-mapped ``.npy`` files in ``folder``; an existing complete cache there
    is returned as it is, else it is written beside ``folder`` and published by one rename (see
    the module's docstring). Under torchrun each rank passes over a contiguous shard of the same
    temporary folder and rank 0 joins the shards and publishes (the cache folder must then be on a
    filesystem every node sees).
    """
    if broadcast_object((folder / "done.json").is_file() if is_main() else None):  # rank 0 decides for every rank
        return load_cached(folder, points)
    tmp = _private_folder(folder)
    model.eval().to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    run = dict(
        pool=pool,
        batch_size=batch_size,
        device=device,
        amp=amp,
        channels_last=channels_last,
        workers=workers,
        dtype=np.dtype(dtype),
        progress=progress,
        description=description,
    )
    try:
        probe = first_image(dataset) if torch.device(device).type == "cpu" else None  # a GPU runs as it is: no read
        with cpu_channels_last(model, probe):  # before the pass's hooks: the probe is not a batch
            _sharded_pass(model, dataset, points, tmp, run)
        if is_main():
            atomic_save_json(tmp / "done.json", {"points": points, "pool": pool, "n": len(dataset)})
            _publish(tmp, folder)
    finally:
        if is_main():
            shutil.rmtree(tmp, ignore_errors=True)  # a loser's copy, or the pieces of a failed pass
    barrier()
    return load_cached(folder, points)


def _private_folder(folder: Path) -> Path:
    """The temporary folder every rank writes ``folder``'s entry into, named by rank 0 (which first makes the parent
    and drops the orphans of killed processes)."""
    if is_main():
        folder.parent.mkdir(parents=True, exist_ok=True)
        _drop_orphans(folder)
    return Path(
        broadcast_object(
            str(folder.parent / f".{folder.name}.tmp-{_owner()}-{uuid.uuid4().hex[:8]}") if is_main() else None
        )
    )


def _sharded_pass(model: nn.Module, dataset, points: list[str], tmp: Path, run: dict) -> None:
    """One pass over ``dataset`` into ``tmp``: the whole of it outside torchrun; under it each rank passes over a
    contiguous shard into ``tmp/partRANK`` and rank 0 joins the shards."""
    rank, size = world()
    if size == 1:
        _pass(model, dataset, points, tmp, **run)
        return
    n = len(dataset)
    _pass(
        model,
        Subset(dataset, range(rank * n // size, (rank + 1) * n // size)),
        points,
        tmp / f"part{rank}",
        **run,
    )
    barrier()
    if is_main():
        _join([tmp / f"part{r}" for r in range(size)], tmp, len(points))


def _owner() -> str:
    """``HOST-PID``: who writes a temporary cache folder (see :func:`_drop_orphans`)."""
    return f"{socket.gethostname()}-{os.getpid()}"


def _publish(tmp: Path, folder: Path) -> None:
    """Make the complete entry ``tmp`` visible as ``folder`` with one rename; the first one published wins."""
    for _ in range(3):
        try:
            os.rename(tmp, folder)  # atomic; fails on a non-empty folder, so a published entry is never replaced
            return
        except OSError:
            if (folder / "done.json").is_file():
                return  # another process published first: ours is discarded, theirs is read
            # an entry written in place (not through a temporary folder): move it aside whole, then drop it
            stale = folder.parent / f".{folder.name}.stale-{uuid.uuid4().hex[:8]}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(folder, stale)
                shutil.rmtree(stale, ignore_errors=True)
    raise DataError(f"could not publish the feature cache entry {folder}; remove that folder and run again")


def _drop_orphans(folder: Path) -> None:
    """Remove temporary folders of ``folder`` left by killed processes of this host."""
    host = socket.gethostname()
    for tmp in folder.parent.glob(f".{folder.name}.tmp-{host}-*"):
        pid = tmp.name.removeprefix(f".{folder.name}.tmp-{host}-").split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(tmp, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _npy_writer(path: Path, dtype: np.dtype, shape: tuple[int, ...]):
    """A ``.npy`` file opened for appending rows with plain writes. (A write-mode memmap keeps every
    written page mapped into the process, so its RSS grew to the whole cache: 12 GB for EfficientNet-B0
    --expanded on Fashion-MNIST.)"""
    f = open(path, "wb")
    np.lib.format.write_array_header_1_0(
        f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape}
    )
    return f


def _pass(
    model,
    dataset,
    points,
    folder: Path,
    *,
    pool,
    batch_size,
    device,
    amp,
    channels_last,
    workers,
    dtype,
    progress,
    description,
):
    """One pass of ``model`` over ``dataset`` into ``folder``: each point's pooled features cast to the cache dtype on
    the device, copied to the host without waiting, and written by a background thread while the next batch runs."""
    folder.mkdir(parents=True, exist_ok=True)
    n = len(dataset)
    targets = np.empty(n, dtype=np.int64)
    offset = 0
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, workers=workers)
    cast = torch.from_numpy(np.zeros(0, dtype=dtype)).dtype
    with _Writer(folder, dtype, n) as writer, capture(model, points, pool) as store:
        for x, y in track(progress, loader, description):
            x = x.to(device, non_blocking=True)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with autocast(device, amp):
                model(x)
            writer.put([store[name].to(cast).to("cpu", non_blocking=True) for name in points])
            targets[offset : offset + len(y)] = y.numpy()
            offset += len(y)
    np.save(folder / "targets.npy", targets)


class _Writer:
    """Appends each batch's features to the points' ``.npy`` files on a thread of its own (at most two batches
    queued), after the batch's copies from the device are done; its first error is raised in the caller."""

    def __init__(self, folder: Path, dtype: np.dtype, n: int):
        self.folder, self.dtype, self.n = folder, dtype, n
        self.files: dict[int, object] = {}
        self.queue: queue.Queue = queue.Queue(maxsize=2)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._work, name="feature-writer", daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def put(self, outputs: list[torch.Tensor]) -> None:
        done = None
        if any(o.is_pinned() for o in outputs):  # copies from a GPU still under way
            done = torch.cuda.Event()
            done.record()
        self._raise()
        self.queue.put((outputs, done))

    def _work(self) -> None:
        while (item := self.queue.get()) is not None:
            if self.error is not None:
                continue  # drain: the caller raises at its next put or at the end
            outputs, done = item
            try:
                if done is not None:
                    done.synchronize()
                for i, out in enumerate(outputs):
                    if i not in self.files:
                        self.files[i] = _npy_writer(self.folder / f"{i}.npy", self.dtype, (self.n, *out.shape[1:]))
                    np.ascontiguousarray(out.numpy()).tofile(self.files[i])
            except BaseException as err:  # noqa: BLE001 - handed to the caller
                self.error = err

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def __exit__(self, *exc) -> None:
        self.queue.put(None)
        self.thread.join()
        for f in self.files.values():
            f.close()
        if exc[0] is None:
            self._raise()


def _join(parts: list[Path], folder: Path, n_points: int) -> None:
    """Concatenate the ranks' feature shards into one cache, point by point, dropping each point's shards as soon as
    they are joined: the disk holds at most one point twice (:func:`join_headroom`), never the whole cache."""
    missing = [p for p in parts if not (p / "targets.npy").is_file()]
    if missing:
        raise DataError(
            f"feature shard {missing[0]} is not visible from rank 0: put the cache (PRUNE_SNR_CACHE) on a filesystem "
            "shared by every node"
        )
    targets = [np.load(p / "targets.npy") for p in parts]
    np.save(folder / "targets.npy", np.concatenate(targets))
    total = sum(len(t) for t in targets)
    for i in range(n_points):
        pieces = [np.load(p / f"{i}.npy", mmap_mode="r") for p in parts]
        with _npy_writer(folder / f"{i}.npy", pieces[0].dtype, (total, *pieces[0].shape[1:])) as joined:
            for piece in pieces:
                for start in range(0, len(piece), 4096):  # bounded chunks: the shards stay on disk
                    np.ascontiguousarray(piece[start : start + 4096]).tofile(joined)
        del pieces
        for p in parts:
            (p / f"{i}.npy").unlink()
    for p in parts:
        shutil.rmtree(p)
