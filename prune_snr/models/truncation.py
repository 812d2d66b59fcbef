"""Cutting a model after a measurement point: any model whose feature path is a chain of sequential stages.

``cut_after(model, "blocks.3.1", head_pool=2, num_classes=10)`` keeps the model's own modules up to
and including ``blocks.3.1`` (module names unchanged, so a measurement's point names still apply),
turns every later stage of the feature path into ``nn.Identity``, and replaces the global pooling by
``p x p`` average pooling and the classifier by a linear layer on the ``C * p * p`` pooled features:
exactly the linear head the measurement trained at that point. This holds for timm's EfficientNet
(``conv_stem, bn1, blocks, conv_head, bn2 | global_pool, classifier``), timm's and torchvision's
ResNets (``conv1, bn1, act1, maxpool, layer1..4 | global_pool/avgpool, fc``) and any model built
the same way. A point inside a block (e.g. a residual block's inner conv) is no cut point.

A family that knows better how to cut itself says so through its adapter's ``cut_spec`` (VGG
rebuilds itself with ``cut=k`` after its k-th conv block); this module never asks which class a
model is.

Example:
    >>> import timm
    >>> m = cut_after(timm.create_model("resnet18", num_classes=10), "layer2.1", head_pool=2, num_classes=10)
    >>> m(torch.zeros(1, 3, 32, 32)).shape, type(m.layer3).__name__
    (torch.Size([1, 10]), 'Identity')
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .adapters import adapter_for, classifier_name
from .structure import head_names, stage_boundary


def can_cut(model: nn.Module, point: str) -> bool:
    """Whether ``point`` lies on the feature path at a sequential boundary (so the prefix is a model)."""
    return stage_boundary(model, point, classifier_name(model))


def cuttable(model: nn.Module, point: str) -> bool:
    """Whether ``model`` can be cut after measurement point ``point`` (VGG: any conv block)."""
    return adapter_for(model).cut_spec(model, point, head_pool=1) is not None


def cut_spec(model: nn.Module, point: str, head_pool: int) -> dict:
    """The ``build_model`` keyword arguments of ``model`` cut after ``point`` with a ``p x p`` linear head.

    Raises:
        ModelError: ``point`` is none of the model's cut points.
    """
    cut = adapter_for(model).cut_spec(model, point, head_pool=head_pool)
    if cut is None:
        raise ModelError(
            f"cannot cut {type(model).__name__} after {point!r}: not one of its cut points (stage boundaries of "
            "the feature path: top-level stages or blocks of sequential stages, unless its adapter says otherwise)"
        )
    return {**{k: v for k, v in model.spec.items() if k != "name"}, **cut}


def cut_after(
    model: nn.Module, point: str, *, head_pool: int, num_classes: int, in_chans: int = 3, input_size: int = 32
) -> nn.Module:
    """``model`` (changed in place and returned) cut after ``point``, with a fresh ``p x p`` linear head."""
    if not can_cut(model, point):
        raise ModelError(
            f"cannot cut {type(model).__name__} after {point!r}: not a stage boundary of its feature path "
            "(cut points are top-level stages or blocks of sequential stages)"
        )
    parts = point.split(".")
    channels = _channels_at(model, point, in_chans, input_size)
    parent = model
    for depth, part in enumerate(parts[:-1]):
        child = getattr(parent, part)
        keep = parts[depth + 1]
        names = [n for n, _ in child.named_children()]
        truncated = nn.Sequential()
        for n in names[: names.index(keep) + 1]:  # the kept blocks keep their names
            truncated.add_module(n, getattr(child, n))
        setattr(parent, part, truncated)
        parent = truncated
    pool, classifier = head_names(model, classifier_name(model))
    top = [n for n, _ in model.named_children()]
    for name in top[top.index(parts[0]) + 1 :]:
        if name == pool:
            setattr(model, name, nn.Sequential(nn.AdaptiveAvgPool2d(head_pool), nn.Flatten(1)))
        elif name == classifier:
            setattr(model, name, nn.Linear(channels * head_pool * head_pool, num_classes))
        else:
            setattr(model, name, nn.Identity())
    if pool is None:
        raise ModelError(f"{type(model).__name__} has no global pooling module to replace by the head's p x p pooling")
    if hasattr(model, "num_features"):
        model.num_features = channels * head_pool * head_pool
    return model


@torch.no_grad()
def _channels_at(model: nn.Module, point: str, in_chans: int, input_size: int) -> int:
    store = {}
    handle = dict(model.named_modules())[point].register_forward_hook(lambda m, i, o: store.update(c=o.shape[1]))
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_chans, input_size, input_size))
    finally:
        handle.remove()
        model.train(was_training)
    return int(store["c"])
