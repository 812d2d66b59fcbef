"""What any ``nn.Module``'s structure says, asked of no family: the generic adapter's answers.

One eval-mode forward traces the order modules run in (:func:`trace`); the points are the
activations after the convs that run (:func:`traced_points`); the classifier is the last ``Linear``
or a last conv with one output per label (:func:`structural_classifier`), unless the user named it;
a cut point is a boundary of the sequential stages of the feature path (:func:`stage_boundary`); a
block with an identity shortcut can be dropped (:func:`identity_shortcut_blocks`).
"""

from __future__ import annotations

import weakref

import torch
from torch import nn

from ..errors import ModelError
from .inputs import example_input

ACTIVATIONS = (
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.Hardswish,
    nn.GELU,
    nn.Mish,
    nn.LeakyReLU,
    nn.ELU,
    nn.PReLU,
    nn.SELU,
    nn.CELU,
)
PASS_THROUGH = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.Identity,
    nn.Dropout,
)
POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def is_pool(module: nn.Module) -> bool:
    return isinstance(module, POOLS) or type(module).__name__ == "SelectAdaptivePool2d"


def trace(model: nn.Module) -> tuple[list[str], dict[str, tuple], dict[str, int]]:
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


def traced_points(model: nn.Module, *, classifier: str | None) -> list[str]:
    """Each conv that runs once in eval, at the activation that follows it (past a norm of its width), else at the
    module that wraps it alone, else at the conv itself (the generic :class:`~prune_snr.models.adapters.Adapter`);
    a conv ``classifier`` (its outputs are the logits) is no point."""
    order, shapes, calls = trace(model)
    modules = dict(model.named_modules())
    points = []
    for i, name in enumerate(order):
        conv = modules[name]
        if not isinstance(conv, nn.Conv2d) or calls[name] != 1 or name == classifier:
            continue
        width = shapes[name][:2]
        point = name
        for follower in order[i + 1 :]:
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
            if (
                parent
                and sum(isinstance(m, nn.Conv2d) for m in modules[parent].modules()) == 1
                and not isinstance(modules[parent], nn.Sequential)
                or _is_conv_norm_act(modules.get(parent))
            ):
                point = parent
        points.append(point)
    return list(dict.fromkeys(points))


def _is_conv_norm_act(module: nn.Module | None) -> bool:
    """A ``Sequential`` of one conv, a norm and an activation (torchvision's ``Conv2dNormActivation``)."""
    if not isinstance(module, nn.Sequential):
        return False
    kinds = [type(m) for m in module.children()]
    return len(kinds) == 3 and issubclass(kinds[0], nn.Conv2d) and issubclass(kinds[2], ACTIVATIONS)


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


def named_classifier(model: nn.Module) -> str | None:
    """The classifier the user named (``classifier=``) or the model's ``spec`` records, if any."""
    return (getattr(model, "spec", None) or {}).get("classifier") or _CLASSIFIERS.get(model)


def structural_classifier(model: nn.Module) -> str:
    """The last ``nn.Linear``, else a last convolution whose output channels are the labels (SqueezeNet's 1x1 conv
    before global pooling)."""
    names = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if names:
        return names[-1]
    convs = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    labels = (getattr(model, "spec", None) or {}).get("num_classes") or getattr(model, "num_classes", None)
    if convs and labels and convs[-1][1].out_channels == labels:
        return convs[-1][0]
    raise ModelError(
        f"{type(model).__name__} has no nn.Linear classifier and its last conv does not output the labels; "
        'name the layer that gives the logits with classifier="NAME"'
    )


def head_names(model: nn.Module, classifier: str) -> tuple[str | None, str]:
    """Top-level names of the global pooling (if any) and of the classifier's top-level ancestor."""
    pools = [name for name, m in model.named_children() if is_pool(m)]
    return (pools[-1] if pools else None), classifier.split(".")[0]


def stage_boundary(model: nn.Module, point: str, classifier: str) -> bool:
    """Whether ``point`` lies on the feature path at a sequential boundary (so the prefix is a model)."""
    parts = point.split(".")
    if point not in dict(model.named_modules()) or not parts[0]:
        return False
    if parts[0] in head_names(model, classifier):
        return False
    parent = model
    for part in parts[:-1]:
        parent = getattr(parent, part)
        if not isinstance(parent, nn.Sequential):
            return False
    return True


def has_identity_shortcut(block: nn.Module) -> bool:
    if hasattr(block, "has_skip"):  # timm EfficientNet / MobileNet blocks
        return bool(block.has_skip)
    return hasattr(block, "downsample") and block.downsample is None and hasattr(block, "conv1")


def identity_shortcut_blocks(model: nn.Module) -> list[str]:
    """Names (input to output) of the blocks of ``model``'s sequential stages that have an identity shortcut."""
    names = []
    for stage_name, stage in model.named_modules():
        if not isinstance(stage, nn.Sequential) or not stage_name:
            continue
        for child_name, block in stage.named_children():
            if not isinstance(block, nn.Identity) and has_identity_shortcut(block):
                names.append(f"{stage_name}.{child_name}")
    return names
