"""The registry of prune-snr's own architectures: ``@register_model`` and the names it holds.

It imports nothing of the package, so every model file can register itself without a cycle;
building a model by name (and the ``timm:``/``torchvision:`` prefixes) is
:mod:`prune_snr.models.factory`'s job, as timm keeps ``_registry.py`` apart from ``_factory.py``.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

_MODELS: dict[str, Callable[..., nn.Module]] = {}
#: The sources a prefixed name (``timm:NAME``) may come from; a bare name is a registered model.
PREFIXES = ("timm", "torchvision")


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its function name, as timm's ``@register_model`` does."""
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    return sorted(_MODELS)


def model_entrypoint(name: str) -> Callable[..., nn.Module] | None:
    """The constructor registered as ``name``, or ``None``."""
    return _MODELS.get(name)
