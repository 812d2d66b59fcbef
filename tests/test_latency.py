"""Specs of latency.py: ONNX Runtime CPU latency, a pruned model timed against the original in turns."""
import pytest

from prune_snr.models import build_model
from prune_snr.prune import build_importance, prune_to_target


@pytest.mark.slow
def test_the_latency_meter_times_a_pruned_model_against_the_original():
    """The mechanism behind --metric latency. Whether a target lands within 5 % is a timing claim,
    checked by benchmarks/onnx_speed.py --latency-target (not by a unit test on a shared machine)."""
    from prune_snr.latency import LatencyMeter

    model = build_model("vgg16", num_classes=10, width_mult=0.5).eval()  # wide enough to halve with 16-channel steps
    # channel counts aligned for ONNX Runtime's blocked kernels: unaligned ones can run no faster at all
    slim = prune_to_target(model, lambda m: build_importance("l1", model=m), target=0.5, metric="macs", round_to=16).model
    meter = LatencyMeter(model, batch=32)
    try:
        same, smaller = meter.seconds(model), meter.seconds(slim)
    finally:
        meter.close()
    assert same["model"] > 0 and same["reference"] > 0 and 0.5 < same["fraction"] < 2
    assert smaller["fraction"] < 0.85 * same["fraction"], "half the MACs, aligned, must show in ONNX Runtime's timings"
