"""The image shape a model takes, for the passes that need an example input (tracing, MACs, export)."""

from __future__ import annotations

import contextlib
import itertools
import weakref

import torch
from torch import nn

from ..runtime import modes_kept

#: A user's model (no ``spec``) -> the ``C x H x W`` of its images, as its data showed them.
_INPUT_SHAPES: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()


def remember_input_shape(model: nn.Module, shape: tuple[int, ...]) -> None:
    """Record the image shape of a model that carries no ``spec`` (a user's own), for :func:`example_input`."""
    _INPUT_SHAPES[model] = tuple(shape)


def example_input(model: nn.Module, batch_size: int = 1) -> torch.Tensor:
    """A zero batch of the shape ``model`` was built for (for tracing, MACs, export)."""
    spec = getattr(model, "spec", None) or {}
    param = next(model.parameters())
    shape = spec.get("input_shape") or _INPUT_SHAPES.get(model)
    if shape is None:
        size = spec.get("input_size", 32)
        shape = (spec.get("in_chans", 3), size, size)
    return torch.zeros(batch_size, *shape, device=param.device)


@contextlib.contextmanager
def handed_back(model: nn.Module):
    """Within the block a stage may move the caller's ``model`` and switch it to eval; after it, the model is back on
    its device, in its mode."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    device = tensor.device if tensor is not None else None
    with modes_kept(model):
        try:
            yield model
        finally:
            if device is not None:
                model.to(device)
