"""Dropping single residual blocks: a block whose output is ``x + f(x)`` at its input's shape can go whole.

The model's adapter names the droppable blocks: for any model, a child of a sequential stage with
an identity shortcut, as timm's MBConv and depthwise-separable blocks with ``has_skip``
(EfficientNet: a stride-1 block whose input and output widths agree) and ResNet blocks (timm,
torchvision) without a ``downsample`` branch; torchvision's MBConv with ``use_res_connect``.
Dropping turns it into ``nn.Identity`` in place, so module names (and a measurement's point
names) stay valid; ``build_model(..., dropped=[...])`` records and replays it.

Example:
    >>> import timm
    >>> m = timm.create_model("resnet18", num_classes=10)
    >>> droppable_blocks(m)
    ['layer1.0', 'layer1.1', 'layer2.1', 'layer3.1', 'layer4.1']
    >>> type(drop_blocks(m, ["layer3.1"]).layer3[1]).__name__
    'Identity'
"""

from __future__ import annotations

from torch import nn

from ..errors import ModelError
from .adapters import adapter_for


def droppable_blocks(model: nn.Module) -> list[str]:
    """Names (input to output) of the residual blocks of ``model`` that can go whole: its adapter's answer."""
    return adapter_for(model).droppable_blocks(model)


def drop_blocks(model: nn.Module, names: list[str]) -> nn.Module:
    """``model`` (changed in place and returned) with each block in ``names`` replaced by ``nn.Identity``."""
    allowed = set(droppable_blocks(model))
    for name in names:
        if name not in allowed:
            raise ModelError(
                f"cannot drop {name!r} from {type(model).__name__}: not a residual block with an identity shortcut "
                f"(droppable: {', '.join(sorted(allowed)) or 'none'})"
            )
        stage_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(stage_name), child, nn.Identity())
    if hasattr(model, "spec"):  # so that build_model(**spec) rebuilds what is left
        model.spec = {**model.spec, "dropped": [*model.spec.get("dropped", []), *names]}
    return model


def inside(point: str, blocks: list[str]) -> bool:
    """Whether measurement point ``point`` is one of ``blocks`` or lies inside one."""
    return any(point == b or point.startswith(b + ".") for b in blocks)
