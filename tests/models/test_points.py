"""Specs of models/points.py: the measurement points of every kind of model, and its classifier."""

import pytest
import torch
from torch import nn

from prune_snr.errors import ModelError
from prune_snr.models import build_model, default_points, example_input, resolve_points


def test_full_width_vgg16_has_14_7m_parameters_and_13_points():
    model = build_model("vgg16", num_classes=10)
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == 14.7
    assert default_points(model) == [f"features.conv{i}" for i in range(1, 14)]


def test_efficientnet_points_are_stem_every_block_and_head():
    model = build_model("efficientnet_b0", num_classes=10)
    points = default_points(model)
    assert points[0] == "bn1" and points[-1] == "bn2" and len(points) == 18
    expanded = default_points(model, expanded=True)
    assert "blocks.1.0.bn2" in expanded and expanded.index("blocks.1.0.bn2") < expanded.index("blocks.1.0")


def test_generic_models_are_measured_once_per_conv_after_its_activation_where_it_has_its_own():
    model = build_model("timm:resnet18", num_classes=10)
    points = default_points(model)
    assert points[:3] == [
        "act1",
        "layer1.0.act1",
        "layer1.0.act2",
    ]  # stem conv -> bn1 -> act1; each block's own activations
    assert "layer2.0.conv2" in points  # the downsample conv runs between conv2 and act2: the conv alone is its point
    torchvision_model = build_model("torchvision:resnet18", num_classes=10)
    # torchvision's blocks call one ReLU twice (after bn1 and after the residual add): its output is not the conv's
    # alone, so the conv itself is the point
    points = default_points(torchvision_model)
    assert points[0] == "relu" and "layer1.0.conv1" in points and "layer1.0.relu" not in points
    assert len(points) == sum(isinstance(m, torch.nn.Conv2d) for m in torchvision_model.modules())


def test_points_by_name_are_checked_and_put_in_depth_order():
    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    assert resolve_points(model, "features.conv5,features.conv2") == ["features.conv2", "features.conv5"]
    with pytest.raises(ModelError, match="features.conv99"):
        resolve_points(model, "features.conv99")


@pytest.mark.parametrize(
    "arch, expected",
    [
        ("torchvision:vgg16_bn", ["features.2", "features.5", "features.9"]),  # each ReLU after conv + BN
        ("torchvision:vgg16", ["features.1", "features.3", "features.6"]),  # each ReLU after a conv
    ],
)
def test_torchvision_vgg_is_measured_after_each_activation(arch, expected):
    model = build_model(arch, num_classes=10, input_size=32)
    points = default_points(model)
    assert points[:3] == expected and len(points) == 13
    assert all(isinstance(dict(model.named_modules())[p], torch.nn.ReLU) for p in points)


def test_torchvision_efficientnet_gets_the_points_of_timms():
    tv = build_model("torchvision:efficientnet_b0", num_classes=10, input_size=32)
    timm_points = default_points(build_model("efficientnet_b0", num_classes=10))
    points = default_points(tv)
    assert points[0] == "features.0" and points[-1] == "features.8" and len(points) == len(timm_points) == 18
    expanded = default_points(tv, expanded=True)
    assert len(expanded) == len(default_points(build_model("efficientnet_b0", num_classes=10), expanded=True))
    assert "features.2.0.block.1" in expanded and "features.1.0.block.0" in expanded  # activated depthwise outputs


def test_any_other_model_is_measured_at_the_activation_after_each_conv_and_skips_branches_eval_never_runs():
    from prune_snr.models.points import unused_convs

    googlenet = build_model("torchvision:googlenet", num_classes=10, input_size=64)
    points = default_points(googlenet)
    assert not any(p.startswith("aux") for p in points) and unused_convs(googlenet) == [
        "aux1.conv.conv",
        "aux2.conv.conv",
    ]
    mobilenet = build_model("torchvision:mobilenet_v2", num_classes=10, input_size=32)
    modules = dict(mobilenet.named_modules())
    assert "features.0.2" in default_points(mobilenet)  # Conv2dNormActivation: conv, BN, ReLU6 -> the ReLU6
    assert all(not isinstance(modules[p], torch.nn.BatchNorm2d) for p in default_points(mobilenet))


def test_a_conv_classifier_is_the_classifier_and_no_measurement_point():
    from prune_snr.models import classifier_name
    from prune_snr.prune import build_importance, prune_to_target

    model = build_model("torchvision:squeezenet1_0", num_classes=10, input_size=64).eval()
    assert classifier_name(model) == "classifier.1"  # 1x1 conv to the 10 labels, then global pooling
    assert not any(p.startswith("classifier") for p in default_points(model))
    outcome = prune_to_target(model, lambda m: build_importance("l1", model=m), target=0.3, metric="params", round_to=1)
    assert outcome.model.classifier[1].out_channels == 10 and outcome.model(example_input(outcome.model, 2)).shape == (
        2,
        10,
    )


def test_a_squeeze_excite_activation_maps_to_the_bottleneck_conv_that_ran_before_it():
    from prune_snr.models import build_model, point_conv

    model = build_model("torchvision:mobilenet_v3_small", num_classes=10, input_size=32)
    se = model.features[1].block[1]  # registered fc1, fc2, activation: the activation follows fc1 when it runs
    assert point_conv(model, "features.1.block.1.activation") is se.fc1


def test_groups_points_give_every_conv_group_of_efficientnet_a_measured_member():
    import torch_pruning as tp

    from prune_snr.models import build_model, classifier_name, example_input, point_conv, resolve_points

    model = build_model("timm:efficientnet_b0", num_classes=10, input_size=32)
    points = resolve_points(model, "groups")
    measured = {id(point_conv(model, p)) for p in points}
    assert set(resolve_points(model, "all", expanded=True)) < set(points)
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model))
    head = dict(model.named_modules())[classifier_name(model)]
    groups = list(graph.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d, nn.Linear]))
    unscored = [g for g in groups if not any(id(dep.target.module) in measured for dep, _ in g)]
    assert len(groups) == 40 and unscored == []
