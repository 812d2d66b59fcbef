"""Specs of prune/target.py: the bisection to --target, for every kind of model, and channel alignment (--round-to)."""

import math

import pytest

from prune_snr.errors import ConfigError
from prune_snr.models import build_model, count, example_input, point_conv, prunable_base
from prune_snr.prune import build_importance, prune_to_target
from prune_snr.prune.target import Allocation


def removed(before, after, metric):
    return (count(before)[metric] - count(after)[metric]) / prunable_base(before, metric)


@pytest.mark.parametrize("metric", ["params", "macs"])
def test_vgg_snr_pruning_lands_within_two_points_of_the_target(vgg_measured, metric):
    model, result = vgg_measured
    out = prune_to_target(
        model, lambda m: build_importance("snr", model=m, measurement=result), target=0.4, metric=metric
    )
    assert abs(removed(model, out.model, metric) - 0.4) <= 0.02
    assert out.model(example_input(out.model, 2)).shape == (2, 10)


@pytest.mark.parametrize("metric", ["params", "macs"])
def test_efficientnet_pruning_lands_within_two_points_of_the_target(effnet_measured, metric):
    model, result = effnet_measured
    out = prune_to_target(
        model, lambda m: build_importance("snr", model=m, measurement=result), target=0.5, metric=metric
    )
    assert abs(out.removed - 0.5) <= 0.02 and abs(removed(model, out.model, metric) - 0.5) <= 0.02
    assert out.model(example_input(out.model, 2)).shape == (2, 10)


def test_generic_timm_model_prunes_to_target():
    model = build_model("timm:resnet18", num_classes=10).eval()
    out = prune_to_target(model, lambda m: build_importance("l1", model=m), target=0.5, metric="params")
    assert abs(removed(model, out.model, "params") - 0.5) <= 0.02


@pytest.mark.parametrize("target", [0.0, 1.0, -1.0, 1.5, math.nan])
def test_targets_outside_zero_one_are_refused(vgg_measured, target):
    model, _ = vgg_measured
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prune_to_target(model, lambda m: build_importance("l1", model=m), target=target)


def test_an_exact_target_that_channel_alignment_blocks_names_round_to_in_its_error():
    model = build_model(
        "vgg16", num_classes=10, width_mult=0.25
    ).eval()  # 16-channel layers: aligned to 16 they cannot shrink
    l1 = lambda m: build_importance("l1", model=m)  # noqa: E731
    with pytest.raises(ConfigError, match="round_to=16.*round_to=1"):
        prune_to_target(model, l1, target=0.6, metric="macs", round_to=16, exact=True)
    assert abs(prune_to_target(model, l1, target=0.6, metric="macs", round_to=1).removed - 0.6) <= 0.02


def test_an_unreachable_target_lands_on_the_closest_reachable_point_with_a_warning_naming_it():
    model = build_model("vgg16", num_classes=10, width_mult=0.25).eval()
    l1 = lambda m: build_importance("l1", model=m)  # noqa: E731
    with pytest.warns(UserWarning, match=r"round_to=16.*pruned to that closest point, (\d+\.\d)%"):
        outcome = prune_to_target(model, l1, target=0.6, metric="macs", round_to=16)
    assert outcome.unreached and outcome.removed < 0.6 - 0.02  # what alignment allows, short of the target
    assert count(outcome.model)["macs"] < count(model)["macs"]


def test_alignment_that_would_empty_a_layer_at_the_largest_ratio_does_not_hide_the_reachable_target():
    """At r_max = 1 the measured allocation asks the last conv (64 channels) to keep 20 %, 12.8, which --round-to 16
    rounds down to 0: torch-pruning then leaves the layer whole. Below that ratio it keeps 16, 32 or 48 channels, and
    keeping 16 removes about 12 % of the prunable params."""
    model = build_model("vgg16", num_classes=10, width_mult=0.125).eval()
    points = ["features.conv7", "features.conv13"]
    allocation = Allocation(
        "measured", points, [0.9, 0.3], num_classes=100
    )  # conv13 adds nothing: it gives up the most
    out = prune_to_target(
        model,
        lambda m: build_importance("l1", model=m),
        target=0.12,
        metric="params",
        allocation=allocation,
        round_to=16,
    )
    assert out.unreached is None and abs(out.removed - 0.12) <= 0.02, out.unreached
    assert point_conv(out.model, "features.conv13").out_channels % 16 == 0
