"""Channel pruning to the target: torch-pruning's steps, or ``--remeasure``'s steps with a measurement between them."""

from __future__ import annotations

import time
from typing import Callable

from torch import nn

from ..choices import MEASURED_CRITERIA, NEEDS_GRADIENTS
from ..latency import LatencyMeter
from ..measure import Measurement
from ..models import prunable_base
from ..runtime import make_loader
from .importance import build_importance
from .measuring import remeasure
from .plan import Context
from .target import TOLERANCE, Allocation, PruneOutcome, prune_to_target

#: ``(model, measurement, target, steps, latency meter) -> PruneOutcome``: one pruning of ``model`` to ``target``.
ToTarget = Callable[..., PruneOutcome]


def prune_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """Prune the channels of ``model`` (the original, or what the cut and dropped blocks left) so that
    ``--target`` counts from the original model: what a cut removed is not removed twice.

    With ``--remeasure`` the ``--iterative-steps`` each remove an equal share, and between steps the
    pruned model is measured anew (:func:`remeasured_steps`); otherwise torch-pruning's own
    iterative steps run on the one measurement. Hands on the pruning history; reports the search
    (``search``) and what the cut left for channels.
    """
    cfg, original = ctx.cfg, ctx.original
    to_target = _to_target(ctx)
    meter = LatencyMeter(model, batch=cfg.latency_batch) if cfg.metric == "latency" else None
    try:
        if meter and model is not original:
            reference = LatencyMeter(original, batch=cfg.latency_batch)
            cut_kept = reference.fraction(model)
            reference.close()
        elif meter:
            cut_kept = 1.0
        else:
            cut_kept = prunable_base(model, cfg.metric) / prunable_base(original, cfg.metric)
        base_target = 1 - (1 - cfg.target) / cut_kept
        if base_target <= TOLERANCE:
            pruned, history, steps = model, [], None
            search = {
                "ratio": 0.0,
                "removed": 1 - cut_kept,
                "trials": 0,
                "fallback_groups": [],
                "note": "truncation alone (or with dropped blocks) meets the target; no channel pruned",
            }
        else:
            if cfg.remeasure:
                outcome, steps = remeasured_steps(
                    model,
                    ctx.measurement,
                    to_target,
                    lambda m, previous: remeasure(ctx, m, previous),
                    base_target=base_target,
                    metric=cfg.metric,
                    steps=cfg.iterative_steps,
                )
            else:
                outcome, steps = to_target(model, ctx.measurement, base_target, cfg.iterative_steps, meter), None
            pruned, history = outcome.model, outcome.history
            search = {
                "ratio": outcome.ratio,
                "removed": 1 - (1 - outcome.removed) * cut_kept,
                "trials": outcome.trials,
                "fallback_groups": outcome.fallback_groups,
                **({"remeasured_steps": steps} if steps else {}),
                **({"unreached": outcome.unreached} if outcome.unreached else {}),
            }
    finally:
        if meter:
            meter.close()
    ctx.history = history
    part = {"search": search}
    if ctx.report.get("truncation") and model is not original:
        part["truncation"] = {**ctx.report["truncation"], "target_left_for_channels": max(0.0, base_target)}
    return pruned, part


def _to_target(ctx: Context) -> ToTarget:
    """One pruning to a target with this run's criterion, allocation and alignment, reading a given measurement."""
    cfg, splits = ctx.cfg, ctx.splits
    gradient_batches = None
    if cfg.criterion in NEEDS_GRADIENTS:
        loader = make_loader(splits.plain, batch_size=64, shuffle=True, seed=cfg.seed)
        gradient_batches = [batch for batch, _ in zip(loader, range(4))]
    reduction = {"group_reduction": cfg.group_reduction} if cfg.criterion in MEASURED_CRITERIA else {}

    def to_target(model: nn.Module, m: Measurement | None, step_target: float, steps: int, meter=None) -> PruneOutcome:
        trunk = m.trunk() if m else None
        alloc = Allocation(
            cfg.allocation,
            [p["name"] for p in trunk.points] if m else None,
            trunk.val_accuracies() if m else None,
            splits.num_classes,
            snrs=[p["snr"] for p in trunk.points] if m else None,
        )
        return prune_to_target(
            model,
            lambda pm: build_importance(cfg.criterion, model=pm, measurement=m, seed=cfg.seed, **reduction),
            target=step_target,
            metric=cfg.metric,
            allocation=alloc,
            round_to=None if cfg.round_to == 1 else cfg.round_to,
            iterative_steps=steps,
            gradient_batches=gradient_batches,
            latency=meter,
            progress=ctx.progress,
            exact=cfg.exact_target,
            graph_timeout=cfg.graph_timeout,
        )

    return to_target


def remeasured_steps(
    base: nn.Module,
    measurement: Measurement,
    to_target: ToTarget,
    remeasure: Callable[[nn.Module, Measurement], Measurement],
    *,
    base_target: float,
    metric: str,
    steps: int,
) -> tuple[PruneOutcome, list[dict]]:
    """``steps`` prunings of ``base``, each to ``base_target * step / steps`` of its prunable ``metric``,
    re-measuring between them."""
    total = prunable_base(base, metric)
    model, history, fallback, trials, rows = base, [], set(), 0, []
    for step in range(1, steps + 1):
        if step > 1:
            t0 = time.perf_counter()
            measurement = remeasure(model, measurement)
            rows[-1]["remeasure_s"] = time.perf_counter() - t0
        goal = 1 - base_target * step / steps  # kept fraction of base after this step
        outcome = to_target(model, measurement, 1 - goal * total / prunable_base(model, metric), 1)
        model, trials = outcome.model, trials + outcome.trials
        history += outcome.history
        fallback.update(outcome.fallback_groups)
        rows.append(
            {
                "step": step,
                "ratio": outcome.ratio,
                "removed": 1 - prunable_base(model, metric) / total,
                "filters": [p["n_filters"] for p in measurement.points],
                "val_accuracies": measurement.val_accuracies(),
            }
        )
    removed = 1 - prunable_base(model, metric) / total
    return PruneOutcome(
        model=model,
        ratio=outcome.ratio,
        removed=removed,
        history=history,
        fallback_groups=sorted(fallback),
        trials=trials,
    ), rows
