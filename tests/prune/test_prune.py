"""Specs of structural pruning: targets, reload, truncation, AFCC, allocation."""
import math

import pytest
import torch

import prune_snr
from prune_snr.checkpoint import save_checkpoint
from prune_snr.errors import ConfigError
from prune_snr.models import build_model, example_input
from prune_snr.models import count, prunable_base
from prune_snr.prune import Allocation, build_importance, keep_weights, layer_ratios, prune_to_target


def removed(before, after, metric):
    return (count(before)[metric] - count(after)[metric]) / prunable_base(before, metric)


@pytest.mark.parametrize("metric", ["params", "macs"])
def test_vgg_snr_pruning_lands_within_two_points_of_the_target(vgg_measured, metric):
    model, result = vgg_measured
    out = prune_to_target(model, lambda m: build_importance("snr", model=m, measurement=result), target=0.4, metric=metric)
    assert abs(removed(model, out.model, metric) - 0.4) <= 0.02
    assert out.model(example_input(out.model, 2)).shape == (2, 10)


@pytest.mark.parametrize("metric", ["params", "macs"])
def test_efficientnet_pruning_lands_within_two_points_of_the_target(effnet_measured, metric):
    model, result = effnet_measured
    out = prune_to_target(model, lambda m: build_importance("snr", model=m, measurement=result), target=0.5, metric=metric)
    assert abs(out.removed - 0.5) <= 0.02 and abs(removed(model, out.model, metric) - 0.5) <= 0.02
    assert out.model(example_input(out.model, 2)).shape == (2, 10)


def test_generic_timm_model_prunes_to_target():
    model = build_model("timm:resnet18", num_classes=10).eval()
    out = prune_to_target(model, lambda m: build_importance("l1", model=m), target=0.5, metric="params")
    assert abs(removed(model, out.model, "params") - 0.5) <= 0.02


@pytest.mark.parametrize("name", ["vgg16", "efficientnet_b0"])
def test_pruned_models_reload_through_their_pruning_history(tmp_path, name):
    model = build_model(name, num_classes=10, **({"width_mult": 0.25} if name == "vgg16" else {})).eval()
    out = prune_to_target(model, lambda m: build_importance("l2", model=m), target=0.3)
    save_checkpoint(tmp_path / "pruned.pt", {"kind": "pruned", "model": out.model.state_dict(), "pruning": out.history,
                                             "config": {"model": out.model.spec}})
    reloaded = prune_snr.load(tmp_path / "pruned.pt")
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(reloaded(x), out.model.eval()(x), atol=1e-5)
    assert count(reloaded) == count(out.model)


@pytest.mark.parametrize("target", [0.0, 1.0, -1.0, 1.5, math.nan])
def test_targets_outside_zero_one_are_refused(vgg_measured, target):
    model, _ = vgg_measured
    with pytest.raises(ConfigError, match="between 0 and 1"):
        prune_to_target(model, lambda m: build_importance("l1", model=m), target=target)


def test_allocation_keeps_layers_that_add_accuracy():
    accuracies = [0.6, 0.8, 0.81, 0.9, 0.9]  # gains: first=chance-relative, 0.2, 0.01, 0.09, 0
    u = keep_weights(accuracies, num_classes=10)
    assert u[0] == 1 and u[1] == 1 and u[2] == pytest.approx(0.05) and u[3] == pytest.approx(0.45) and u[4] == 0
    assert layer_ratios(accuracies, 10, 0.6).tolist() == pytest.approx([0, 0, 0.57, 0.33, 0.6])


def test_gain_per_mac_spares_cheap_useful_layers_and_snr_allocation_follows_layer_snr():
    from prune_snr.prune.allocation import gain_per_mac_keep_weights, snr_keep_weights

    accuracies = [0.6, 0.8, 0.81, 0.9, 0.9]  # gains after the first: 0.2, 0.01, 0.09, 0
    macs = [100, 400, 100, 100, 50]            # the 0.2 gain costs 4x the MACs of the 0.09 one
    u = gain_per_mac_keep_weights(accuracies, macs, num_classes=10)
    assert u[0] == 1 and u[3] == 1 and u[1] == pytest.approx(0.05 / 0.09) and u[2] == pytest.approx(0.01 / 0.09) and u[4] == 0
    assert snr_keep_weights([0.5, 1.0, float("inf"), 2.0]).tolist() == pytest.approx([0.25, 0.5, 1.0, 1.0])


@pytest.mark.parametrize("kind", ["measured", "gain-per-mac", "snr"])
def test_measured_allocation_meets_the_target_with_unequal_layer_ratios(vgg_measured, kind):
    model, result = vgg_measured
    alloc = Allocation(kind, [p["name"] for p in result.points], [p["val_accuracy"] for p in result.points], 10,
                       snrs=[p["snr"] for p in result.points])
    out = prune_to_target(model, lambda m: build_importance("snr", model=m, measurement=result), target=0.4, allocation=alloc)
    assert abs(out.removed - 0.4) <= 0.02
    kept = [m.out_channels for m in out.model.modules() if isinstance(m, torch.nn.Conv2d)]
    full = [m.out_channels for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len({k / f for k, f in zip(kept, full)}) > 1


def test_truncated_vgg_computes_exactly_the_measured_head(vgg_measured):
    from prune_snr.prune.truncate import truncate
    from torch.nn import functional as F

    model, result = vgg_measured
    cut = truncate(model, result, "features.conv7").eval()
    assert len(cut.measurement_points()) == 7 and cut.spec["cut"] == 7
    x = torch.randn(4, 3, 32, 32)
    store = {}
    handle = model.features.conv7.register_forward_hook(lambda m, i, o: store.update(x=o))
    model(x)
    handle.remove()
    head = result.heads["features.conv7"]
    expected = F.adaptive_avg_pool2d(store["x"], 2).flatten(1) @ head["weight"].flatten(1).t() + head["bias"]
    assert torch.allclose(cut(x), expected, atol=1e-4)


def test_afcc_zeroes_exactly_the_weights_outside_filter_clusters(vgg_measured):
    import copy

    from prune_snr.data import build_dataset
    from prune_snr.prune.afcc import apply_afcc

    model, _ = vgg_measured
    m = copy.deepcopy(model)
    stats = apply_afcc(m, build_dataset("synthetic", "test", augment=False))
    assert stats["weights_before"] == m.classifier.weight.numel()
    assert 0 < stats["weights_after"] < stats["weights_before"]
    assert int((m.classifier.weight != 0).sum()) == stats["weights_after"]


@pytest.mark.parametrize("useful_from", ["features.conv1", "features.conv12"])
def test_with_truncation_the_target_still_counts_from_the_original_model(vgg_measured, useful_from):
    import copy
    import dataclasses

    from prune_snr.prune import prune

    model, result = vgg_measured
    # Heads before `useful_from` made useless: the cut lands there (conv1: the cut alone removes
    # more than the target; conv12: channels must be pruned for the rest).
    names = [p["name"] for p in result.points]
    points = [{**p, "val_accuracy": p["val_accuracy"] if i >= names.index(useful_from) else 0.1} for i, p in enumerate(result.points)]
    pruned, report = prune(copy.deepcopy(model), "synthetic", target=0.5, criterion="l1", truncate=True, cut="measured", round_to=1,
                           measurement=dataclasses.replace(result, points=points), finetune_epochs=0, device="cpu")
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
    runs = [prune(copy.deepcopy(model), "synthetic", target=0.6, metric=metric, truncate=True, cut="budget", round_to=1,
                  measurement=dataclasses.replace(result, points=points), finetune_epochs=0, device="cpu")[1]
            for points in (result.points, shuffled)]
    report = runs[0]
    assert runs[1]["truncation"]["cut_after"] == report["truncation"]["cut_after"], "accuracy does not move the budget cut"
    rows = [r for r in report["truncation"]["candidates"][:-1] if r["cuttable"]]
    meeting = [r["point"] for r in rows if r["kept"] <= 0.4 / 0.98]
    assert report["truncation"]["cut_after"] == meeting[-1] and report["cut"] == "budget"
    deeper = rows[[r["point"] for r in rows].index(meeting[-1]) + 1]
    assert deeper["kept"] > 0.4 / 0.98, "the next deeper cut would not meet the budget"
    assert "truncation alone" in report["search"]["note"]


def test_the_depth_baseline_refuses_a_latency_budget():
    from prune_snr.config import PruneConfig, resolve
    from prune_snr.errors import ConfigError

    with pytest.raises(ConfigError, match="--cut budget"):
        resolve(PruneConfig, overrides={"truncate": True, "cut": "budget", "metric": "latency"})


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


def test_remeasure_prunes_in_equal_steps_each_reading_a_measurement_of_the_pruned_model(vgg_measured, tmp_path):
    import copy

    from prune_snr.prune import prune

    model, result = vgg_measured
    pruned, report = prune(copy.deepcopy(model), "synthetic", target=0.5, metric="params", criterion="snr", allocation="measured",
                           iterative_steps=2, remeasure=True, round_to=1, measurement=result, finetune_epochs=0, device="cpu",
                           out=tmp_path)
    first, second = report["search"]["remeasured_steps"]
    assert first["removed"] == pytest.approx(0.25, abs=0.02) and second["removed"] == pytest.approx(0.5, abs=0.02)
    assert first["filters"] == [p["n_filters"] for p in result.points]
    # the second step read a measurement of the model the first step left: its filter counts
    assert all(a <= b for a, b in zip(second["filters"], first["filters"])) and sum(second["filters"]) < sum(first["filters"])
    assert first["remeasure_s"] > 0 and "remeasure_s" not in second
    assert 1 - prunable_base(pruned, "params") / prunable_base(model, "params") == pytest.approx(0.5, abs=0.02)
    reloaded = prune_snr.load(tmp_path / "pruned.pt")  # the two steps' histories replay in order
    x = torch.randn(2, 3, 32, 32)
    assert torch.allclose(reloaded(x), pruned.eval()(x), atol=1e-5)


@pytest.mark.parametrize("overrides,message", [({"remeasure": True}, "--iterative-steps 2"),
                                               ({"remeasure": True, "iterative_steps": 2, "criterion": "l1", "allocation": "uniform"},
                                                "reads no measurement"),
                                               ({"remeasure": True, "iterative_steps": 2, "metric": "latency"}, "params or macs")])
def test_remeasure_without_steps_or_without_a_measured_choice_is_one_line(overrides, message):
    from prune_snr.config import PruneConfig, resolve

    with pytest.raises(ConfigError, match=message):
        resolve(PruneConfig, overrides=overrides)


def test_truncation_under_a_latency_budget_sizes_its_candidates_by_macs(vgg_measured):
    import copy

    from prune_snr.prune import prune

    model, result = vgg_measured
    _, report = prune(copy.deepcopy(model), "synthetic", target=0.3, metric="latency", criterion="l1", truncate=True, round_to=1,
                      measurement=result, finetune_epochs=0, device="cpu")
    t = report["truncation"]
    assert t["kept_of"] == "macs" and all(0 < c["kept"] <= 1 for c in t["candidates"] if c["cuttable"])
    assert report["latency"]["batch_32"]["fraction"] < 1


@pytest.mark.parametrize("eligible_from,expected", [(1, "p3"), (4, "p4"), (6, None)])
def test_the_deeper_cut_is_the_measured_one_unless_the_budget_allows_a_deeper_one(eligible_from, expected):
    from prune_snr.prune.truncate import pick_cut

    kept = [0.1, 0.2, 0.35, 0.5, 0.7, 0.85, 1.0]  # what a cut after each point keeps; p3 is the deepest meeting a 50 % target
    rows = [{"point": f"p{i}", "eligible": i >= eligible_from, "cuttable": True, "kept": k} for i, k in enumerate(kept)]
    assert pick_cut(rows, None, "budget", target=0.5, metric="macs") == "p3"
    assert pick_cut(rows, None, "measured", target=0.5, metric="macs") == (f"p{eligible_from}" if eligible_from < 6 else None)
    assert pick_cut(rows, None, "deeper", target=0.5, metric="macs") == expected
    assert pick_cut(rows, None, "deeper", target=0.5, metric="latency") == pick_cut(rows, None, "measured", target=0.5, metric="latency")


def test_an_exact_target_that_channel_alignment_blocks_names_round_to_in_its_error():
    model = build_model("vgg16", num_classes=10, width_mult=0.25).eval()  # 16-channel layers: aligned to 16 they cannot shrink
    l1 = lambda m: build_importance("l1", model=m)  # noqa: E731
    with pytest.raises(ConfigError, match="--round-to 16 .*--round-to 1 frees them"):
        prune_to_target(model, l1, target=0.6, metric="macs", round_to=16, exact=True)
    assert abs(prune_to_target(model, l1, target=0.6, metric="macs", round_to=1).removed - 0.6) <= 0.02


def test_an_unreachable_target_lands_on_the_closest_reachable_point_with_a_warning_naming_it():
    model = build_model("vgg16", num_classes=10, width_mult=0.25).eval()
    l1 = lambda m: build_importance("l1", model=m)  # noqa: E731
    with pytest.warns(UserWarning, match=r"--round-to 16.*pruned to that closest point, (\d+\.\d)%"):
        outcome = prune_to_target(model, l1, target=0.6, metric="macs", round_to=16)
    assert outcome.unreached and outcome.removed < 0.6 - 0.02  # what alignment allows, short of the target
    assert count(outcome.model)["macs"] < count(model)["macs"]


@pytest.mark.parametrize("lr, expected", [(0.01, "after"), (3.0, "before")])  # lr 3.0 wrecks the model
def test_finetune_keep_best_keeps_fine_tuning_only_when_it_raises_validation_accuracy(vgg_measured, tmp_path, lr, expected):
    import copy

    from prune_snr.prune import prune

    model, result = vgg_measured
    common = dict(target=0.3, criterion="l1", allocation="uniform", round_to=1, measurement=result, device="cpu", seed=0)
    _, plain = prune(copy.deepcopy(model), "synthetic", finetune_epochs=1, finetune_lr=lr, **common)
    pruned, report = prune(copy.deepcopy(model), "synthetic", finetune_epochs=1, finetune_lr=lr, finetune_keep="best",
                           out=tmp_path / "best", **common)
    before, finetuned = report["pruned_before_finetune"], plain["after"]
    assert report["finetune"]["val_accuracy_after_finetune"] == finetuned["val_accuracy"]
    kept = "after" if finetuned["val_accuracy"] >= before["val_accuracy"] else "before"
    assert report["finetune"]["kept"] == kept == expected
    assert report["after"]["val_accuracy"] == max(before["val_accuracy"], finetuned["val_accuracy"])
    if kept == "before":  # the weights are the pruned ones, untouched by fine-tuning
        unfinetuned, _ = prune(copy.deepcopy(model), "synthetic", finetune_epochs=0, **common)
        assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), unfinetuned.state_dict().values()))
    reloaded = prune_snr.load(tmp_path / "best" / "pruned.pt")
    x = example_input(reloaded, 4)
    assert torch.allclose(reloaded(x), pruned(x), atol=1e-5)
    _, resumed = prune(copy.deepcopy(model), "synthetic", finetune_epochs=1, finetune_lr=lr, finetune_keep="best",
                       out=tmp_path / "best", resume=True, **common)
    assert resumed["finetune"] == report["finetune"] and resumed["after"] == report["after"]
    if expected == "after":  # a run fine-tuned without it cannot be resumed with it: its pre-fine-tuning weights are gone
        prune(copy.deepcopy(model), "synthetic", finetune_epochs=1, finetune_lr=lr, out=tmp_path / "last", **common)
        with pytest.raises(ConfigError, match="without --finetune-keep best"):
            prune(copy.deepcopy(model), "synthetic", finetune_epochs=1, finetune_lr=lr, finetune_keep="best",
                  out=tmp_path / "last", resume=True, **common)
