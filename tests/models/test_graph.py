"""torch-pruning's graph: traced once per prune, bounded in time, and its failures one line that names the layer."""

import pytest
import timm
import torch
import torch_pruning as tp
import torchvision

from prune_snr.errors import ModelError
from prune_snr.models import build_model, count
from prune_snr.models.graph import ChannelGraph
from prune_snr.prune import build_importance, prune_to_target


def test_a_prune_traces_the_graph_once_for_every_attempt_of_its_search(monkeypatch):
    traces = []
    trace = tp.DependencyGraph._trace  # the forward trace inside every build of a graph

    def counted(self, model, *args, **kwargs):
        traces.append(type(model).__name__)
        return trace(self, model, *args, **kwargs)

    monkeypatch.setattr(tp.DependencyGraph, "_trace", counted)
    model = build_model("timm:resnet18", num_classes=10).eval()
    outcome = prune_to_target(model, lambda m: build_importance("l1", model=m), target=0.5, metric="params", round_to=1)
    assert outcome.trials > 3
    assert traces == ["ResNet"]


def test_copies_of_the_graph_prune_independently_of_each_other_and_of_the_model():
    model = build_model("timm:resnet18", num_classes=10).eval()
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32), ignored=["fc"])
    full = count(model)["params"]
    pruned, pruner, _ = graph.pruner(lambda m: tp.importance.MagnitudeImportance(p=1), lambda m: {"pruning_ratio": 0.5})
    pruner.step()
    untouched, _ = graph.copy()
    assert count(pruned)["params"] < 0.5 * full
    assert count(untouched)["params"] == count(graph.model)["params"] == count(model)["params"] == full
    assert pruned(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_a_graph_whose_grouping_does_not_end_is_stopped_in_one_line_naming_the_layer():
    rexnet = timm.create_model(
        "rexnet_100", num_classes=10
    ).eval()  # torch-pruning's walk over its partial residual adds
    with pytest.raises(
        ModelError,
        match=r"did not finish grouping the channels of RexNet in 10 s \(stuck at the channel "
        r"group of '[\w.]+'\); raise prune's graph_timeout",
    ) as info:
        ChannelGraph(rexnet, torch.randn(1, 3, 32, 32), ignored=["head.fc"], timeout=10)
    assert "\n" not in str(info.value)


UNMAPPABLE = {  # a graph torch-pruning's tracer cannot map -> (the model, its classifier, the one line it gives)
    "channel shuffle: a reshape": (
        lambda: torchvision.models.shufflenet_v2_x0_5(num_classes=10),
        "fc",
        r"cannot map the channel dependencies of ShuffleNetV2 at a reshape after "
        r"'stage\d\.\d+\.branch2\.\d+' \(ZeroDivisionError",
    ),
    "concats that defeat the index mapping": (
        lambda: timm.create_model("cs3darknet_focus_s", num_classes=10),
        "head.fc",
        r"cannot map the channel dependencies of CspNet at a concat after '[\w.]+' "
        r"\(TypeError",
    ),
}


@pytest.mark.parametrize("case", list(UNMAPPABLE))
def test_an_op_torch_pruning_cannot_map_is_one_line_named_by_the_layer_before_it(case):
    build, classifier, message = UNMAPPABLE[case]
    with pytest.raises(ModelError, match=message) as info:
        ChannelGraph(build().eval(), torch.randn(1, 3, 32, 32), ignored=[classifier])
    assert "\n" not in str(info.value)


def test_a_failure_inside_torch_pruning_s_pruning_is_one_line_naming_the_layer():
    poolformer = timm.create_model("poolformerv2_s12", num_classes=10).eval()  # a weightless norm its pruner indexes
    outcome = None
    with pytest.raises(
        ModelError, match=r"torch-pruning failed to prune MetaFormer at '[\w.]+' \(AttributeError"
    ) as info:
        outcome = prune_to_target(
            poolformer, lambda m: build_importance("l1", model=m), target=0.5, metric="macs", round_to=1
        )
    assert outcome is None and "\n" not in str(info.value)


def test_a_pruned_model_that_no_longer_runs_is_one_line_naming_the_layer():
    nfnet = timm.create_model("nf_regnet_b0", num_classes=10).eval()  # ScaledStdConv2d's gain is left unpruned
    with pytest.raises(
        ModelError, match=r"torch-pruning failed to prune NormFreeNet at '[\w.]+' \(RuntimeError: weight should"
    ) as info:
        prune_to_target(nfnet, lambda m: build_importance("l1", model=m), target=0.5, metric="macs", round_to=1)
    assert "\n" not in str(info.value)
