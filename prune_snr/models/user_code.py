"""Architectures named as ``MODULE:CALLABLE``: a class or factory in the user's own code.

Naming one (``train --model``, ``import ARCH``) imports it: the user asked for that code. Reading a
checkpoint never imports it by itself: :func:`trusting` (the CLI's ``--trust-model-code``, the API's
``trust_model_code=True``) must say so first, the ecosystem's convention (Hugging Face's
``trust_remote_code``).

Example:
    >>> is_user_code("tests.user_models:UserNet"), is_user_code("timm:resnet18"), is_user_code("vgg16")
    (True, False, False)
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import inspect
import os
import re
import sys

from torch import nn

from ..errors import ModelError

#: Where the CLI's ``--trust-model-code`` reaches worker processes too.
TRUST_ENV = "PRUNE_SNR_TRUST_MODEL_CODE"
_TRUSTED = contextvars.ContextVar("trust_model_code", default=False)
_PATTERN = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
HUB_PREFIXES = ("timm", "torchvision")


def is_user_code(name: str) -> bool:
    """Whether ``name`` is ``MODULE:CALLABLE`` (not a hub prefix)."""
    return bool(_PATTERN.match(name)) and name.partition(":")[0] not in HUB_PREFIXES


def trusted() -> bool:
    return _TRUSTED.get() or os.environ.get(TRUST_ENV) == "1"


@contextlib.contextmanager
def trusting(trust: bool = True):
    """Within the block, checkpoints of ``MODULE:CALLABLE`` architectures may import their module."""
    token = _TRUSTED.set(bool(trust) or _TRUSTED.get())
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def build_user_model(name: str, *, num_classes: int, in_chans: int = 3, model_kwargs: dict | None = None) -> nn.Module:
    """Import ``MODULE`` (from the working directory or ``PYTHONPATH``) and call ``CALLABLE(**model_kwargs)``, with
    ``num_classes`` and ``in_chans`` too where it takes them; the result must be an ``nn.Module``.

    Raises:
        ModelError: the module does not import, has no such callable, or the call does not give a classifier.
    """
    module_name, _, attr = name.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target = importlib.import_module(module_name)
    except Exception as exc:  # any failure inside the user's module: one line
        raise ModelError(
            f"--model {name}: module {module_name!r} does not import ({type(exc).__name__}: {exc}); run from "
            "the folder that holds it or add it to PYTHONPATH"
        ) from None
    for part in attr.split("."):
        target = getattr(target, part, None)
        if target is None:
            raise ModelError(f"--model {name}: {module_name} has no {attr!r}")
    kwargs = dict(model_kwargs or {})
    try:
        takes = inspect.signature(target).parameters
    except (TypeError, ValueError):
        takes = {}
    if "num_classes" in takes or any(p.kind == p.VAR_KEYWORD for p in takes.values()):
        kwargs.setdefault("num_classes", num_classes)
    if "in_chans" in takes:
        kwargs.setdefault("in_chans", in_chans)
    try:
        model = target(**kwargs)
    except Exception as exc:
        raise ModelError(f"--model {name}: calling it with {kwargs} failed ({type(exc).__name__}: {exc})") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {name}: it returned a {type(model).__name__}, not an nn.Module")
    return model
