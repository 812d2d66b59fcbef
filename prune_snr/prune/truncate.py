"""Layer truncation (METHOD.md): cut the network where later layers add less than δ.

Cut after the earliest point whose validation head accuracy is within δ of the full model's;
the point's phase-2 head (pool p) becomes the classifier, so the cut model computes exactly
what the head was measured on. VGG cuts after any conv block; any other model after a point at
a stage boundary of its feature path (EfficientNet-B0: the stem or an MBConv block; ResNets: a
residual block), see :mod:`prune_snr.models.truncation`. ``--cut`` picks between that measured
cut and the deepest cut the budget alone asks for (:func:`pick_cut`).
"""

from __future__ import annotations

from torch import nn

from ..measure.result import Measurement
from ..models import (
    build_model,
    classifier_name,
    count,
    cut_spec,
    cuttable,
    prunable_base,
)
from .plan import Context
from .report import grade
from .target import TOLERANCE, size_metric


def truncate_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """With ``--truncate``: cut ``model`` after the point ``--cut`` picks (:func:`pick_cut`) and report every
    candidate with the size it would leave. The cut point's measured head is the classifier, and the
    measurement handed on keeps the points up to the cut."""
    cfg = ctx.cfg
    if not cfg.truncate:
        return model, {}
    measurement = ctx.measurement
    rows = candidates(measurement.trunk(), ctx.report["before"]["val_accuracy"], cfg.delta)
    sized = size_metric(cfg.metric)
    cuts = {}
    for row in rows:  # every candidate with the size it would leave
        row["cuttable"] = cuttable(model, row["point"])
        if row["cuttable"]:
            cuts[row["point"]] = truncate(model, measurement, row["point"])
            row.update(count(cuts[row["point"]]))
            row["kept"] = prunable_base(cuts[row["point"]], sized) / prunable_base(model, sized)
    part = {"delta": cfg.delta, "cut": cfg.cut, "kept_of": sized, "candidates": rows}
    cut = pick_cut(rows, model, cfg.cut, target=cfg.target, metric=cfg.metric)
    part["cut_after"] = cut
    if not cut:
        return model, {"truncation": part}
    names = [p["name"] for p in measurement.points]
    ctx.measurement = measurement.restricted(set(names[: names.index(cut) + 1]).__contains__)
    grades = grade(cuts[cut], ctx.splits, cfg.device)
    part.update(accuracy_after_cut=grades["accuracy"], val_accuracy_after_cut=grades["val_accuracy"])
    return cuts[cut], {"truncation": part}


def pick_cut(rows: list[dict], model: nn.Module, rule: str, *, target: float | None, metric: str) -> str | None:
    """The cut point of ``rule`` (a row of :data:`prune_snr.choices.CUTS`), or None for no cut.

    ``deeper`` takes the measured cut unless the budget's own cut lies deeper: cutting shallower
    than the budget needs drops layers the budget could have kept (under a latency target, whose
    cuts are not counted, it is the measured cut).
    """
    if rule == "budget":
        return budget_cut(rows, target, metric)
    measured = choose_cut(rows, model)
    if rule == "measured" or metric == "latency" or measured is None:  # None: no point is within delta, so no cut
        return measured
    budget = budget_cut(rows, target, metric)
    order = [r["point"] for r in rows]
    return measured if budget is None else max(measured, budget, key=order.index)


def budget_cut(rows: list[dict], target: float, metric: str) -> str | None:
    """The deepest cuttable point (not the last) whose cut alone meets ``target`` of ``metric``."""
    meeting = [r["point"] for r in rows[:-1] if r["cuttable"] and 1 - (1 - target) / r["kept"] <= TOLERANCE]
    return meeting[-1] if meeting else None


def candidates(measurement: Measurement, full_val_accuracy: float, delta: float) -> list[dict]:
    """Every cut point with its validation accuracy and what the rest of the network adds after it.

    Decisions read the validation split only; each row also shows the test accuracy (grading).
    """
    rows = []
    for p, val in zip(measurement.points, measurement.val_accuracies()):
        rows.append(
            {
                "point": p["name"],
                "val_accuracy": val,
                "test_accuracy": p.get("test_accuracy"),
                "adds_after": full_val_accuracy - val,
                "eligible": full_val_accuracy - val < delta,
            }
        )
    return rows


def choose_cut(rows: list[dict], model: nn.Module | None = None) -> str | None:
    """The earliest eligible point (that ``model`` can be cut after) other than the last one."""
    for row in rows[:-1]:
        if row["eligible"] and (model is None or cuttable(model, row["point"])):
            return row["point"]
    return None


def truncate(model: nn.Module, measurement: Measurement, point: str) -> nn.Module:
    """``model`` cut after ``point`` with that point's measured head as classifier."""
    cut = build_model(model.spec["name"], **cut_spec(model, point, measurement.config.pool))
    classifier = classifier_name(cut)
    wanted = cut.state_dict()
    state = {k: v for k, v in model.state_dict().items() if k in wanted and not k.startswith(classifier + ".")}
    head = measurement.heads[point]
    state[f"{classifier}.weight"] = head["weight"].flatten(1)
    state[f"{classifier}.bias"] = head["bias"]
    missing, _ = cut.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"truncated model misses weights {missing[:3]}")
    return cut
