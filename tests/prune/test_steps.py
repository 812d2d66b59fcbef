"""Specs of prune/steps.py: channels pruned to the target, in steps that may each read a fresh measurement."""

import pytest
import torch

import prune_snr
from prune_snr.models import prunable_base


def test_remeasure_prunes_in_equal_steps_each_reading_a_measurement_of_the_pruned_model(vgg_measured, tmp_path):
    import copy

    from prune_snr.prune import prune

    model, result = vgg_measured
    pruned, report = prune(
        copy.deepcopy(model),
        "synthetic",
        target=0.5,
        metric="params",
        criterion="snr",
        allocation="measured",
        iterative_steps=2,
        remeasure=True,
        round_to=1,
        measurement=result,
        finetune_epochs=0,
        device="cpu",
        out=tmp_path,
    )
    first, second = report["search"]["remeasured_steps"]
    assert first["removed"] == pytest.approx(0.25, abs=0.02) and second["removed"] == pytest.approx(0.5, abs=0.02)
    assert first["filters"] == [p["n_filters"] for p in result.points]
    # the second step read a measurement of the model the first step left: its filter counts
    assert all(a <= b for a, b in zip(second["filters"], first["filters"])) and sum(second["filters"]) < sum(
        first["filters"]
    )
    assert first["remeasure_s"] > 0 and "remeasure_s" not in second
    assert 1 - prunable_base(pruned, "params") / prunable_base(model, "params") == pytest.approx(0.5, abs=0.02)
    reloaded = prune_snr.load(tmp_path / "pruned.pt")  # the two steps' histories replay in order
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(reloaded(x), pruned.eval()(x), atol=1e-5)
