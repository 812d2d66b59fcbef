"""VGG-16 in the CIFAR style: 13 conv3x3+BN+ReLU, 5 max-pools, one linear classifier."""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from ..errors import ModelError
from .adapters import Adapter, register_adapter
from .registry import register_model

VGG16_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


class ConvBNReLU(nn.Module):
    """One measurement point: its output is the activated feature map the paper measures."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class VGG(nn.Module):
    """``features`` holds ``conv1..convN`` and ``pool1..pool5``; ``classifier`` is one linear layer.

    Global average pooling before the classifier is a no-op at 32x32 (the map is 1x1 after
    five pools) and lets the same network take larger inputs.
    """

    def __init__(
        self,
        cfg=VGG16_CFG,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        width_mult: float = 1.0,
        cut: int | None = None,
        head_pool: int = 1,
    ):
        """``cut=k`` keeps only the first k conv blocks (and the pools before them); the classifier
        then sees the last block's output pooled to ``head_pool x head_pool`` (truncation)."""
        super().__init__()
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        channels, n_conv, n_pool = in_chans, 0, 0
        for item in cfg:
            if cut is not None and n_conv == cut:
                break
            if item == "M":
                n_pool += 1
                layers[f"pool{n_pool}"] = nn.MaxPool2d(2)
            else:
                n_conv += 1
                width = max(1, int(round(item * width_mult)))
                layers[f"conv{n_conv}"] = ConvBNReLU(channels, width)
                channels = width
        self.features = nn.Sequential(layers)
        self.pool = nn.AdaptiveAvgPool2d(head_pool)
        self.classifier = nn.Linear(channels * head_pool * head_pool, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x):
        return self.pool(self.features(x)).flatten(1)

    def forward(self, x):
        return self.classifier(self.forward_features(x))


@register_adapter(VGG)
class VGGAdapter(Adapter):
    """Each conv block is a point and a cut point: the model cut after the k-th is rebuilt with its first k
    blocks (``cut=k``) rather than by cutting its modules (:mod:`prune_snr.models.truncation`)."""

    def points(self, model: nn.Module, *, expanded: bool = False) -> list[str]:
        return [f"features.{name}" for name, m in model.features.named_children() if isinstance(m, ConvBNReLU)]

    def cut_spec(self, model: nn.Module, point: str, *, head_pool: int) -> dict | None:
        points = self.points(model)
        return {"cut": points.index(point) + 1, "head_pool": head_pool} if point in points else None


@register_model
def vgg16(
    *,
    num_classes: int,
    in_chans: int = 3,
    width_mult: float | None = None,
    pretrained: bool = False,
    cut: int | None = None,
    head_pool: int = 1,
) -> VGG:
    if pretrained:
        raise ModelError("vgg16 (CIFAR style) has no pretrained weights; train it with prune-snr train")
    return VGG(
        VGG16_CFG,
        num_classes=num_classes,
        in_chans=in_chans,
        width_mult=width_mult or 1.0,
        cut=cut,
        head_pool=head_pool,
    )
