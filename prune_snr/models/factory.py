"""One entry point for every architecture: ``build_model(name, num_classes=..., ...)``.

Bare names are prune-snr's own registered constructors (:mod:`prune_snr.models.registry`);
``timm:NAME`` goes to ``timm.create_model`` and ``torchvision:NAME`` to
``torchvision.models.get_model``. Any other prefix is an error. Every built model carries
``model.spec``: the plain-data arguments that rebuild it, which checkpoints store.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ModelError
from .blocks import drop_blocks
from .registry import PREFIXES, list_models, model_entrypoint
from .truncation import cut_after
from .user_code import build_user_model, is_user_code


def build_model(
    name: str,
    *,
    num_classes: int,
    in_chans: int = 3,
    input_size: int = 32,
    width_mult: float | None = None,
    pretrained: bool = False,
    model_kwargs: dict | None = None,
    **arch,
) -> nn.Module:
    """Build a classifier by name.

    Args:
        name: ``vgg16``, ``efficientnet_b0``, ``timm:NAME``, ``torchvision:NAME``, or ``MODULE:CALLABLE`` (a class or
            factory of the user's own code, called with ``model_kwargs`` and ``num_classes`` where it takes it).
        num_classes: output labels.
        in_chans: input channels.
        input_size: side of the square input the model will see (used for tracing/MACs).
        width_mult: scale every conv width (prune-snr's own models only; ``None`` = 1).
        pretrained: load hub weights (timm/torchvision only; needs network access).
        **arch: architecture edits of prune-snr's own models (e.g. VGG ``cut``/``head_pool``
            after truncation), or ``cut_after=POINT, head_pool=p`` for any model whose feature
            path is a chain of stages (:mod:`prune_snr.models.truncation`), or ``dropped=[BLOCK, ...]``
            for residual blocks replaced by identity (:mod:`prune_snr.models.blocks`); recorded in ``spec``.

    Returns:
        The model, with ``model.spec`` set so that ``build_model(**spec)`` rebuilds it.

    Raises:
        ModelError: unknown name or prefix, or an option the model does not take.

    Example:
        >>> from prune_snr.models import build_model
        >>> build_model("vgg16", num_classes=10, width_mult=0.25)(torch.zeros(1, 3, 32, 32)).shape
        torch.Size([1, 10])
    """
    if num_classes < 2:
        raise ModelError(f"{num_classes} label(s): a classifier needs at least 2")
    prefix, _, rest = name.partition(":")
    cut = {k: arch.pop(k) for k in ("cut_after", "head_pool") if k in arch and "cut" not in arch}
    dropped = list(arch.pop("dropped", None) or [])
    if is_user_code(name):
        model = _user_model(name, arch, num_classes, in_chans, input_size, width_mult, pretrained, model_kwargs)
    elif rest:
        model = _prefixed_model(name, prefix, rest, arch, num_classes, in_chans, width_mult, pretrained)
    else:
        model = _own_model(name, arch, num_classes, in_chans, width_mult, pretrained)
    if cut.get("cut_after"):
        model = cut_after(
            model,
            cut["cut_after"],
            head_pool=cut.get("head_pool", 1),
            num_classes=num_classes,
            in_chans=in_chans,
            input_size=input_size,
        )
    if dropped:
        drop_blocks(model, dropped)
        arch["dropped"] = dropped
    arch.update(cut)
    if (rest and not is_user_code(name)) or cut.get("cut_after"):
        check_input_size(model, name, in_chans=in_chans, input_size=input_size)
    model.spec = {
        "name": name,
        "num_classes": num_classes,
        "in_chans": in_chans,
        "input_size": input_size,
        "width_mult": width_mult,
        "pretrained": False,  # weights come from the checkpoint on rebuild, never from a hub
        **arch,
    }
    return model


def _user_model(
    name: str,
    arch: dict,
    num_classes: int,
    in_chans: int,
    input_size: int,
    width_mult: float | None,
    pretrained: bool,
    model_kwargs: dict | None,
) -> nn.Module:
    """The user's own ``MODULE:CALLABLE`` model, checked to give ``num_classes`` logits; records its
    ``model_kwargs`` in ``arch``."""
    if arch or width_mult not in (None, 1, 1.0) or pretrained:
        raise ModelError(
            f"{name}: options {sorted(arch) or ['width_mult/pretrained']} apply to prune-snr's own models; "
            "pass --model-kwargs"
        )
    model = build_user_model(name, num_classes=num_classes, in_chans=in_chans, model_kwargs=model_kwargs)
    arch["model_kwargs"] = dict(model_kwargs or {})
    _check_outputs(model, name, num_classes, in_chans, input_size)
    return model


def _prefixed_model(
    name: str,
    prefix: str,
    rest: str,
    arch: dict,
    num_classes: int,
    in_chans: int,
    width_mult: float | None,
    pretrained: bool,
) -> nn.Module:
    """A ``timm:NAME`` or ``torchvision:NAME`` model, which takes none of prune-snr's architecture options."""
    if prefix not in PREFIXES:
        raise ModelError(
            f"model {name!r}: unknown prefix {prefix!r}; use one of {', '.join(p + ':' for p in PREFIXES)} or a "
            f"bare name ({', '.join(list_models())})"
        )
    if arch:
        raise ModelError(f"{name}: options {sorted(arch)} apply to prune-snr's own models only")
    if width_mult not in (None, 1, 1.0):
        raise ModelError(f"--width-mult applies to prune-snr's own models ({', '.join(list_models())}), not to {name}")
    return _external(prefix, rest, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained)


def _own_model(
    name: str, arch: dict, num_classes: int, in_chans: int, width_mult: float | None, pretrained: bool
) -> nn.Module:
    """One of prune-snr's registered models, built with the architecture options in ``arch``."""
    constructor = model_entrypoint(name)
    if constructor is None:
        raise ModelError(
            f"unknown model {name!r}; choose one of {', '.join(list_models())}, timm:NAME or torchvision:NAME"
        )
    try:
        return constructor(
            num_classes=num_classes, in_chans=in_chans, width_mult=width_mult, pretrained=pretrained, **arch
        )
    except TypeError as exc:
        raise ModelError(f"{name}: unsupported option ({exc})") from exc


def _check_outputs(model: nn.Module, name: str, num_classes: int, in_chans: int, input_size: int) -> None:
    """A user's architecture must read ``in_chans x input_size x input_size`` images and give ``num_classes`` logits."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(1, in_chans, input_size, input_size))
    except Exception as exc:
        raise ModelError(
            f"{name}: it cannot read {in_chans}x{input_size}x{input_size} images ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160]})"
        ) from None
    if not isinstance(out, torch.Tensor) or out.shape != (1, num_classes):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelError(
            f"{name}: its output is {got}, not (batch, {num_classes}) logits; give it num_classes={num_classes}"
        )


def _external(prefix: str, name: str, *, num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    if prefix == "timm":
        import timm

        if not timm.is_model(name):
            raise ModelError(f"timm has no model {name!r}; see timm.list_models()")
        return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    import torchvision

    if name not in torchvision.models.list_models():
        raise ModelError(f"torchvision has no model {name!r}; see torchvision.models.list_models()")
    if in_chans != 3:
        raise ModelError(f"torchvision:{name} takes 3-channel input; build the dataset with channels=3")
    weights = "DEFAULT" if pretrained else None
    try:
        return torchvision.models.get_model(name, weights=weights, num_classes=num_classes)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"torchvision:{name} cannot be built with num_classes={num_classes}: {exc}") from exc


MAX_INPUT_SIZE = 512


def _runs(model: nn.Module, in_chans: int, size: int) -> bool:
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, in_chans, size, size, device=next(model.parameters()).device))
        return True
    except RuntimeError:
        return False
    finally:
        model.train(was_training)


def check_input_size(model: nn.Module, name: str, *, in_chans: int, input_size: int) -> None:
    """One forward pass at ``input_size``; a model that cannot take it is a one-line error naming the
    smallest size that works (found by bisection: architectures shrink the input monotonically).

    Raises:
        ModelError: the input is too small for the architecture.
    """
    if _runs(model, in_chans, input_size):
        return
    lo, hi = input_size, MAX_INPUT_SIZE
    if not _runs(model, in_chans, hi):
        raise ModelError(
            f"{name} does not run on {in_chans}-channel inputs of {input_size} px (nor {hi} px); check --input-size "
            "and the dataset's channels"
        )
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _runs(model, in_chans, mid) else (mid, hi)
    error = ModelError(
        f"{name}: inputs of {input_size} px are too small for this architecture (its feature maps shrink to "
        f"nothing); use --input-size {hi} or more"
    )
    error.smallest_input_size = hi
    raise error
