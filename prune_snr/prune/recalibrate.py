"""BatchNorm recalibration after pruning (EagleEye's "adaptive BN", ECCV 2020).

A pruned network keeps the running statistics of the unpruned one, which no longer describe its
activations: right after pruning it scores near chance whatever filters were kept, so its accuracy
says nothing about the pruning. Re-estimating the statistics on a few training batches, without
gradients, brings back an accuracy that ranks prunings (``prune --bn-recalibrate N``).

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    >>> data = [(torch.randn(8, 1, 6, 6) * 3 + 1, torch.zeros(8, dtype=torch.long)) for _ in range(4)]
    >>> recalibrate_batchnorm(net, data, batches=4)
    4
    >>> bool(net[1].running_var.mean() > 1.5), net.training
    (True, False)
"""

from __future__ import annotations

import itertools

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..runtime import cpu_channels_last, make_loader, resolve_device
from .plan import Context
from .report import grade


def _norms(model: nn.Module) -> list[_BatchNorm]:
    return [m for m in model.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]


def _statistics(m: _BatchNorm) -> list[torch.Tensor]:
    return [b for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]


def has_batchnorm(model: nn.Module) -> bool:
    """Whether ``model`` has a BatchNorm with running statistics to re-estimate."""
    return bool(_norms(model))


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, data, *, batches: int, device: str | torch.device = "cpu") -> int:
    """Reset every BatchNorm's running statistics and re-estimate them as the plain average over ``batches``
    batches of ``data`` (an iterable of ``(images, labels)``); the rest of the model stays in eval mode (no
    dropout). Leaves ``model`` in eval mode; returns the number of batches read (0: no BatchNorm, nothing read).
    A pass that fails (a bad batch, an interrupt) leaves the statistics as they were."""
    norms = _norms(model)
    if not norms or batches < 1:
        return 0
    momenta = [m.momentum for m in norms]
    before = [[b.clone() for b in _statistics(m)] for m in norms]
    model.eval()
    seen = 0
    try:
        batches_read = iter(data)
        first = next(batches_read, None)
        # the layouts are compared on the statistics as they were, before the reset
        with cpu_channels_last(model, first[0][0] if first is not None else None):
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # a cumulative average: every batch weighs the same
                m.train()
            for images, _ in itertools.chain([first] if first is not None else [], batches_read):
                if seen == batches:
                    break
                model(images.to(device))
                seen += 1
    except BaseException:
        for m, saved in zip(norms, before):
            for buffer, value in zip(_statistics(m), saved):
                buffer.copy_(value)
        raise
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.eval()
    return seen


def recalibrate_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """With ``--bn-recalibrate N``: grade the pruned model as it is, re-estimate its BatchNorm statistics on N
    batches of the training split (validation rows excluded), and report both; the grade after pruning
    (``pruned_before_finetune``, what keep-best compares with) is then the recalibrated one."""
    cfg = ctx.cfg
    if not cfg.bn_recalibrate or not has_batchnorm(model):
        return model, {}
    without = grade(model, ctx.splits, cfg.device)
    device = resolve_device(cfg.device)
    loader = make_loader(ctx.splits.train, batch_size=cfg.batch_size, shuffle=True, seed=cfg.seed, drop_last=True)
    # the batches' augmentation draws from the global generator, whose state here depends on what ran before and
    # is not the same from run to run: seeding it for this pass alone makes the statistics the seed's
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(cfg.seed)
        read = recalibrate_batchnorm(model.to(device), loader, batches=cfg.bn_recalibrate, device=device)
    return model.cpu(), {"bn_recalibration": {"batches": read, "without": without}}
