"""Specs of SNRImportance: one score per channel for every kind of torch-pruning group."""

import numpy as np
import pytest
import torch
import torch_pruning as tp
from torch import nn

from prune_snr.choices import CRITERIA
from prune_snr.errors import ConfigError
from prune_snr.measure import measure
from prune_snr.models import classifier_name, example_input, point_conv
from prune_snr.prune import SNRImportance, build_importance, filter_scores


def groups_of(model):
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model))
    head = dict(model.named_modules())[classifier_name(model)]
    return list(dg.get_all_groups(ignored_layers=[head], root_module_types=[nn.Conv2d]))


def kinds(group):
    layers = [
        dep.layer
        for dep, _ in group
        if isinstance(dep.layer, nn.Conv2d) and dep.pruning_fn.__name__ == "prune_out_channels"
    ]
    found = set()
    for layer in layers:
        if layer.groups > 1:
            found.add("depthwise")
        if layer.kernel_size == (1, 1) and layer.in_channels != layer.out_channels:
            found.add("pointwise")
    names = " ".join(str(dep.target) for dep, _ in group)
    if "se.conv_reduce" in names:
        found.add("se")
    if any("conv_pwl" in str(layer) for layer in layers) or "conv_pwl" in names:
        found.add("residual")
    return found


def test_vgg_groups_get_one_snr_score_per_channel_equal_to_the_measured_snr(vgg_measured):
    model, result = vgg_measured
    imp = SNRImportance(model, result)
    for group in groups_of(model):
        scores = imp(group)
        assert scores.shape == (len(group[0].idxs),) and torch.isfinite(scores).all()
    conv = point_conv(model, "features.conv5")
    group = (
        tp.DependencyGraph()
        .build_dependency(model, example_input(model))
        .get_pruning_group(conv, tp.prune_conv_out_channels, idxs=list(range(conv.out_channels)))
    )
    assert torch.allclose(imp(group), torch.from_numpy(result.snr("features.conv5")).float())
    assert imp.fallback_groups == []


def test_efficientnet_every_group_kind_is_scored_from_the_measurement(effnet_measured):
    model, result = effnet_measured
    imp = SNRImportance(model, result)
    seen = set()
    for group in groups_of(model):
        scores = imp(group)
        assert scores.shape == (len(group[0].idxs),) and torch.isfinite(scores).all()
        seen |= kinds(group)
    assert {"depthwise", "se", "residual"} <= seen
    # SE bottlenecks (se.conv_reduce) are not measurement points: they fall back to magnitude, and say so
    assert imp.fallback_groups and all("se.conv_reduce" in name for name in imp.fallback_groups)


def test_unmeasured_groups_fall_back_to_magnitude_and_are_reported(tiny_run, tmp_path):
    import prune_snr

    model = prune_snr.load(tiny_run[0] / "model.pt")
    partial = measure(model, "synthetic", points="features.conv13", head_epochs=2, device="cpu", cache_dir=tmp_path)
    imp = SNRImportance(model, partial)
    for group in groups_of(model):
        imp(group)
    assert len(imp.fallback_groups) == 12 and not any("conv13" in g for g in imp.fallback_groups)


def test_snr_strength_rescales_snr_by_relative_filter_strength(vgg_measured):
    _, result = vgg_measured
    snr, strong = filter_scores(result, "snr"), filter_scores(result, "snr-strength")
    stats = result.stats("features.conv3")
    expected = snr["features.conv3"] * stats.strength.numpy() / stats.strength.numpy().mean()
    assert strong["features.conv3"] == pytest.approx(expected, rel=1e-5)


_GROUPS: dict[int, list] = {}  # building EfficientNet's dependency graph once, not once per criterion


@pytest.mark.parametrize("model_name", ["vgg16", "efficientnet_b0"])
@pytest.mark.parametrize("name", sorted(CRITERIA))
def test_every_criterion_gives_every_group_of_every_registered_model_one_finite_score_per_channel(
    vgg_measured, effnet_measured, model_name, name
):
    from prune_snr.models import list_models

    assert set(list_models()) == {"vgg16", "efficientnet_b0"}, "a newly registered model belongs in this spec"
    model, result = vgg_measured if model_name == "vgg16" else effnet_measured
    model.zero_grad()
    x = example_input(model, batch_size=4).normal_()
    nn.functional.cross_entropy(model(x), torch.arange(4) % 10).backward()  # taylor reads gradients
    imp = build_importance(name, model=model, measurement=result)
    assert isinstance(imp, tp.importance.Importance)
    if id(model) not in _GROUPS:
        _GROUPS[id(model)] = groups_of(model)
    for group in _GROUPS[id(model)]:
        scores = imp(group)
        assert scores is not None and scores.shape == (len(group[0].idxs),), group[0].dep
        assert torch.isfinite(scores).all(), f"{name}: {group[0].dep}"
    model.zero_grad(set_to_none=True)


def test_measurement_of_another_width_is_refused(vgg_measured):
    from prune_snr.models import build_model

    _, result = vgg_measured
    with pytest.raises(ConfigError, match="re-measure"):
        SNRImportance(build_model("vgg16", num_classes=10, width_mult=0.25), result)


def test_snr_x_l1_is_the_product_of_within_layer_ranks(vgg_measured):
    model, result = vgg_measured
    scores = filter_scores(result, "snr-x-l1", model)["features.conv4"]
    snr = result.snr("features.conv4")
    l1 = point_conv(model, "features.conv4").weight.detach().abs().flatten(1).sum(1).numpy()
    F = len(snr)
    rank = lambda v: (np.argsort(np.argsort(v, kind="stable"), kind="stable") + 1) / F
    assert scores == pytest.approx(rank(snr) * rank(l1))
    assert scores.max() <= 1 and scores.min() >= 1 / F**2


def test_snr_prunes_mobilenet_v3_and_only_its_linear_hidden_layer_falls_back():
    import prune_snr
    from prune_snr.models import build_model

    model = build_model("torchvision:mobilenet_v3_small", num_classes=10, input_size=32)
    _, report = prune_snr.prune(
        model,
        "synthetic:10",
        target=0.5,
        metric="macs",
        criterion="snr",
        finetune_epochs=0,
        head_epochs=1,
        device="cpu",
    )
    fallback = report["search"]["fallback_groups"]
    assert [g.split(" ")[0] for g in fallback] == ["classifier.0"] and "a linear layer" in fallback[0]
    assert 0.45 <= report["after"]["macs"] / report["before"]["macs"] <= 0.55
