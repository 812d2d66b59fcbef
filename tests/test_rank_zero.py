"""Spec: under torchrun the decisions are made once. Rank 0 alone trains the measurement's heads and searches the
pruning ratio; every rank gets the same measurement and the same architecture (two gloo processes on CPU)."""

import json
import os

import pytest
import torch
from torch.utils.data import TensorDataset


def _data():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(96) % 4
    x = torch.randn(96, 3, 32, 32, generator=g) + y[:, None, None, None] * 0.5
    return TensorDataset(x[:64], y[:64]), TensorDataset(x[64:], y[64:])


def _model():
    from prune_snr.models import build_model

    torch.manual_seed(0)
    return build_model("vgg16", num_classes=4, width_mult=0.125, input_size=32).eval()


def _rank(rank: int, world: int, init: str, out: str) -> None:
    import importlib

    from torch import distributed as dist

    import prune_snr
    from prune_snr.prune import build_importance

    pipeline, target_module = (importlib.import_module(f"prune_snr.{m}") for m in ("measure.problem", "prune.target"))

    os.environ["RANK"] = str(rank)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    calls = {"heads": 0, "attempts": 0}
    train_heads, prune_at = pipeline.train_heads, target_module.prune_at

    def counted_heads(*args, **kwargs):
        calls["heads"] += 1
        return train_heads(*args, **kwargs)

    def counted_attempt(*args, **kwargs):
        calls["attempts"] += 1
        return prune_at(*args, **kwargs)

    pipeline.train_heads, target_module.prune_at = counted_heads, counted_attempt
    try:
        train, test = _data()
        m = prune_snr.measure(_model(), train=train, test=test, head_epochs=2, device="cpu", cache_dir=f"{out}.cache")
        outcome = target_module.prune_to_target(
            _model(), lambda net: build_importance("l1", model=net), target=0.5, metric="params", round_to=1
        )
        widths = [c.out_channels for c in outcome.model.modules() if isinstance(c, torch.nn.Conv2d)]
        with open(f"{out}.{rank}", "w") as f:
            json.dump(
                {
                    "calls": calls,
                    "points": m.points,
                    "snr": m.snr(m.points[-1]["name"]).tolist(),
                    "widths": widths,
                    "ratio": outcome.ratio,
                },
                f,
                default=float,
            )
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    from torch import multiprocessing

    tmp = tmp_path_factory.mktemp("rank_zero")
    multiprocessing.spawn(_rank, args=(2, f"file://{tmp / 'rendezvous'}", str(tmp / "rank")), nprocs=2)
    return [json.loads((tmp / f"rank.{r}").read_text()) for r in (0, 1)]


def test_rank_zero_alone_trains_the_heads_and_every_rank_gets_its_measurement(ranks):
    zero, one = ranks
    assert zero["calls"]["heads"] == 1 and one["calls"]["heads"] == 0
    assert zero["points"] == one["points"] and zero["snr"] == one["snr"]


def test_rank_zero_alone_searches_the_ratio_and_the_others_prune_once_at_it(ranks):
    zero, one = ranks
    assert zero["calls"]["attempts"] > 1 and one["calls"]["attempts"] == 1
    assert zero["widths"] == one["widths"] and zero["ratio"] == one["ratio"]
