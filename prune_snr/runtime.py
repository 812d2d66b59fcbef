"""Device choice, torchrun process groups, seeding, RNG state, data loaders and autocast: shared by every stage.

Under ``torchrun`` every process runs the same code on its share of the data: training and
fine-tuning through DistributedDataParallel (each rank takes ``batch_size / world`` of every
global batch), evaluation and the measurement's feature pass on disjoint shards summed with
all-reduce. Everything else (pruning, heads, field matrices) is deterministic and repeated on
each rank, and only rank 0 writes artifacts.
"""
from __future__ import annotations

import contextlib
import os
import random

import numpy as np
import torch
from torch import distributed as dist
from torch.utils.data import DataLoader

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True except on torchrun's ranks 1..N-1 (before, inside and after their process group)."""
    return world()[0] == 0 and int(os.environ.get("RANK", "0")) == 0


def barrier() -> None:
    if world()[1] > 1:
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself outside a process group)."""
    if world()[1] == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def distributed(device: str = "auto"):
    """Join the process group that ``torchrun`` describes (NCCL on GPU, gloo on CPU) for the block.

    Outside torchrun (``WORLD_SIZE`` unset or 1) this does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def resolve_device(name: str = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda[:N]`` into a device, refusing CUDA where none exists.

    In a torchrun job ``auto``/``cuda`` mean this process's own GPU (``LOCAL_RANK``); ``cuda:N`` would put every
    rank on GPU N, so it is refused there.
    """
    if name.startswith("cuda:") and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError(f"--device {name} under torchrun puts every rank on GPU {name.partition(':')[2]}; use --device cuda "
                          "(each rank its own LOCAL_RANK GPU) and choose GPUs with CUDA_VISIBLE_DEVICES")
    if name in ("auto", "cuda") and torch.cuda.is_available() and world()[1] > 1:
        return torch.device("cuda", torch.cuda.current_device())
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name}: no CUDA device is visible here; use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"--device {name!r} is not one of {', '.join(DEVICES)}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict:
    """RNG state as plain types and tensors, so ``torch.load(weights_only=True)`` accepts it."""
    np_state = np.random.get_state()
    state = {
        "python": list(random.getstate()[1]),
        "python_pos": random.getstate()[2],
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), state["python_pos"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def make_loader(dataset, *, batch_size: int, shuffle: bool, workers: int = 0, seed: int = 0, drop_last: bool = False) -> DataLoader:
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=workers,
        generator=generator,
        drop_last=drop_last and len(dataset) > batch_size,
        persistent_workers=False,
        pin_memory=torch.cuda.is_available(),
    )


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
