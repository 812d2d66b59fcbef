"""Model adapters: one object per model family answers every question the stages ask of a model.

The questions: which module outputs to measure (the points, after the activation), whether a
measurement made for pruning adds the depthwise points, which layer is the classifier, how the
model is rebuilt cut after a point, and which residual blocks can be dropped whole. The base
:class:`Adapter` answers them for any ``nn.Module`` from its structure (one traced forward, the
last ``Linear``, the sequential stages of its feature path, identity shortcuts); a family that
knows better registers a subclass for its class, found along the model's class hierarchy, so a
subclass of a registered class is served by its parent's adapter. prune-snr registers its VGG and
timm's and torchvision's EfficientNet (ResNets and the other families get the base answers right); a user
registers one for their own class:

Example:
    >>> import torch
    >>> from torch import nn
    >>> from prune_snr.models import Adapter, adapter_for, default_points, register_adapter
    >>> class TwoConvs(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.a, self.b, self.head = nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3), nn.Linear(4, 2)
    ...     def forward(self, x):
    ...         return self.head(self.b(torch.relu(self.a(x))).mean((2, 3)))
    >>> @register_adapter(TwoConvs)
    ... class TwoConvsAdapter(Adapter):
    ...     def points(self, model, *, expanded=False):
    ...         return ["b"]  # measure the last conv only
    >>> type(adapter_for(TwoConvs())).__name__, default_points(TwoConvs())
    ('TwoConvsAdapter', ['b'])
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import ModelError
from .structure import identity_shortcut_blocks, named_classifier, stage_boundary, structural_classifier, traced_points

#: ``module.QualifiedName`` of a class -> its adapter; names, so that registering timm's classes imports no timm.
_ADAPTERS: dict[str, "Adapter"] = {}


class Adapter:
    """The answers for any ``nn.Module``; subclass and override what a family answers differently."""

    #: A measurement made for pruning adds the depthwise points (``--expanded``): EfficientNet's widths live there.
    expanded_by_default = False

    def points(self, model: nn.Module, *, expanded: bool = False) -> list[str]:
        """Module names to measure, input to output: after the activation that follows each conv that runs in eval
        (a model with a ``measurement_points()`` method names them itself)."""
        own = getattr(model, "measurement_points", None)
        if callable(own):
            return list(own())
        try:
            classifier = classifier_name(model)
        except ModelError:
            classifier = None
        return traced_points(model, classifier=classifier)

    def classifier(self, model: nn.Module) -> str:
        """The layer whose outputs are the logits: the last ``nn.Linear``, else a last conv with
        one output per label."""
        return structural_classifier(model)

    def cut_spec(self, model: nn.Module, point: str, *, head_pool: int) -> dict | None:
        """What ``build_model(**model.spec, **answer)`` needs to rebuild ``model`` cut after ``point`` with a
        ``p x p`` linear head; ``None`` where ``point`` is no cut point (not a stage boundary of the feature path).
        A model with a ``truncation_spec(point, *, head_pool)`` method answers itself."""
        own = getattr(model, "truncation_spec", None)
        if callable(own):
            return own(point, head_pool=head_pool)
        boundary = stage_boundary(model, point, classifier_name(model))
        return {"cut_after": point, "head_pool": head_pool} if boundary else None

    def droppable_blocks(self, model: nn.Module) -> list[str]:
        """Blocks of sequential stages whose output is ``x + f(x)`` at their input's shape, input to output."""
        return identity_shortcut_blocks(model)


def register_adapter(cls: type | str) -> Callable[[type[Adapter]], type[Adapter]]:
    """Class decorator: serve models of class ``cls`` (or ``"module.QualifiedName"``), and its
    subclasses, with this adapter."""
    key = cls if isinstance(cls, str) else f"{cls.__module__}.{cls.__qualname__}"

    def decorate(adapter: type[Adapter]) -> type[Adapter]:
        _ADAPTERS[key] = adapter()
        return adapter

    return decorate


def adapter_for(model: nn.Module) -> Adapter:
    """The adapter registered for ``model``'s class or the nearest of its bases; else the base :class:`Adapter`."""
    for cls in type(model).__mro__:
        found = _ADAPTERS.get(f"{cls.__module__}.{cls.__qualname__}")
        if found is not None:
            return found
    return _GENERIC


_GENERIC = Adapter()


def classifier_name(model: nn.Module) -> str:
    """The final classifier (never pruned on its output side): the one the user named (``classifier=``), else
    the one its adapter names (the last ``Linear``, or a last conv with one output per label, for any model)."""
    return named_classifier(model) or adapter_for(model).classifier(model)


@register_adapter("timm.models.efficientnet.EfficientNet")
class TimmEfficientNet(Adapter):
    """``bn1`` (the stem after BN+act), every MBConv block's output, ``bn2`` (the head conv); expanded: also
    each block's activated depthwise output ``blocks.i.j.bn2``."""

    expanded_by_default = True

    def points(self, model: nn.Module, *, expanded: bool = False) -> list[str]:
        points = ["bn1"]
        for stage_idx, stage in enumerate(model.blocks):
            for block_idx, block in enumerate(stage):
                name = f"blocks.{stage_idx}.{block_idx}"
                if expanded and hasattr(block, "conv_dw") and hasattr(block, "conv_pw"):
                    points.append(f"{name}.bn2")
                points.append(name)
        return points + ["bn2"]


@register_adapter("torchvision.models.efficientnet.EfficientNet")
class TorchvisionEfficientNet(Adapter):
    """``features.0`` (stem), each ``features.i.j`` MBConv output, ``features.8`` (head conv); expanded: also
    each MBConv's depthwise ``Conv2dNormActivation``. An MBConv with ``use_res_connect`` can be dropped."""

    expanded_by_default = True

    def points(self, model: nn.Module, *, expanded: bool = False) -> list[str]:
        from torchvision.ops.misc import Conv2dNormActivation

        points = []
        for stage_name, stage in model.features.named_children():
            if isinstance(stage, Conv2dNormActivation):
                points.append(f"features.{stage_name}")
                continue
            for block_name, block in stage.named_children():
                name = f"features.{stage_name}.{block_name}"
                if isinstance(block, nn.Identity):  # a dropped block (drop_blocks): its output is its input
                    points.append(name)
                    continue
                parts = [(n, m) for n, m in block.block.named_children() if isinstance(m, Conv2dNormActivation)]
                if expanded and len(parts) >= 2:  # [expand,] depthwise, project: as timm's (its DepthwiseSeparable too)
                    points.append(f"{name}.block.{parts[-2][0]}")
                points.append(name)
        return points

    def droppable_blocks(self, model: nn.Module) -> list[str]:
        return [
            f"features.{s}.{b}"
            for s, stage in model.features.named_children()
            for b, block in stage.named_children()
            if getattr(block, "use_res_connect", False)
        ]
