"""Specs of prune/allocation.py: how much of each layer goes, from the measured accuracies, MACs or SNR."""

import warnings

import pytest
import torch

from prune_snr.prune import Allocation, build_importance, keep_weights, layer_ratios, prune_to_target


def test_allocation_keeps_layers_that_add_accuracy():
    accuracies = [0.6, 0.8, 0.81, 0.9, 0.9]  # gains: first=chance-relative, 0.2, 0.01, 0.09, 0
    u = keep_weights(accuracies, num_classes=10)
    assert u[0] == 1 and u[1] == 1 and u[2] == pytest.approx(0.05) and u[3] == pytest.approx(0.45) and u[4] == 0
    assert layer_ratios(accuracies, 10, 0.6).tolist() == pytest.approx([0, 0, 0.57, 0.33, 0.6])


def test_gain_per_mac_spares_cheap_useful_layers_and_snr_allocation_follows_layer_snr():
    from prune_snr.prune.allocation import gain_per_mac_keep_weights, snr_keep_weights

    accuracies = [0.6, 0.8, 0.81, 0.9, 0.9]  # gains after the first: 0.2, 0.01, 0.09, 0
    macs = [100, 400, 100, 100, 50]  # the 0.2 gain costs 4x the MACs of the 0.09 one
    u = gain_per_mac_keep_weights(accuracies, macs, num_classes=10)
    assert (
        u[0] == 1
        and u[3] == 1
        and u[1] == pytest.approx(0.05 / 0.09)
        and u[2] == pytest.approx(0.01 / 0.09)
        and u[4] == 0
    )
    assert snr_keep_weights([0.5, 1.0, float("inf"), 2.0]).tolist() == pytest.approx([0.25, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("kind", ["measured", "gain-per-mac", "snr"])
def test_measured_allocation_meets_the_target_with_unequal_layer_ratios(vgg_measured, kind):
    model, result = vgg_measured
    alloc = Allocation(
        kind,
        [p["name"] for p in result.points],
        [p["val_accuracy"] for p in result.points],
        10,
        snrs=[p["snr"] for p in result.points],
    )

    def prune(target):
        return prune_to_target(
            model, lambda m: build_importance("snr", model=m, measurement=result), target=target, allocation=alloc
        )

    # how far an allocation reaches follows the measured accuracies and SNRs, which move with the CPU and the
    # threads that trained the tiny model: the spec is a target within reach, met
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # out of reach: the closest point, with a warning
        reach = prune(0.95).removed
    assert reach > 0.15, "an allocation that keeps whole layers still reaches past a few layers' worth"
    target = min(0.3, round(0.8 * reach, 2))
    out = prune(target)
    assert abs(out.removed - target) <= 0.02 and out.unreached is None
    kept = [m.out_channels for m in out.model.modules() if isinstance(m, torch.nn.Conv2d)]
    full = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len({k / f for k, f in zip(kept, full)}) > 1
