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
    slim = prune_to_target(
        model, lambda m: build_importance("l1", model=m), target=0.5, metric="macs", round_to=16
    ).model
    meter = LatencyMeter(model, batch=32)
    try:
        same, smaller = meter.seconds(model), meter.seconds(slim)
    finally:
        meter.close()
    assert same["model"] > 0 and same["reference"] > 0 and 0.5 < same["fraction"] < 2
    assert smaller["fraction"] < 0.85 * same["fraction"], "half the MACs, aligned, must show in ONNX Runtime's timings"


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import json
    import os

    import torch
    from torch import distributed as dist

    import prune_snr.latency as latency_module
    from prune_snr.models import build_model

    os.environ["RANK"] = str(rank)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        if rank > 0:  # a rank that timed would fail here

            def refuse(*args, **kwargs):
                raise AssertionError(f"rank {rank} timed a model")

            latency_module.latency_rounds = refuse
        torch.manual_seed(rank)  # the ranks' models differ: only a shared figure makes their fractions agree
        model = build_model("vgg16", num_classes=10, width_mult=0.125).eval()
        meter = latency_module.LatencyMeter(model, batch=1, repeats=3)
        try:
            figures = [meter.fraction(model), meter.seconds(model, batch=2)["model"]]
        finally:
            meter.close()
        with open(f"{out}.{rank}", "w") as f:
            json.dump(figures, f)
    finally:
        dist.destroy_process_group()


def test_under_torchrun_rank_0_alone_times_and_every_rank_gets_its_figures(tmp_path):
    import json

    from torch import multiprocessing

    multiprocessing.spawn(_rank, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "figures")), nprocs=2)
    first, second = (json.loads((tmp_path / f"figures.{r}").read_text()) for r in (0, 1))
    assert first == second
    assert 0.3 < first[0] < 3 and first[1] > 0


def test_a_rank_variable_without_a_process_group_times_in_this_process(monkeypatch):
    """A scheduler may set RANK for a job that never joins a group: the meter then times here, as one process."""
    from prune_snr.latency import LatencyMeter
    from prune_snr.models import build_model

    monkeypatch.setenv("RANK", "1")
    model = build_model("vgg16", num_classes=10, width_mult=0.125).eval()
    meter = LatencyMeter(model, batch=1, repeats=3)
    try:
        assert 0.3 < meter.fraction(model) < 3
    finally:
        meter.close()
