"""Measurement points: the one place that says which layer outputs prune-snr measures.

A point is a module name whose forward output (N x C x H x W) is the measured feature map,
taken after the activation (METHOD.md):

- prune-snr's VGG: each conv block after BN+ReLU (the model lists them itself);
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

from ..errors import ConfigError, ModelError
from .factory import example_input
from .graph import ChannelGraph

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.GELU, nn.Mish, nn.LeakyReLU, nn.ELU, nn.PReLU, nn.SELU, nn.CELU)
PASS_THROUGH = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm, nn.Identity, nn.Dropout)


def expanded_by_default(model: nn.Module) -> bool:
    """Whether a measurement made for pruning should include the depthwise points (``--expanded``):
    EfficientNet's MBConv widths live there, so its SNR must reach them (METHOD.md)."""
    return _is_timm_efficientnet(model) or _is_torchvision_efficientnet(model)


def _is_timm_efficientnet(model: nn.Module) -> bool:
    try:
        from timm.models.efficientnet import EfficientNet
    except ImportError:  # pragma: no cover - timm is a dependency
        return False
    return isinstance(model, EfficientNet)


def _is_torchvision_efficientnet(model: nn.Module) -> bool:
    from torchvision.models.efficientnet import EfficientNet

    return isinstance(model, EfficientNet)


def _timm_efficientnet_points(model: nn.Module, expanded: bool) -> list[str]:
    points = ["bn1"]
    for stage_idx, stage in enumerate(model.blocks):
        for block_idx, block in enumerate(stage):
            name = f"blocks.{stage_idx}.{block_idx}"
            if expanded and hasattr(block, "conv_dw") and hasattr(block, "conv_pw"):
                points.append(f"{name}.bn2")
            points.append(name)
    return points + ["bn2"]


def _torchvision_efficientnet_points(model: nn.Module, expanded: bool) -> list[str]:
    """``features.0`` (stem), each ``features.i.j`` MBConv output, ``features.8`` (head conv); with
    ``expanded``, each MBConv's depthwise ``Conv2dNormActivation``."""
    from torchvision.ops.misc import Conv2dNormActivation

    points = []
    for stage_name, stage in model.features.named_children():
        if isinstance(stage, Conv2dNormActivation):
            points.append(f"features.{stage_name}")
            continue
        for block_name, block in stage.named_children():
            name = f"features.{stage_name}.{block_name}"
            parts = [(n, m) for n, m in block.block.named_children() if isinstance(m, Conv2dNormActivation)]
            if expanded and len(parts) >= 2:  # [expand,] depthwise, project: as timm's (its DepthwiseSeparable too)
                points.append(f"{name}.block.{parts[-2][0]}")
            points.append(name)
    return points


def _trace(model: nn.Module) -> tuple[list[str], dict[str, tuple], dict[str, int]]:
    """One eval-mode forward: leaf modules in call order, their output shapes, and call counts."""
    order: list[str] = []
    shapes: dict[str, tuple] = {}
    calls: dict[str, int] = {}
    names = {m: n for n, m in model.named_modules()}
    handles = []

    def hook(module, _inputs, output):
        name = names[module]
        order.append(name)
        calls[name] = calls.get(name, 0) + 1
        shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else ()

    was_training = model.training
    try:
        for m in model.modules():
            if not list(m.children()) or isinstance(m, nn.Conv2d):
                handles.append(m.register_forward_hook(hook))
        model.eval()
        with torch.no_grad():
            model(example_input(model))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return order, shapes, calls


def _traced_points(model: nn.Module) -> list[str]:
    order, shapes, calls = _trace(model)
    modules = dict(model.named_modules())
    points = []
    classifier = _conv_classifier(model)
    for i, name in enumerate(order):
        conv = modules[name]
        if not isinstance(conv, nn.Conv2d) or calls[name] != 1 or name == classifier:
            continue
        width = shapes[name][:2]
        point = name
        for follower in order[i + 1:]:
            module = modules[follower]
            if shapes.get(follower, ())[:2] != width or calls[follower] != 1:
                break
            if isinstance(module, ACTIVATIONS):
                point = follower
                break
            if not isinstance(module, PASS_THROUGH):
                break
        if point == name:
            parent = name.rpartition(".")[0]
            if parent and sum(isinstance(m, nn.Conv2d) for m in modules[parent].modules()) == 1 \
                    and not isinstance(modules[parent], nn.Sequential) or _is_conv_norm_act(modules.get(parent)):
                point = parent
        points.append(point)
    return list(dict.fromkeys(points))


#: model -> {leaf module name: name of the conv that ran last before it with as many channels}, one trace per model.
_PRODUCERS: "weakref.WeakKeyDictionary[nn.Module, dict[str, str]]" = weakref.WeakKeyDictionary()


def _producer(model: nn.Module, point: str) -> nn.Conv2d | None:
    """The conv that ran last before ``point``'s first call with as many output channels (None: no such conv, or
    ``point`` is not a leaf the trace sees). Pruning keeps the call order, so the names stay right for a pruned model."""
    if model not in _PRODUCERS:
        order, shapes, _ = _trace(model)
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


def _is_conv_norm_act(module: nn.Module | None) -> bool:
    """A ``Sequential`` of one conv, a norm and an activation (torchvision's ``Conv2dNormActivation``)."""
    if not isinstance(module, nn.Sequential):
        return False
    kinds = [type(m) for m in module.children()]
    return len(kinds) == 3 and issubclass(kinds[0], nn.Conv2d) and issubclass(kinds[2], ACTIVATIONS)


def _conv_classifier(model: nn.Module) -> str | None:
    """A conv that is the classifier (its outputs are the logits): never a measurement point."""
    try:
        name = classifier_name(model)
    except ModelError:
        return None
    return name if isinstance(dict(model.named_modules())[name], nn.Conv2d) else None


def unused_convs(model: nn.Module) -> list[str]:
    """Convolutions that an eval-mode forward never runs (auxiliary heads): never measurement points."""
    order, _, _ = _trace(model)
    ran = set(order)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and n not in ran]


def default_points(model: nn.Module, *, expanded: bool = False) -> list[str]:
    """Ordered (input to output) module names to measure for ``model``."""
    if hasattr(model, "measurement_points"):
        return list(model.measurement_points())
    if _is_timm_efficientnet(model):
        return _timm_efficientnet_points(model, expanded)
    if _is_torchvision_efficientnet(model):
        return _torchvision_efficientnet_points(model, expanded)
    return _traced_points(model)


def side_points(model: nn.Module) -> list[str]:
    """Points beyond the default (expanded) ones so that every channel group torch-pruning prunes has a measured
    member: one traced point for each group without one (a squeeze-excite gate's bottleneck, a conv that no default
    point follows). Without them a measured criterion scores those groups by magnitude. The layer allocation and
    the cut read the default points only (a gate's accuracy is no step of the network's depth)."""
    names = {id(m): n for n, m in model.named_modules()}
    measured = {names[id(point_conv(model, p))] for p in default_points(model, expanded=True)}
    by_conv = {}
    for p in _traced_points(model):
        by_conv.setdefault(names[id(point_conv(model, p))], p)
    graph = ChannelGraph(model, example_input(model), ignored=[classifier_name(model)])
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
    idle = set(unused_convs(model)) if any(isinstance(modules[p], nn.Conv2d) for p in wanted) else set()  # one trace
    idle = [p for p in wanted if p in idle]
    if idle:
        raise ModelError(f"--points: {idle[0]} never runs in eval mode (an auxiliary branch); measure another module")
    order = {name: i for i, name in enumerate(modules)}
    return sorted(dict.fromkeys(wanted), key=order.__getitem__)


#: A user's model -> the name of its classifier, where the user named it (``classifier=``).
_CLASSIFIERS: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()


def name_classifier(model: nn.Module, name: str | None) -> None:
    """Record ``name`` (``classifier="head.3"``) as ``model``'s classifier; one line if it names no such layer."""
    if name is None:
        return
    module = dict(model.named_modules()).get(name)
    if not isinstance(module, (nn.Linear, nn.Conv2d)):
        raise ModelError(f"classifier={name!r}: {type(model).__name__} has no Linear or Conv2d layer of that name")
    _CLASSIFIERS[model] = name


def classifier_name(model: nn.Module) -> str:
    """The final classifier (never pruned on its output side): the one the user named (``classifier=``), else the
    last ``nn.Linear``, else a last convolution whose output channels are the labels (SqueezeNet's 1x1 conv before
    global pooling)."""
    named = (getattr(model, "spec", None) or {}).get("classifier") or _CLASSIFIERS.get(model)
    if named:
        return named
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if names:
        return names[-1]
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    labels = (getattr(model, "spec", None) or {}).get("num_classes") or getattr(model, "num_classes", None)
    if convs and labels and convs[-1][1].out_channels == labels:
        return convs[-1][0]
    raise ModelError(f"{type(model).__name__} has no nn.Linear classifier and its last conv does not output the labels; "
                     "name the layer that gives the logits with classifier=\"NAME\"")


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
