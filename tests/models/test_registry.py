"""Specs of build_model and the measurement points."""
import pytest
import torch

from prune_snr.errors import ModelError
from prune_snr.models import build_model, default_points, example_input, list_models, resolve_points


@pytest.mark.parametrize("name", list_models() + ["timm:resnet18", "torchvision:resnet18"])
def test_every_registered_model_classifies_32px_inputs(name):
    kwargs = {"width_mult": 0.125} if name == "vgg16" else {}
    model = build_model(name, num_classes=7, **kwargs).eval()
    assert model(example_input(model, 2)).shape == (2, 7)
    rebuilt = build_model(**model.spec)
    assert type(rebuilt) is type(model)


def test_full_width_vgg16_has_14_7m_parameters_and_13_points():
    model = build_model("vgg16", num_classes=10)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 14.7
    assert default_points(model) == [f"features.conv{i}" for i in range(1, 14)]


def test_width_mult_scales_every_conv():
    model = build_model("vgg16", num_classes=10, width_mult=0.25)
    widths = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert widths[:2] == [16, 16] and widths[-1] == 128


def test_efficientnet_points_are_stem_every_block_and_head():
    model = build_model("efficientnet_b0", num_classes=10)
    points = default_points(model)
    assert points[0] == "bn1" and points[-1] == "bn2" and len(points) == 18
    expanded = default_points(model, expanded=True)
    assert "blocks.1.0.bn2" in expanded and expanded.index("blocks.1.0.bn2") < expanded.index("blocks.1.0")


def test_generic_models_are_measured_at_every_conv():
    model = build_model("timm:resnet18", num_classes=10)
    points = default_points(model)
    assert points[0] == "conv1" and all(isinstance(dict(model.named_modules())[p], torch.nn.Conv2d) for p in points)


def test_points_by_name_are_checked_and_put_in_depth_order():
    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    assert resolve_points(model, "features.conv5,features.conv2") == ["features.conv2", "features.conv5"]
    with pytest.raises(ModelError, match="features.conv99"):
        resolve_points(model, "features.conv99")


@pytest.mark.parametrize("name", ["resnet", "hf-hub:foo/bar", "timm:not_a_model", "torchvision:not_a_model"])
def test_unknown_names_and_prefixes_are_refused(name):
    with pytest.raises(ModelError):
        build_model(name, num_classes=10)


def test_width_mult_is_refused_where_it_does_not_apply():
    with pytest.raises(ModelError, match="width"):
        build_model("efficientnet_b0", num_classes=10, width_mult=0.5)
