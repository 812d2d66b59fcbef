"""Device choice, torchrun process groups, seeding, RNG state, data loaders and autocast: shared by every stage.

Under ``torchrun`` every process runs the same code on its share of the data: training and
fine-tuning through DistributedDataParallel (each rank takes ``batch_size / world`` of every
global batch), evaluation and the measurement's feature pass on disjoint shards summed with
all-reduce. The decisions are made once: rank 0 alone trains the heads, computes the field
matrices, searches the pruning ratio and times latency, and broadcasts what the other ranks need;
only rank 0 writes artifacts.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import os
import random

import numpy as np
import torch
from torch import distributed as dist
from torch import nn
from torch.utils.data import DataLoader

from .errors import ConfigError

DEVICES = ("auto", "cpu", "cuda")
#: Seconds a torchrun rank waits for the others at a collective: rank 0 alone trains the heads, computes the fields
#: and joins the feature cache while the others wait (hours at ImageNet scale); NCCL's own default is 10 minutes.
DIST_TIMEOUT = 4 * 3600.0


def world() -> tuple[int, int]:
    """``(rank, world size)`` of this process; ``(0, 1)`` outside a process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    """True except on torchrun's ranks 1..N-1 (before, inside and after their process group)."""
    return world()[0] == 0 and int(os.environ.get("RANK", "0")) == 0


_ALONE: contextvars.ContextVar[bool] = contextvars.ContextVar("rank_zero_alone", default=False)


@contextlib.contextmanager
def rank_zero_alone():
    """A block only rank 0 runs (its result broadcast afterwards): collectives inside it are no-ops."""
    token = _ALONE.set(True)
    try:
        yield
    finally:
        _ALONE.reset(token)


def barrier() -> None:
    if world()[1] > 1 and not _ALONE.get():
        dist.barrier()


def broadcast_object(obj):
    """Rank 0's ``obj`` on every rank (``obj`` itself outside a process group, or inside :func:`rank_zero_alone`)."""
    if world()[1] == 1 or _ALONE.get():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


@contextlib.contextmanager
def distributed(device: str = "auto", *, timeout: float = DIST_TIMEOUT):
    """Join the process group that ``torchrun`` describes (NCCL on GPU, gloo on CPU) for the block; a collective
    waits ``timeout`` seconds for the other ranks.

    Outside torchrun (``WORLD_SIZE`` unset or 1) this does nothing.
    """
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        yield
        return
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(seconds=timeout))
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
        raise ConfigError(
            f"--device {name} under torchrun puts every rank on GPU {name.partition(':')[2]}; use --device cuda "
            "(each rank its own LOCAL_RANK GPU) and choose GPUs with CUDA_VISIBLE_DEVICES"
        )
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


def tune_convolutions(device: torch.device) -> None:
    """On a GPU let cuDNN time its convolution algorithms once per input shape and keep the fastest (the passes over
    images repeat one shape). Convolutions already run in TF32 by PyTorch's default; matmuls stay float32, since the
    heads and field matrices are read to the fourth decimal."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


@contextlib.contextmanager
def cpu_channels_last(model: nn.Module, image: torch.Tensor | None):
    """Within the block a ``model`` on the CPU runs channels-last, if it gives the same outputs so on ``image`` (one
    ``C x H x W`` input): oneDNN's channels-last convolutions run VGG-16 about 1.5x and EfficientNet-B0 about 3.5x
    faster there (``benchmarks/channels_last.py``). A model that cannot (a ``view`` of its feature maps) or that is
    on a GPU runs as it is; after the block its 4-D weights are back in their own layout."""
    weights = {p: p.data for p in model.parameters() if p.dim() == 4}
    if image is None or not weights or next(iter(weights)).device.type != "cpu":
        yield
        return
    last = {p: w.to(memory_format=torch.channels_last) for p, w in weights.items()}
    # a 1x1 or depthwise weight is "contiguous" in either layout; what oneDNN reads is its strides
    if all(last[p].stride() == w.stride() for p, w in weights.items()):
        yield
        return
    before = _one_output(model, image)
    for p in weights:
        p.data = last[p]
    try:
        after = _one_output(model, image)
        same = isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor) and before.shape == after.shape
        if same and torch.allclose(before, after, rtol=1e-3, atol=1e-4):
            yield
            return
    finally:  # the weights the block read, in their own layout (nothing in the block writes them)
        for p, w in weights.items():
            p.data = w
    yield


def first_image(dataset) -> torch.Tensor | None:
    """The first image of a dataset of ``(image, label)``, or None where there is none to read (an empty or
    unindexable dataset, an item of another shape): what :func:`cpu_channels_last` compares outputs on."""
    # a random transform's draw here must not move what the caller draws next (transforms draw on the host)
    python, numpy, host = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        image = dataset[0][0] if len(dataset) else None
    except Exception:  # the pass itself reads the data its own way, and says what is wrong with it
        return None
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(host)
    return image if isinstance(image, torch.Tensor) and image.dim() == 3 else None


@contextlib.contextmanager
def modes_kept(model: nn.Module):
    """After the block every module of ``model`` is back in its own mode (each its own: a frozen BatchNorm stays in
    eval inside a model that trains)."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _one_output(model: nn.Module, image: torch.Tensor):
    """``model``'s output for a batch of two copies of one image (a view that holds for one image alone fails here
    too), in eval mode (no BatchNorm statistics move); each module's mode is kept."""
    with modes_kept(model), torch.no_grad():
        model.eval()
        try:
            return model(torch.stack([image, image]).to(next(model.parameters()).device))
        except Exception:  # e.g. a view that needs contiguous feature maps: the model runs as it is, and says so itself
            return None


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


_LOADER_WORKERS: contextvars.ContextVar[int | None] = contextvars.ContextVar("loader_workers", default=None)


def default_workers() -> int:
    """Loader worker processes where a command names none (``--workers``): none where no GPU is visible (they would
    take the cores the model computes on), else this node's cores shared among its torchrun ranks, less one for each
    rank's main process, at most 8 per rank (decoding and augmenting images keeps a GPU waiting otherwise)."""
    if not torch.cuda.is_available():
        return 0
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(0, min(8, (os.cpu_count() or 1) // ranks_here - 1))


@contextlib.contextmanager
def loader_workers(workers: int | None):
    """Every loader made in the block without its own ``workers`` uses ``workers`` (None: :func:`default_workers`).

    Example:
        >>> with loader_workers(0):
        ...     make_loader(range(10), batch_size=4, shuffle=False).num_workers
        0
    """
    token = _LOADER_WORKERS.set(workers)
    try:
        yield
    finally:
        _LOADER_WORKERS.reset(token)


def resolved_workers(workers: int | None = None) -> int:
    """``workers``, else the block's (:func:`loader_workers`), else :func:`default_workers`."""
    if workers is None:
        workers = _LOADER_WORKERS.get()
    return default_workers() if workers is None else workers


def make_loader(
    dataset,
    *,
    batch_size: int,
    shuffle: bool,
    workers: int | None = None,
    seed: int = 0,
    drop_last: bool = False,
    batch_sampler=None,
) -> DataLoader:
    """Batches of ``dataset``: worker processes as :func:`resolved_workers` says, 4 batches each in flight, pinned
    memory where a GPU is visible. Each loader serves one pass (training makes one per epoch, see ``train_loader``),
    so its workers do not persist."""
    workers = resolved_workers(workers)
    loading = {
        "num_workers": workers,
        "prefetch_factor": 4 if workers else None,
        "pin_memory": torch.cuda.is_available(),
    }
    if batch_sampler is not None:
        return DataLoader(dataset, batch_sampler=batch_sampler, **loading)
    generator = torch.Generator().manual_seed(seed) if shuffle else None
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        drop_last=drop_last and len(dataset) > batch_size,
        **loading,
    )


def autocast(device: torch.device, enabled: bool):
    if not enabled:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)
