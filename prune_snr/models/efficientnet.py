"""EfficientNet-B0 through timm (it runs at 32x32 as well as at ImageNet size)."""

from __future__ import annotations

from ..errors import ModelError
from .registry import register_model


@register_model
def efficientnet_b0(*, num_classes: int, in_chans: int = 3, width_mult: float | None = None, pretrained: bool = False):
    import timm

    if width_mult not in (None, 1, 1.0):
        raise ModelError(
            "efficientnet_b0 has a fixed width; for other widths use timm:efficientnet_b1..b7 or drop --width-mult"
        )
    return timm.create_model("efficientnet_b0", pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
