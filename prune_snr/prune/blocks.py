"""``--drop-blocks``: drop residual blocks while the model stays within δ of the full model on validation.

The mechanics (which blocks have an identity shortcut, the model without them) live in
:mod:`prune_snr.models.blocks`; this stage decides which to drop.
"""

from __future__ import annotations

import copy

from torch import nn

from ..errors import ConfigError
from ..models import count, drop_blocks, droppable_blocks, prunable_base
from ..models.blocks import inside
from .plan import Context
from .report import grade
from .target import size_metric


def drop_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """With ``--drop-blocks``: drop residual blocks of ``model`` (after any cut) while it stays within
    ``delta`` of the full model on validation.

    Every droppable block is graded alone (validation decides, test is shown); then, the least
    harmful first, each joins the dropped set if the model without the whole set stays within
    ``delta``. Every candidate is reported with its accuracies, params, MACs and what it keeps
    of the original model's prunable metric. The measurement handed on loses the dropped blocks' points.

    Raises:
        ConfigError: the model has no block with an identity shortcut.
    """
    cfg = ctx.cfg
    if not cfg.drop_blocks:
        return model, {}
    names = droppable_blocks(model)
    if not names:
        raise ConfigError(
            f"--drop-blocks: {model.spec['name']} has no residual block with an identity shortcut to drop; "
            "use --no-drop-blocks for this model"
        )
    full_val_accuracy, delta, device = ctx.report["before"]["val_accuracy"], cfg.delta, cfg.device
    rows, sized = [], size_metric(cfg.metric)
    for name in names:
        alone = drop_blocks(copy.deepcopy(model), [name])
        rows.append(
            {
                "block": name,
                **grade(alone, ctx.splits, device),
                **count(alone),
                "kept": prunable_base(alone, sized) / prunable_base(ctx.original, sized),
            }
        )
    dropped, result = [], None
    for row in sorted(rows, key=lambda r: -r["val_accuracy"]):
        if full_val_accuracy - row["val_accuracy"] >= delta:
            break
        trial = drop_blocks(copy.deepcopy(model), [*dropped, row["block"]])
        grades = grade(trial, ctx.splits, device)
        if full_val_accuracy - grades["val_accuracy"] < delta:
            dropped.append(row["block"])
            result = (trial, grades)
    part = {"delta": delta, "kept_of": sized, "candidates": rows, "dropped": dropped}
    if not dropped:
        return model, {"blocks": part}
    base, grades = result
    part.update(accuracy_after_drop=grades["accuracy"], val_accuracy_after_drop=grades["val_accuracy"], **count(base))
    if ctx.measurement is not None:
        ctx.measurement = ctx.measurement.restricted(lambda point: not inside(point, dropped))
    return base, {"blocks": part}
