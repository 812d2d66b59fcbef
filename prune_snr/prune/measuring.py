"""The measurement a pruning run decides on: the given one, or one made here when a stage needs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import yaml
from torch import nn

from ..atomic import atomic_save_text
from ..config import MeasureConfig, dump_yaml
from ..data.user import fingerprint
from ..errors import ConfigError
from ..measure import Measurement, measure
from ..measure.features import cache_key, weights_digest
from .plan import Context, reads_measurement

#: Where a pruning run keeps the measurement it made (beside ``pruned.pt``), and what it was made of
#: (options, weights, data).
MEASUREMENT_DIR, MADE_WITH = "measurement", "made_with.yaml"


def measure_if_needed(
    model: nn.Module,
    measurement: Measurement | None,
    *,
    needed: bool,
    dataset: str | None,
    options: MeasureConfig,
    progress=None,
    **data,
) -> tuple[Measurement | None, dict | None]:
    """The given measurement, or one of ``model`` made here with ``options`` (settled by
    :func:`prune_snr.prune.plan.settle`) when ``needed``; and the report's part for one made here."""
    if measurement is not None:
        made_of, mine = measurement.meta.get("weights"), weights_digest(model)
        if made_of is not None and made_of != mine:  # a measurement without the digest predates it: taken as is
            raise ConfigError(
                f"the measurement was made of other weights than this model's (digest {made_of}, this model {mine}): "
                "measure this model, or give no measurement"
            )
        return measurement, None
    if not needed:
        return measurement, None
    made = measure(model, dataset, options, progress=progress, **data)
    return made, {"made_here": True, "options": made.meta["options"]}


def measure_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """Measure ``model`` when a stage decides on a measurement and none was given. With an output folder the
    measurement is kept there (``OUT/measurement``), and a resumed run that stopped after it reads it back instead of
    measuring again, when it was made of the same weights and data with the same options."""
    needed, folder = reads_measurement(ctx.cfg), ctx.out / MEASUREMENT_DIR if ctx.out else None
    made_of = _made_of(ctx, model) if folder and needed and ctx.measurement is None else None
    if made_of and ctx.resume and _kept(folder) == made_of:
        ctx.measurement = Measurement.load(folder)
        return model, {"measurement": {"made_here": True, "options": ctx.measurement.meta["options"]}}
    ctx.measurement, made = measure_if_needed(
        model, ctx.measurement, needed=needed, options=ctx.cfg.measure, progress=ctx.progress, **ctx.measure_data()
    )
    if made and folder:
        (folder / "measurement.json").unlink(missing_ok=True)  # an earlier measurement there is incomplete from now on
        atomic_save_text(folder / MADE_WITH, yaml.safe_dump(made_of, sort_keys=False))
        ctx.measurement.save(folder)  # measurement.json last: its presence marks the set complete
    return model, {"measurement": made} if made else {}


def _made_of(ctx: Context, model: nn.Module) -> dict:
    """What a kept measurement must have been made of to stand for this run's: options, weights and data."""
    data = ctx.measure_data()
    where = data["dataset"] or "|".join(
        fingerprint(data[k]) for k in ("train", "val", "test") if data.get(k) is not None
    )
    return {
        "options": yaml.safe_load(dump_yaml(ctx.cfg.measure)),
        "weights_and_data": cache_key(model, str(where), points=[], pool=0),
    }  # the feature cache's digest of both


def _kept(folder: Path) -> dict | None:
    """What a kept measurement was made of, where it is complete."""
    if not (folder / "measurement.json").is_file() or not (folder / MADE_WITH).is_file():
        return None
    return yaml.safe_load((folder / MADE_WITH).read_text())


def remeasure_options(previous: Measurement, options: MeasureConfig) -> MeasureConfig:
    """The options of ``previous`` (its points, pool, θ, heads), on prune's data, split and seed: a
    re-measurement like it."""
    o = previous.config
    points = "groups" if previous.meta["options"].get("side_points") else ",".join(p["name"] for p in previous.points)
    return dataclasses.replace(
        options,
        points=points,
        pool=o.pool,
        threshold=o.threshold,
        clusters=o.clusters,
        head_epochs=o.head_epochs,
        head_lr=o.head_lr,
        head_batch_size=o.head_batch_size,
        head_patience=o.head_patience,
        head_min_epochs=o.head_min_epochs,
        head_optimizer=o.head_optimizer,
        fields_split=o.fields_split,
        label_sweep=None,
        label_seed=None,
        expanded=None,
    )


def remeasure(ctx: Context, model: nn.Module, previous: Measurement) -> Measurement:
    """``model`` (pruned part-way) measured as ``previous`` was: what ``--remeasure``'s next step reads."""
    data = ctx.measure_data()
    return measure(
        model, data.pop("dataset"), remeasure_options(previous, ctx.cfg.measure), progress=ctx.progress, **data
    )
