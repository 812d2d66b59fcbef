"""Models: ``build_model`` (factory over the registry), the adapters that answer for each model family, and
``resolve_points`` (measurement points)."""

from . import efficientnet, vgg  # noqa: F401  (registers the built-in models)
from .adapters import Adapter, adapter_for, classifier_name, register_adapter
from .adopt import adopt
from .blocks import drop_blocks, droppable_blocks
from .counting import count, count_macs_params, prunable_base
from .factory import build_model
from .inputs import example_input, handed_back, remember_input_shape
from .points import default_points, expanded_by_default, logits_width, num_outputs, point_conv, resolve_points
from .registry import list_models, register_model
from .structure import name_classifier
from .truncation import cut_spec, cuttable

__all__ = [
    "Adapter",
    "adapter_for",
    "adopt",
    "build_model",
    "classifier_name",
    "count",
    "count_macs_params",
    "cut_spec",
    "cuttable",
    "default_points",
    "drop_blocks",
    "droppable_blocks",
    "example_input",
    "expanded_by_default",
    "handed_back",
    "list_models",
    "logits_width",
    "name_classifier",
    "num_outputs",
    "point_conv",
    "prunable_base",
    "register_adapter",
    "register_model",
    "remember_input_shape",
    "resolve_points",
]
