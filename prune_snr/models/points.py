"""Measurement points: the one place that says which layer outputs prune-snr measures.

A point is a module name whose forward output (N x C x H x W) is the measured feature map.
See shared METHOD.md: VGG -> each conv after BN+ReLU; EfficientNet-B0 -> the stem, every
MBConv block output and ``conv_head`` (after BN+act); anything else -> every ``nn.Conv2d``.
``expanded=True`` adds, for EfficientNet, each MBConv's activated depthwise output
(``blocks.i.j.bn2``), where most of its parameters live, so that pruning scores reach them.
"""
from __future__ import annotations

from torch import nn

from ..errors import ModelError


def expanded_by_default(model: nn.Module) -> bool:
    """Whether a measurement made for pruning should include the depthwise points (``--expanded``):
    EfficientNet's MBConv widths live there, so its SNR must reach them (METHOD.md)."""
    return _is_timm_efficientnet(model)


def _is_timm_efficientnet(model: nn.Module) -> bool:
    try:
        from timm.models.efficientnet import EfficientNet
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(model, EfficientNet)


def default_points(model: nn.Module, *, expanded: bool = False) -> list[str]:
    """Ordered (input to output) module names to measure for ``model``."""
    if hasattr(model, "measurement_points"):
        return list(model.measurement_points())
    if _is_timm_efficientnet(model):
        points = ["bn1"]
        for stage_idx, stage in enumerate(model.blocks):
            for block_idx, block in enumerate(stage):
                name = f"blocks.{stage_idx}.{block_idx}"
                if expanded and hasattr(block, "conv_dw") and hasattr(block, "conv_pw"):
                    points.append(f"{name}.bn2")
                points.append(name)
        return points + ["bn2"]
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def resolve_points(model: nn.Module, points: str | list[str] | None = "all", *, expanded: bool = False) -> list[str]:
    """``"all"``/``None`` -> the default points; ``"a,b"`` or a list -> those names, checked.

    Any module name may be a point (METHOD.md: any ``nn.Conv2d`` by name); the order of the
    returned list follows the model's module order, so depth is always increasing.
    """
    if points in (None, "all"):
        return default_points(model, expanded=expanded)
    wanted = [p.strip() for p in points.split(",")] if isinstance(points, str) else list(points)
    modules = dict(model.named_modules())
    unknown = [p for p in wanted if p not in modules or not p]
    if unknown:
        hint = ", ".join(default_points(model)[:6])
        raise ModelError(f"--points: no module named {unknown[0]!r} in this model; valid names include {hint}, ...")
    order = {name: i for i, name in enumerate(modules)}
    return sorted(dict.fromkeys(wanted), key=order.__getitem__)


def classifier_name(model: nn.Module) -> str:
    """The final linear classifier (never pruned on its output side): the last ``nn.Linear``."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise ModelError(f"{type(model).__name__} has no nn.Linear classifier; prune-snr needs one to keep the label count")
    return names[-1]
