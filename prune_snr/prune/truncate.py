"""Layer truncation (METHOD.md): cut the network where later layers add less than δ.

VGG: cut after the earliest point whose head accuracy is within δ of the full model's; the
point's phase-2 head (pool p) becomes the classifier, so the cut model computes exactly what
the head was measured on. Other architectures are reported as not truncatable here.
"""
from __future__ import annotations

from torch import nn

from ..models import build_model
from ..models.vgg import VGG
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


def choose_cut(rows: list[dict]) -> str | None:
    """The earliest eligible point that is not the last one (cutting there removes layers)."""
    for row in rows[:-1]:
        if row["eligible"]:
            return row["point"]
    return None


def truncate(model: nn.Module, measurement: Measurement, point: str) -> nn.Module:
    """A VGG cut after ``point`` with that point's measured head as classifier."""
    if not isinstance(model, VGG):
        raise TypeError("truncation is implemented for VGG")
    kept = model.measurement_points().index(point) + 1
    pool = measurement.meta["options"]["pool"]
    spec = {k: v for k, v in model.spec.items() if k != "name"}
    spec.update(cut=kept, head_pool=pool)
    cut = build_model(model.spec["name"], **spec)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    head = measurement.heads[point]
    state["classifier.weight"] = head["weight"].flatten(1)
    state["classifier.bias"] = head["bias"]
    missing, unexpected = cut.load_state_dict(state, strict=False)
    if missing:
        raise RuntimeError(f"truncated model misses weights {missing[:3]}")
    return cut
