"""Cutting a model after a measurement point: any model whose feature path is a chain of sequential stages.

``cut_after(model, "blocks.3.1", head_pool=2, num_classes=10)`` keeps the model's own modules up to
and including ``blocks.3.1`` (module names unchanged, so a measurement's point names still apply),
turns every later stage of the feature path into ``nn.Identity``, and replaces the global pooling by
``p x p`` average pooling and the classifier by a linear layer on the ``C * p * p`` pooled features:
exactly the linear head the measurement trained at that point. This holds for timm's EfficientNet
(``conv_stem, bn1, blocks, conv_head, bn2 | global_pool, classifier``), timm's and torchvision's
ResNets (``conv1, bn1, act1, maxpool, layer1..4 | global_pool/avgpool, fc``) and any model built
the same way. A point inside a block (e.g. a residual block's inner conv) is no cut point.

A model that knows better how to cut itself says so: a ``truncation_spec(point, *, head_pool)``
method returns the ``build_model`` arguments of the cut model, or ``None`` where ``point`` is no cut
point (VGG rebuilds itself with ``cut=k`` after its k-th conv block). This module never asks
which class a model is.

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

POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def _is_pool(module: nn.Module) -> bool:
    return isinstance(module, POOLS) or type(module).__name__ == "SelectAdaptivePool2d"


def _head_names(model: nn.Module) -> tuple[str | None, str]:
    """Top-level names of the global pooling (if any) and of the classifier's top-level ancestor."""
    linear = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ModelError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    classifier = linear[-1].split(".")[0]
    pools = [name for name, m in model.named_children() if _is_pool(m)]
    return (pools[-1] if pools else None), classifier


def cuttable(model: nn.Module, point: str) -> bool:
    """Whether ``model`` can be cut after measurement point ``point`` (VGG: any conv block)."""
    own = getattr(model, "truncation_spec", None)
    return own(point, head_pool=1) is not None if own else can_cut(model, point)


def cut_spec(model: nn.Module, point: str, head_pool: int) -> dict:
    """The ``build_model`` keyword arguments of ``model`` cut after ``point`` with a ``p x p`` linear head.

    Raises:
        ModelError: the model's own ``truncation_spec`` has no cut after ``point``.
    """
    own = getattr(model, "truncation_spec", None)
    cut = own(point, head_pool=head_pool) if own else {"cut_after": point, "head_pool": head_pool}
    if cut is None:
        raise ModelError(f"cannot cut {type(model).__name__} after {point!r}: not one of its cut points")
    return {**{k: v for k, v in model.spec.items() if k != "name"}, **cut}


def can_cut(model: nn.Module, point: str) -> bool:
    """Whether ``point`` lies on the feature path at a sequential boundary (so the prefix is a model)."""
    parts = point.split(".")
    if point not in dict(model.named_modules()) or not parts[0]:
        return False
    pool, classifier = _head_names(model)
    if parts[0] in (pool, classifier):
        return False
    parent = model
    for part in parts[:-1]:
        parent = getattr(parent, part)
        if not isinstance(parent, nn.Sequential):
            return False
    return True


def cut_after(model: nn.Module, point: str, *, head_pool: int, num_classes: int, in_chans: int = 3, input_size: int = 32) -> nn.Module:
    """``model`` (changed in place and returned) cut after ``point``, with a fresh ``p x p`` linear head."""
    if not can_cut(model, point):
        raise ModelError(f"cannot cut {type(model).__name__} after {point!r}: not a stage boundary of its feature path "
                         "(cut points are top-level stages or blocks of sequential stages)")
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
    pool, classifier = _head_names(model)
    top = [n for n, _ in model.named_children()]
    for name in top[top.index(parts[0]) + 1:]:
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
