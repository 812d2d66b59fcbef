"""MACs and parameters of a model at its input size: torch-pruning's counter, next to the models it counts.

Every stage counts with these: ``count`` for a report's ``params``/``macs``, ``prunable_base`` for
what ``--target`` is a fraction of, ``point_macs`` for the gain-per-MAC allocation.
"""

from __future__ import annotations

import torch
from torch import nn

from .adapters import classifier_name
from .inputs import example_input
from .points import point_conv


def count_macs_params(model: nn.Module) -> tuple[int, int]:
    """MACs of one forward pass at the model's input size, and parameters (torch-pruning's counter)."""
    import torch_pruning as tp

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_input(model).to(device))
    model.train(was_training)
    return int(macs), int(params)


def count(model: nn.Module) -> dict[str, int]:
    """MACs of one forward pass and parameter count (torch-pruning's counter)."""
    macs, params = count_macs_params(model)
    return {"macs": macs, "params": params}


def prunable_base(model: nn.Module, metric: str) -> int:
    """The metric of everything but the classifier."""
    head = dict(model.named_modules())[classifier_name(model)]
    extra = head.bias.numel() if metric == "params" and head.bias is not None else 0
    return count(model)[metric] - head.weight.numel() - extra


def point_macs(model: nn.Module, points: list[str]) -> list[float]:
    """MACs of one image in the conv behind each measurement point (one forward pass with hooks)."""
    convs = {id(point_conv(model, p)): p for p in points}
    macs: dict[str, float] = {}

    def hook(module, _inputs, output):
        k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        macs[convs[id(module)]] = float(output[0].numel() * k)

    handles = [m.register_forward_hook(hook) for m in model.modules() if id(m) in convs]
    try:
        with torch.no_grad():
            model.eval()(example_input(model))
    finally:
        for h in handles:
            h.remove()
    return [macs[p] for p in points]
