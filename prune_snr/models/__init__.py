"""Models: ``build_model`` (registry) and ``resolve_points`` (measurement points)."""
from . import efficientnet, vgg  # noqa: F401  (registers the built-in models)
from .counting import count_macs_params
from .points import classifier_name, default_points, resolve_points
from .registry import build_model, example_input, list_models, register_model

__all__ = ["build_model", "count_macs_params", "classifier_name", "default_points", "example_input", "list_models", "register_model", "resolve_points"]
