"""Dropping single residual blocks: a block whose output is ``x + f(x)`` at its input's shape can go whole.

A droppable block is a child of a sequential stage with an identity shortcut: timm's MBConv and
depthwise-separable blocks with ``has_skip`` (EfficientNet: a stride-1 block whose input and
output widths agree), and ResNet blocks (timm, torchvision) without a ``downsample`` branch.
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


def _has_identity_shortcut(block: nn.Module) -> bool:
    if hasattr(block, "has_skip"):  # timm EfficientNet / MobileNet blocks
        return bool(block.has_skip)
    return hasattr(block, "downsample") and block.downsample is None and hasattr(block, "conv1")


def droppable_blocks(model: nn.Module) -> list[str]:
    """Names (input to output) of the blocks of ``model``'s sequential stages that have an identity shortcut."""
    names = []
    for stage_name, stage in model.named_modules():
        if not isinstance(stage, nn.Sequential) or not stage_name:
            continue
        for child_name, block in stage.named_children():
            if not isinstance(block, nn.Identity) and _has_identity_shortcut(block):
                names.append(f"{stage_name}.{child_name}")
    return names


def drop_blocks(model: nn.Module, names: list[str]) -> nn.Module:
    """``model`` (changed in place and returned) with each block in ``names`` replaced by ``nn.Identity``."""
    allowed = set(droppable_blocks(model))
    for name in names:
        if name not in allowed:
            raise ModelError(f"cannot drop {name!r} from {type(model).__name__}: not a residual block with an identity shortcut "
                             f"(droppable: {', '.join(sorted(allowed)) or 'none'})")
        stage_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(stage_name), child, nn.Identity())
    if hasattr(model, "spec"):  # so that build_model(**spec) rebuilds what is left
        model.spec = {**model.spec, "dropped": [*model.spec.get("dropped", []), *names]}
    return model


def inside(point: str, blocks: list[str]) -> bool:
    """Whether measurement point ``point`` is one of ``blocks`` or lies inside one."""
    return any(point == b or point.startswith(b + ".") for b in blocks)
