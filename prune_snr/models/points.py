"""Measurement points: which layer outputs prune-snr measures, and the classifier.

A point is a module name whose forward output (N x C x H x W) is the measured feature map,
taken after the activation (METHOD.md). The model's adapter (:mod:`prune_snr.models.adapters`)
names them:

- prune-snr's VGG: each conv block after BN+ReLU;
- EfficientNet-B0, timm's or torchvision's: the stem, every MBConv block output and the head
  conv, each after BN+act; ``expanded=True`` adds each MBConv's activated depthwise output,
  where most of its parameters live, so that pruning scores reach them;
- any other model (torchvision's ``vgg16_bn``, ResNets, MobileNets, timm families): one forward
  pass in eval mode traces the order modules run in; each conv that runs is measured at the
  activation that follows it (past a norm of the same width), else at the module that wraps it
  alone (a conv+norm block whose ``forward`` applies the activation), else at the conv itself.
  Convs that never run in eval (GoogLeNet's auxiliary heads) are no points: :func:`unused_convs`
  lists them.

:func:`point_conv` names the convolution whose output channels are a point's filters (what
pruning removes, what the gain-per-MAC allocation counts).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..errors import ConfigError, ModelError, cause
from .adapters import adapter_for, classifier_name
from .graph import ChannelGraph
from .inputs import example_input, handed_back
from .structure import trace, traced_points


def expanded_by_default(model: nn.Module) -> bool:
    """Whether a measurement made for pruning should include the depthwise points (``--expanded``):
    EfficientNet's MBConv widths live there, so its SNR must reach them (METHOD.md)."""
    return adapter_for(model).expanded_by_default


#: model -> {leaf module name: name of the conv that ran last before it with as many channels}, one trace per model.
_PRODUCERS: "weakref.WeakKeyDictionary[nn.Module, dict[str, str]]" = weakref.WeakKeyDictionary()


def _producer(model: nn.Module, point: str) -> nn.Conv2d | None:
    """The conv that ran last before ``point``'s first call with as many output channels (None: no such conv, or
    ``point`` is not a leaf the trace sees). Pruning keeps the call order, so the names stay right
    for a pruned model."""
    if model not in _PRODUCERS:
        order, shapes, _ = trace(model)
        modules = dict(model.named_modules())
        found, last = {}, {}  # last: channel count -> the conv that last produced it
        for name in order:
            if isinstance(modules[name], nn.Conv2d):
                last[modules[name].out_channels] = name
            elif len(shapes.get(name, ())) >= 2 and shapes[name][1] in last:
                found.setdefault(name, last[shapes[name][1]])
        _PRODUCERS[model] = found
    name = _PRODUCERS[model].get(point)
    return None if name is None else dict(model.named_modules())[name]


def unused_convs(model: nn.Module) -> list[str]:
    """Convolutions that an eval-mode forward never runs (auxiliary heads): never measurement points."""
    order, _, _ = trace(model)
    ran = set(order)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in ran]


def default_points(model: nn.Module, *, expanded: bool = False) -> list[str]:
    """Ordered (input to output) module names to measure for ``model``: its adapter's answer."""
    return list(adapter_for(model).points(model, expanded=expanded))


def side_points(model: nn.Module) -> list[str]:
    """Points beyond the default (expanded) ones so that every channel group torch-pruning prunes has a measured
    member: one traced point for each group without one (a squeeze-excite gate's bottleneck, a conv that no default
    point follows). Without them a measured criterion scores those groups by magnitude. The layer allocation and
    the cut read the default points only (a gate's accuracy is no step of the network's depth)."""
    names = {id(m): n for n, m in model.named_modules()}
    measured = {names[id(point_conv(model, p))] for p in default_points(model, expanded=True)}
    classifier = classifier_name(model)
    by_conv = {}
    for p in traced_points(model, classifier=classifier):
        by_conv.setdefault(names[id(point_conv(model, p))], p)
    graph = ChannelGraph(model, example_input(model), ignored=[classifier])
    extra = []
    for members in graph.members:
        if any(m in measured for m in members):
            continue
        point = next((by_conv[m] for m in members if m in by_conv), None)
        if point is not None and point not in extra:
            extra.append(point)
    return extra


def resolve_points(model: nn.Module, points: str | list[str] | None = "all", *, expanded: bool = False) -> list[str]:
    """``"all"``/``None`` -> the default points; ``"groups"`` -> those with the expanded ones and the
    :func:`side_points` (a point for every prunable group); ``"a,b"`` or a list -> those names, checked.

    Any module name may be a point (METHOD.md: any ``nn.Conv2d`` by name); the order of the
    returned list follows the model's module order, so depth is always increasing.
    """
    if points in (None, "all"):
        return default_points(model, expanded=expanded)
    if points == "groups":
        order = {name: i for i, name in enumerate(dict(model.named_modules()))}
        return sorted(default_points(model, expanded=True) + side_points(model), key=order.__getitem__)
    wanted = [p.strip() for p in points.split(",")] if isinstance(points, str) else list(points)
    modules = dict(model.named_modules())
    unknown = [p for p in wanted if p not in modules or not p]
    if unknown:
        hint = ", ".join(default_points(model)[:6])
        raise ModelError(f"--points: no module named {unknown[0]!r} in this model; valid names include {hint}, ...")
    flat = [p for p in wanted if isinstance(modules[p], (nn.Linear, nn.Flatten))]
    if flat:
        raise ModelError(f"--points: {flat[0]} gives flat features; points are modules with C x H x W outputs")
    idle = set(unused_convs(model)) if any(isinstance(modules[p], nn.Conv2d) for p in wanted) else set()  # one trace
    idle = [p for p in wanted if p in idle]
    if idle:
        raise ModelError(f"--points: {idle[0]} never runs in eval mode (an auxiliary branch); measure another module")
    order = {name: i for i, name in enumerate(modules)}
    return sorted(dict.fromkeys(wanted), key=order.__getitem__)


def num_outputs(model: nn.Module) -> int:
    """The label count of ``model``: its classifier's outputs (see :func:`classifier_name`)."""
    head = dict(model.named_modules())[classifier_name(model)]
    return head.out_features if isinstance(head, nn.Linear) else head.out_channels


def point_conv(model: nn.Module, point: str) -> nn.Conv2d:
    """The convolution whose output channels are the filters of measurement point ``point``.

    A conv is its own point; a block (VGG ``ConvBNReLU``, an MBConv) is measured at its output,
    made by its last conv; a norm/activation module (timm ``BatchNormAct2d``) follows the conv that
    ran last before it with as many channels (in a squeeze-excite gate the activation follows the
    bottleneck conv, though the expanding conv is registered between them).
    """
    modules = dict(model.named_modules())
    module = modules[point]
    if isinstance(module, nn.Conv2d):
        return module
    inner = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if inner:
        return inner[-1]
    ran = _producer(model, point)
    if ran is not None:
        return ran
    previous = None
    for name, m in model.named_modules():
        if name == point:
            break
        if isinstance(m, nn.Conv2d):
            previous = m
    if previous is None:
        raise ConfigError(f"point {point!r} has no convolution before it; measure a conv layer instead")
    return previous


def logits_width(model: nn.Module, image: torch.Tensor, *, role: str = "train") -> int:
    """The label count of ``model``, checked on one of its images: a forward of that image must give a ``(1, K)``
    tensor of logits, and ``K`` must be its classifier's outputs (``classifier=`` names another layer).

    Raises:
        ModelError: the model cannot run on the image, returns no logits tensor, or its classifier is another layer
            (one line each).

    Example:
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
        >>> logits_width(net, torch.zeros(3, 8, 8))
        5
        >>> logits_width(net, torch.zeros(1, 8, 8))  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        prune_snr.errors.ModelError: the model cannot read train='s images (1x8x8 float32): RuntimeError: ...
    """
    param = next(model.parameters(), None)
    try:
        with torch.no_grad(), handed_back(model):
            out = model.eval()(image.unsqueeze(0).to(param.device if param is not None else "cpu"))
    except Exception as exc:  # the user's forward: whatever it raises, one line
        shape = "x".join(map(str, image.shape))
        raise ModelError(
            f"the model cannot read {role}='s images ({shape} {str(image.dtype).removeprefix('torch.')}): {cause(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ModelError(
            f"the model returns a {type(out).__name__}, not a tensor of logits; wrap it in a module whose forward "
            "returns the logits tensor"
        )
    if out.dim() != 2 or out.shape[0] != 1:
        raise ModelError(
            f"the model returns shape {tuple(out.shape)} for one image; logits of shape (1, labels) needed"
        )
    try:
        head, width = classifier_name(model), num_outputs(model)
    except ModelError:
        return out.shape[1]  # no classifier layer: what needs one names it
    if width != out.shape[1]:
        raise ModelError(
            f"the classifier {head!r} has {width} outputs but the model returns {out.shape[1]} logits; name the layer "
            'that gives them with classifier="NAME"'
        )
    return width
