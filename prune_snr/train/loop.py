"""Training and fine-tuning: SGD + momentum, OneCycle/cosine, per-epoch atomic checkpoints.

``fit`` is shared by ``prune-snr train`` and the fine-tuning step of ``prune-snr prune``.
Every epoch reseeds the shuffle and augmentation RNGs from ``(seed, epoch)``, so a run
resumed from its last checkpoint replays exactly the epochs it had left.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import torch
from timm.optim import param_groups_weight_decay
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Sampler, Subset

from ..checkpoint import load_checkpoint, save_checkpoint
from ..errors import CheckpointError, ConfigError, TrainingError
from ..progress import describe, track
from ..runtime import (
    autocast,
    barrier,
    cpu_channels_last,
    first_image,
    make_loader,
    resolve_device,
    rng_state,
    set_rng_state,
    tune_convolutions,
    world,
)

LOSS_CHECK_EVERY = 20


class GlobalBatchShards(Sampler[list[int]]):
    """Rank ``rank``'s slice of every global batch of the single-process shuffled loader.

    The global order is the one ``make_loader(..., shuffle=True, seed=seed)`` yields, so a torchrun
    job sees the same batches as one process, split between the ranks.
    """

    def __init__(self, dataset, *, batch_size: int, seed: int, rank: int, world_size: int):
        self.dataset, self.batch_size, self.seed, self.rank, self.world_size = (
            dataset,
            batch_size,
            seed,
            rank,
            world_size,
        )

    def __iter__(self):
        # Shuffle indices through the very loader one process would use (same RNG draws).
        indices = make_loader(
            range(len(self.dataset)),
            batch_size=self.batch_size,
            shuffle=True,
            seed=self.seed,
            drop_last=True,
            workers=0,
        )
        share = self.batch_size // self.world_size
        for batch in indices:
            yield batch[self.rank * share : (self.rank + 1) * share].tolist()

    def __len__(self) -> int:
        return len(self.dataset) // self.batch_size


def train_loader(dataset, *, batch_size: int, seed: int, workers: int | None = None) -> DataLoader:
    """Shuffled, drop-last batches; under torchrun each rank gets ``batch_size / world`` of every batch.

    One loader per epoch, its workers new: they are seeded from the epoch's reseeded RNG, so a resumed run
    augments as the uninterrupted one did (a worker start costs about a second, an epoch at scale minutes).
    """
    rank, size = world()
    if size == 1:
        return make_loader(dataset, batch_size=batch_size, shuffle=True, workers=workers, seed=seed, drop_last=True)
    if batch_size % size:
        raise ConfigError(
            f"--batch-size {batch_size} is not divisible by the {size} torchrun processes; use a multiple of {size}"
        )
    if len(dataset) < batch_size:
        raise ConfigError(
            f"the training set has {len(dataset)} images, fewer than --batch-size {batch_size}; lower --batch-size"
        )
    sampler = GlobalBatchShards(dataset, batch_size=batch_size, seed=seed, rank=rank, world_size=size)
    return make_loader(dataset, batch_size=batch_size, shuffle=False, workers=workers, batch_sampler=sampler)


def all_sum(*values: torch.Tensor) -> list[torch.Tensor]:
    """Sum tensors over the torchrun processes (as they are outside a process group)."""
    if world()[1] == 1:
        return list(values)
    packed = torch.stack([v.detach().double().cpu() for v in values])
    if dist.get_backend() == "nccl":
        packed = packed.cuda()
    dist.all_reduce(packed)
    return [p.cpu() for p in packed]


def shard(dataset):
    """This rank's share of ``dataset`` (every ``world``-th item from ``rank``)."""
    rank, size = world()
    return dataset if size == 1 else Subset(dataset, range(rank, len(dataset), size))


def _to(x: torch.Tensor, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = x.to(device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset,
    *,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    amp: bool = False,
    channels_last: bool = False,
    workers: int | None = None,
    progress=None,
) -> dict:
    """Loss and top-1 accuracy of ``model`` on ``dataset`` (sharded over torchrun processes)."""
    device = resolve_device(device) if isinstance(device, str) else device
    model.to(device)
    was_training = model.training
    model.eval()
    # sums stay on the device: no host sync per batch (a GPU would wait on each .item())
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    loader = make_loader(shard(dataset), batch_size=batch_size, shuffle=False, workers=workers)
    with cpu_channels_last(model, first_image(dataset) if device.type == "cpu" else None):  # no read for a GPU
        for x, y in track(progress, loader, "evaluate"):
            x, y = _to(x, device, channels_last), y.to(device)
            with autocast(device, amp):
                logits = model(x)
            loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
    loss_sum, correct = loss_sum.item(), correct.item()
    model.train(was_training)
    if world()[1] > 1:
        loss_sum, correct, seen = (v.item() for v in all_sum(*map(torch.tensor, (loss_sum, correct, seen))))
    return {"loss": loss_sum / seen, "accuracy": round(correct) / round(seen)}


def _scheduler(name: str, optimizer, *, lr: float, epochs: int, steps_per_epoch: int):
    total = epochs * steps_per_epoch
    if name == "onecycle" and total >= 3:
        # a warm-up of at least 2 steps: OneCycleLR divides by (warm-up steps - 1), so tiny runs need a longer share
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=lr, total_steps=total, pct_start=max(0.25, 2 / total)
        )
    if name in ("onecycle", "cosine"):
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total, 1))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)


def fit(
    model: nn.Module,
    train_set,
    test_set,
    opts,
    *,
    checkpoint_path: str | Path | None = None,
    checkpoint_extra: dict | None = None,
    resume: bool = False,
    teacher: nn.Module | None = None,
    distill_temperature: float = 4.0,
    distill_alpha: float = 0.5,
    progress=None,
    on_epoch: Callable[[dict], None] | None = None,
) -> list[dict]:
    """Train ``model`` in place for ``opts.epochs``; return one record per epoch.

    Args:
        opts: any object with ``epochs, batch_size, lr, momentum, weight_decay, schedule,
            label_smoothing, seed, device, amp, channels_last, workers`` (e.g. ``TrainConfig``).
        checkpoint_path: where to write ``{'model', 'optimizer', 'scheduler', 'epoch', 'rng',
            'history', **checkpoint_extra}`` after every epoch (atomically).
        resume: continue from ``checkpoint_path`` if it exists.
        teacher: if given, distill from it (KL at ``distill_temperature``, weight ``distill_alpha``).
        on_epoch: called with each epoch's record after its checkpoint is written.

    Raises:
        TrainingError: the loss became NaN/inf; the last good checkpoint is kept.
    """
    device, net = _place(model, teacher, opts)
    optimizer, scheduler = _optimisation(model, train_set, opts)
    start, history = 0, []
    if resume and checkpoint_path and Path(checkpoint_path).is_file():
        start, history = _resume(checkpoint_path, model, optimizer, scheduler)
    loss_of = _Loss(opts.label_smoothing, teacher, distill_temperature, distill_alpha)
    for epoch in range(start, opts.epochs):
        loader = _epoch_loader(train_set, opts, epoch)
        t0 = time.perf_counter()
        loss_sum, correct, seen = _train_epoch(
            net,
            loader,
            optimizer,
            scheduler,
            loss_of,
            opts,
            device=device,
            progress=progress,
            epoch=epoch,
            checkpoint_path=checkpoint_path,
        )
        seconds = time.perf_counter() - t0
        history.append(_record(model, test_set, opts, epoch, loss_sum, correct, seen, seconds, device, progress))
        if checkpoint_path:
            _save_epoch(checkpoint_path, checkpoint_extra, model, optimizer, scheduler, epoch, history)
        if on_epoch:
            on_epoch(history[-1])
    model.to(memory_format=torch.contiguous_format)
    return history


def _epoch_loader(train_set, opts, epoch: int) -> DataLoader:
    """This epoch's training batches, after reseeding from ``(seed, epoch)``: a resumed run sees the same shuffles and
    augmentations (the loader's workers are seeded from the reseeded RNG, so the seed must come first)."""
    torch.manual_seed(opts.seed * 100_003 + epoch + 7919 * world()[0])
    return train_loader(train_set, batch_size=opts.batch_size, seed=opts.seed * 100_003 + epoch, workers=opts.workers)


def _record(
    model: nn.Module,
    test_set,
    opts,
    epoch: int,
    loss_sum: torch.Tensor,
    correct: torch.Tensor,
    seen: int,
    seconds: float,
    device: torch.device,
    progress,
) -> dict:
    """The epoch's record: its training loss and accuracy summed over the ranks, and the test split's."""
    loss_sum, correct, seen = all_sum(loss_sum, correct, torch.tensor(seen))
    seen = round(seen.item())
    test = evaluate(
        model,
        test_set,
        batch_size=max(256, opts.batch_size),
        device=device,
        amp=opts.amp,
        channels_last=opts.channels_last,
        workers=opts.workers,
        progress=progress,
    )
    return {
        "epoch": epoch + 1,
        "train_loss": loss_sum.item() / seen,
        "train_accuracy": correct.item() / seen,
        "test_loss": test["loss"],
        "test_accuracy": test["accuracy"],
        "seconds": seconds,
        "images_per_second": seen / seconds,
    }


def _save_epoch(
    checkpoint_path: str | Path, extra: dict | None, model: nn.Module, optimizer, scheduler, epoch: int, history: list
) -> None:
    """Write the resumable checkpoint after ``epoch``, then wait for every rank."""
    save_checkpoint(
        checkpoint_path,
        {
            **(extra or {}),
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "epoch": epoch + 1,
            "rng": rng_state(),
            "history": history,
        },
    )
    barrier()  # every rank may read the checkpoint (resume) once it is complete


def _place(model: nn.Module, teacher: nn.Module | None, opts) -> tuple[torch.device, nn.Module]:
    """The device, with the model (and the teacher) on it in training's memory layout; and the network a step calls
    (the model, or its DistributedDataParallel wrapper under torchrun)."""
    device = resolve_device(opts.device)
    tune_convolutions(device)
    memory_format = torch.channels_last if opts.channels_last else torch.contiguous_format
    model.to(device, memory_format=memory_format)
    if teacher is not None:
        teacher.to(device, memory_format=memory_format).eval()
    if world()[1] > 1:
        return device, DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return device, model


def _optimisation(model: nn.Module, train_set, opts):
    """SGD with Nesterov momentum, no weight decay on biases and norm parameters (timm's grouping), and its
    per-step learning-rate schedule."""
    optimizer = torch.optim.SGD(
        param_groups_weight_decay(model, opts.weight_decay),
        lr=opts.lr,
        momentum=opts.momentum,
        nesterov=opts.momentum > 0,
    )
    steps = len(train_loader(train_set, batch_size=opts.batch_size, seed=opts.seed))
    if steps == 0 and opts.epochs > 0:
        raise ConfigError(
            f"the training set has {len(train_set)} images, fewer than one batch (--batch-size {opts.batch_size}); "
            "lower --batch-size"
        )
    return optimizer, _scheduler(opts.schedule, optimizer, lr=opts.lr, epochs=opts.epochs, steps_per_epoch=steps)


def _resume(checkpoint_path: str | Path, model: nn.Module, optimizer, scheduler) -> tuple[int, list[dict]]:
    """Load a resumable checkpoint into the model, optimizer, scheduler and RNGs: ``(epochs done, their records)``."""
    state = load_checkpoint(checkpoint_path)
    for key in ("optimizer", "scheduler", "epoch"):
        if key not in state:
            raise CheckpointError(f"{checkpoint_path} has no {key!r}: it is a final model, not a resumable checkpoint")
    model.load_state_dict(state["model"])
    try:
        optimizer.load_state_dict(state["optimizer"])
    except ValueError as err:  # parameter groups changed between prune-snr versions
        raise CheckpointError(
            f"{checkpoint_path}: its optimizer state does not fit this version's parameter "
            f"groups ({err}); start the run again in a new --out"
        ) from None
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return state["epoch"], list(state.get("history", []))


class _Loss:
    """Cross-entropy with label smoothing, blended with the KL divergence to a teacher's softened logits if given."""

    def __init__(self, label_smoothing: float, teacher: nn.Module | None, temperature: float, alpha: float):
        self.label_smoothing, self.teacher, self.temperature, self.alpha = label_smoothing, teacher, temperature, alpha

    def __call__(self, logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = F.cross_entropy(logits.float(), y, label_smoothing=self.label_smoothing)
        if self.teacher is None:
            return loss
        with torch.no_grad():
            soft = F.softmax(self.teacher(x).float() / self.temperature, dim=1)
        kd = F.kl_div(F.log_softmax(logits.float() / self.temperature, dim=1), soft, reduction="batchmean")
        return (1 - self.alpha) * loss + self.alpha * self.temperature**2 * kd


def _train_epoch(
    net: nn.Module,
    loader,
    optimizer,
    scheduler,
    loss_of: _Loss,
    opts,
    *,
    device: torch.device,
    progress,
    epoch: int,
    checkpoint_path,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One pass over ``loader``: ``(loss sum, correct, images)`` on this rank; a non-finite loss
    stops it in one line."""
    label = f"epoch {epoch + 1}/{opts.epochs}"
    net.train()
    t0 = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    for step, (x, y) in enumerate(track(progress, loader, label), 1):
        x, y = _to(x, device, opts.channels_last), y.to(device, non_blocking=True)
        with autocast(device, opts.amp):
            logits = net(x)
            loss = loss_of(logits, x, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if step % LOSS_CHECK_EVERY == 0 or step == len(loader):
            mean_loss = loss_sum.item() / seen
            if not math.isfinite(mean_loss):
                kept = checkpoint_path and Path(checkpoint_path).exists()
                raise TrainingError(
                    f"loss became {mean_loss} in epoch {epoch + 1}, step {step}; lower --lr"
                    + (f" (last good checkpoint kept: {checkpoint_path})" if kept else "")
                )
            describe(
                progress,
                f"{label} loss {mean_loss:.3f} acc {correct.item() / seen:.3f} "
                f"{seen / (time.perf_counter() - t0):.0f} img/s",
            )
    return loss_sum, correct, seen
