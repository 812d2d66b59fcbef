"""Specs of prune/truncate.py: where the cut goes (measured, deeper, budget) and a cut model that computes exactly
the measured head of its cut point, for VGG and beyond."""

import pytest
import torch
from torch.nn import functional as F

from prune_snr.measure import measure
from prune_snr.models import build_model, default_points, prunable_base
from prune_snr.prune.truncate import truncate


def head_logits(model, measurement, point, x):
    """The measured linear head applied to ``point``'s pooled output (the definition)."""
    store = {}
    handle = dict(model.named_modules())[point].register_forward_hook(lambda m, i, o: store.update(out=o))
    try:
        with torch.no_grad():
            model.eval()(x)
    finally:
        handle.remove()
    pool = measurement.meta["options"]["pool"]
    features = F.adaptive_avg_pool2d(store["out"], pool).flatten(1)
    head = measurement.heads[point]
    return features @ head["weight"].flatten(1).t() + head["bias"]


@pytest.fixture(scope="module")
def resnet_measured(tmp_path_factory):
    model = build_model("timm:resnet18", num_classes=10).eval()
    result = measure(
        model,
        "synthetic",
        points="layer1.1,layer2.1,layer3.1",
        head_epochs=2,
        device="cpu",
        cache_dir=tmp_path_factory.mktemp("resnetcache"),
    )
    return model, result


@pytest.mark.parametrize(
    "measured,point",
    [
        ("effnet_measured", "bn1"),
        ("effnet_measured", "blocks.1.0"),
        ("effnet_measured", "blocks.3.2"),
        ("resnet_measured", "layer1.1"),
        ("resnet_measured", "layer2.1"),
    ],
)
def test_a_cut_model_computes_the_measured_head_of_its_cut_point(request, measured, point):
    model, result = request.getfixturevalue(measured)
    cut = truncate(model, result, point)
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(cut.eval()(x), head_logits(model, result, point, x), atol=1e-4)
    assert sum(p.numel() for p in cut.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_cut_efficientnet_drops_conv_head_and_the_later_blocks(effnet_measured):
    model, result = effnet_measured
    cut = truncate(model, result, "blocks.3.2")
    assert type(cut.conv_head).__name__ == "Identity" and len(cut.blocks) == 4 and len(cut.blocks[3]) == 3


def test_a_cut_model_rebuilds_from_its_spec(resnet_measured):
    model, result = resnet_measured
    cut = truncate(model, result, "layer2.1")
    again = build_model(cut.spec.pop("name"), **cut.spec)
    again.load_state_dict(cut.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), cut.eval()(x))


def test_truncated_vgg_computes_exactly_the_measured_head(vgg_measured):
    from torch.nn import functional as F

    from prune_snr.prune.truncate import truncate

    model, result = vgg_measured
    cut = truncate(model, result, "features.conv7").eval()
    assert len(default_points(cut)) == 7 and cut.spec["cut"] == 7
    x = torch.randn(4, 3, 32, 32)
    store = {}
    handle = model.features.conv7.register_forward_hook(lambda m, i, o: store.update(x=o))
    model(x)
    handle.remove()
    head = result.heads["features.conv7"]
    expected = F.adaptive_avg_pool2d(store["x"], 2).flatten(1) @ head["weight"].flatten(1).t() + head["bias"]
    assert torch.allclose(cut(x), expected, atol=1e-4)


@pytest.mark.parametrize("useful_from", ["features.conv1", "features.conv12"])
def test_with_truncation_the_target_still_counts_from_the_original_model(vgg_measured, useful_from):
    import copy
    import dataclasses

    from prune_snr.prune import prune

    model, result = vgg_measured
    # Heads before `useful_from` made useless: the cut lands there (conv1: the cut alone removes
    # more than the target; conv12: channels must be pruned for the rest).
    names = [p["name"] for p in result.points]
    points = [
        {**p, "val_accuracy": p["val_accuracy"] if i >= names.index(useful_from) else 0.1}
        for i, p in enumerate(result.points)
    ]
    pruned, report = prune(
        copy.deepcopy(model),
        "synthetic",
        target=0.5,
        criterion="l1",
        truncate=True,
        cut="measured",
        round_to=1,
        measurement=dataclasses.replace(result, points=points),
        finetune_epochs=0,
        device="cpu",
    )
    actually_removed = 1 - prunable_base(pruned, "params") / prunable_base(model, "params")
    assert report["truncation"]["cut_after"] == useful_from
    assert report["search"]["removed"] == pytest.approx(actually_removed, abs=1e-6)
    if useful_from == "features.conv1":
        assert "truncation alone" in report["search"]["note"] and actually_removed > 0.9
    else:
        assert 0 < report["truncation"]["target_left_for_channels"] < 0.5
        assert actually_removed == pytest.approx(0.5, abs=0.02)


@pytest.mark.parametrize("metric", ["params", "macs"])
def test_the_depth_baseline_cuts_as_deep_as_the_budget_allows_and_reads_no_accuracy(vgg_measured, metric):
    import copy
    import dataclasses

    from prune_snr.prune import prune

    model, result = vgg_measured
    shuffled = [{**p, "val_accuracy": a} for p, a in zip(result.points, reversed(result.val_accuracies()))]
    runs = [
        prune(
            copy.deepcopy(model),
            "synthetic",
            target=0.6,
            metric=metric,
            truncate=True,
            cut="budget",
            round_to=1,
            measurement=dataclasses.replace(result, points=points),
            finetune_epochs=0,
            device="cpu",
        )[1]
        for points in (result.points, shuffled)
    ]
    report = runs[0]
    assert runs[1]["truncation"]["cut_after"] == report["truncation"]["cut_after"], (
        "accuracy does not move the budget cut"
    )
    rows = [r for r in report["truncation"]["candidates"][:-1] if r["cuttable"]]
    meeting = [r["point"] for r in rows if r["kept"] <= 0.4 / 0.98]
    assert report["truncation"]["cut_after"] == meeting[-1] and report["cut"] == "budget"
    deeper = rows[[r["point"] for r in rows].index(meeting[-1]) + 1]
    assert deeper["kept"] > 0.4 / 0.98, "the next deeper cut would not meet the budget"
    assert "truncation alone" in report["search"]["note"]


@pytest.mark.slow  # a bisection on ONNX Runtime timings: seconds per candidate on a shared CPU
def test_truncation_under_a_latency_budget_sizes_its_candidates_by_macs(vgg_measured):
    import copy

    from prune_snr.prune import prune

    model, result = vgg_measured
    _, report = prune(
        copy.deepcopy(model),
        "synthetic",
        target=0.3,
        metric="latency",
        criterion="l1",
        truncate=True,
        round_to=1,
        measurement=result,
        finetune_epochs=0,
        device="cpu",
    )
    t = report["truncation"]
    assert t["kept_of"] == "macs" and all(0 < c["kept"] <= 1 for c in t["candidates"] if c["cuttable"])
    assert report["latency"]["batch_32"]["fraction"] < 1


@pytest.mark.parametrize("eligible_from,expected", [(1, "p3"), (4, "p4"), (6, None)])
def test_the_deeper_cut_is_the_measured_one_unless_the_budget_allows_a_deeper_one(eligible_from, expected):
    from prune_snr.prune.truncate import pick_cut

    kept = [
        0.1,
        0.2,
        0.35,
        0.5,
        0.7,
        0.85,
        1.0,
    ]  # what a cut after each point keeps; p3 is the deepest meeting a 50 % target
    rows = [{"point": f"p{i}", "eligible": i >= eligible_from, "cuttable": True, "kept": k} for i, k in enumerate(kept)]
    assert pick_cut(rows, None, "budget", target=0.5, metric="macs") == "p3"
    assert pick_cut(rows, None, "measured", target=0.5, metric="macs") == (
        f"p{eligible_from}" if eligible_from < 6 else None
    )
    assert pick_cut(rows, None, "deeper", target=0.5, metric="macs") == expected
    assert pick_cut(rows, None, "deeper", target=0.5, metric="latency") == pick_cut(
        rows, None, "measured", target=0.5, metric="latency"
    )
