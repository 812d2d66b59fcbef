"""Layer truncation (METHOD.md): cut the network where later layers add less than δ.

Cut after the earliest point whose validation head accuracy is within δ of the full model's;
the point's phase-2 head (pool p) becomes the classifier, so the cut model computes exactly
what the head was measured on. VGG cuts after any conv block; any other model after a point at
a stage boundary of its feature path (EfficientNet-B0: the stem or an MBConv block; ResNets: a
residual block), see :mod:`prune_snr.models.truncation`.
"""
from __future__ import annotations

from torch import nn

from ..models import build_model, classifier_name, cut_spec, cuttable
from ..measure.result import Measurement


def candidates(measurement: Measurement, full_val_accuracy: float, delta: float) -> list[dict]:
    """Every cut point with its validation accuracy and what the rest of the network adds after it.

    Decisions read the validation split only; each row also shows the test accuracy (grading).
    """
    rows = []
    for p, val in zip(measurement.points, measurement.val_accuracies()):
        rows.append({"point": p["name"], "val_accuracy": val, "test_accuracy": p.get("test_accuracy"),
                     "adds_after": full_val_accuracy - val, "eligible": full_val_accuracy - val < delta})
    return rows


def choose_cut(rows: list[dict], model: nn.Module | None = None) -> str | None:
    """The earliest eligible point (that ``model`` can be cut after) other than the last one."""
    for row in rows[:-1]:
        if row["eligible"] and (model is None or cuttable(model, row["point"])):
            return row["point"]
    return None


def truncate(model: nn.Module, measurement: Measurement, point: str) -> nn.Module:
    """``model`` cut after ``point`` with that point's measured head as classifier."""
    cut = build_model(model.spec["name"], **cut_spec(model, point, measurement.meta["options"]["pool"]))
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
