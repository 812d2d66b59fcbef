"""MACs and parameters of a model at its input size: torch-pruning's counter, next to the models it counts."""
from __future__ import annotations

import torch

from .factory import example_input


def count_macs_params(model: torch.nn.Module) -> tuple[int, int]:
    """MACs of one forward pass at the model's input size, and parameters (torch-pruning's counter)."""
    import torch_pruning as tp

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    macs, params = tp.utils.count_ops_and_params(model, example_input(model).to(device))
    model.train(was_training)
    return int(macs), int(params)
