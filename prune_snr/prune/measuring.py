"""The measurement a pruning run decides on: the given one, or one made here when a stage needs it."""
from __future__ import annotations

import dataclasses

from torch import nn

from ..config import MeasureConfig
from ..measure import Measurement, measure
from .plan import Context, reads_measurement


def measure_if_needed(model: nn.Module, measurement: Measurement | None, *, needed: bool, dataset: str | None, options: MeasureConfig,
                      progress=None, **data) -> tuple[Measurement | None, dict | None]:
    """The given measurement, or one of ``model`` made here with ``options`` (settled by
    :func:`prune_snr.prune.plan.settle`) when ``needed``; and the report's part for one made here."""
    if measurement is not None or not needed:
        return measurement, None
    made = measure(model, dataset, options, progress=progress, **data)
    return made, {"made_here": True, "options": made.meta["options"]}


def measure_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """Measure ``model`` when a stage decides on a measurement and none was given."""
    ctx.measurement, made = measure_if_needed(model, ctx.measurement, needed=reads_measurement(ctx.cfg), options=ctx.cfg.measure,
                                              progress=ctx.progress, **ctx.measure_data())
    return model, {"measurement": made} if made else {}


def remeasure_options(previous: Measurement, options: MeasureConfig) -> MeasureConfig:
    """The options of ``previous`` (its points, pool, θ, heads), on prune's data, split and seed: a re-measurement like it."""
    o = previous.config
    points = "groups" if previous.meta["options"].get("side_points") else ",".join(p["name"] for p in previous.points)
    return dataclasses.replace(options, points=points, pool=o.pool, threshold=o.threshold, clusters=o.clusters,
                               head_epochs=o.head_epochs, head_lr=o.head_lr, head_batch_size=o.head_batch_size,
                               head_patience=o.head_patience, head_min_epochs=o.head_min_epochs, head_optimizer=o.head_optimizer,
                               fields_split=o.fields_split, label_sweep=None, label_seed=None, expanded=None)


def remeasure(ctx: Context, model: nn.Module, previous: Measurement) -> Measurement:
    """``model`` (pruned part-way) measured as ``previous`` was: what ``--remeasure``'s next step reads."""
    data = ctx.measure_data()
    return measure(model, data.pop("dataset"), remeasure_options(previous, ctx.cfg.measure), progress=ctx.progress, **data)
