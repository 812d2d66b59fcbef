"""Fine-tuning after pruning: :func:`fit` with SGD + cosine on the training split less its validation part.

The options are a :class:`TrainConfig` (so momentum, weight decay, label smoothing and the rest keep
the defaults written once there); only what fine-tuning sets itself differs from training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..config import FineTuneConfig, TrainConfig
from .loop import fit


def finetune_options(cfg: FineTuneConfig, *, batch_size: int, seed: int, device: str, amp: bool) -> TrainConfig:
    """The training options of fine-tuning: ``cfg``'s epochs, learning rate and weight decay on a cosine schedule
    (the pruned model starts trained: no warm-up), every other option at :class:`TrainConfig`'s default."""
    return TrainConfig(
        epochs=cfg.epochs,
        lr=cfg.lr,
        weight_decay=cfg.weight_decay,
        schedule="cosine",
        batch_size=batch_size,
        seed=seed,
        device=device,
        amp=amp,
    )


def seeded_part(dataset: Dataset, fraction: float, seed: int) -> Dataset:
    """A seeded ``fraction`` of ``dataset`` (all of it at 1): search trials fine-tune on a part, a cheap proxy."""
    if fraction >= 1:
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, order[: max(1, round(fraction * len(dataset)))].tolist())


def fine_tune(
    model: nn.Module,
    train_set: Dataset,
    test_set: Dataset,
    opts: TrainConfig,
    *,
    fraction: float = 1.0,
    checkpoint: Path | None = None,
    checkpoint_extra: dict | None = None,
    resume: bool = False,
    teacher: nn.Module | None = None,
    progress=None,
) -> None:
    """Fine-tune ``model`` in place with ``opts`` (:func:`finetune_options`) on a seeded ``fraction`` of
    ``train_set``; nothing at 0 epochs. ``checkpoint``, ``resume`` and ``teacher`` (distillation) are :func:`fit`'s.

    Example:
        >>> from prune_snr import build_dataset, build_model
        >>> model = build_model("vgg16", num_classes=10, width_mult=0.125)
        >>> opts = finetune_options(FineTuneConfig(epochs=1), batch_size=64, seed=0, device="cpu", amp=False)
        >>> fine_tune(
        ...     model, build_dataset("synthetic", "train"), build_dataset("synthetic", "test"), opts, fraction=0.2
        ... )
    """
    if opts.epochs <= 0:
        return
    fit(
        model,
        seeded_part(train_set, fraction, opts.seed),
        test_set,
        opts,
        checkpoint_path=checkpoint,
        checkpoint_extra=checkpoint_extra,
        resume=resume,
        teacher=teacher,
        progress=progress,
    )
