"""Specs of models/adapters.py: one adapter per model family answers points, classifier, cuts and droppable blocks."""

import timm
import torch
import torchvision
from torch import nn
from torch.utils.data import TensorDataset

import prune_snr
from prune_snr import models
from prune_snr.models import (
    Adapter,
    adapter_for,
    build_model,
    cuttable,
    default_points,
    drop_blocks,
    droppable_blocks,
    register_adapter,
)
from prune_snr.models.truncation import cut_after
from tests.user_models import UserNet


class Stem(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(4, 6, 3, padding=1), nn.ReLU())
        self.head = nn.Linear(6, 10)

    def forward(self, x):
        return self.head(self.b(self.a(x)).mean((2, 3)))


class StemWithMore(Stem):
    """A subclass of a registered class: served by its parent's adapter."""


@register_adapter(Stem)
class StemAdapter(Adapter):
    def points(self, model, *, expanded=False):
        return ["b.1"]

    def cut_spec(self, model, point, *, head_pool):
        return {"depth": 1, "head_pool": head_pool} if point == "b.1" else None


def test_a_registered_adapter_serves_its_class_and_subclasses_and_any_other_module_gets_the_traced_answers():
    assert type(adapter_for(Stem())) is StemAdapter and type(adapter_for(StemWithMore())) is StemAdapter
    assert default_points(StemWithMore()) == ["b.1"] and cuttable(Stem(), "b.1") and not cuttable(Stem(), "a.1")
    assert type(adapter_for(UserNet())) is Adapter
    assert default_points(UserNet(in_chans=3))[:2] == ["stem.2", "block1.act1"]


def test_measure_takes_its_points_from_the_adapter_of_a_users_class():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 10
    data = TensorDataset(torch.randn(60, 1, 8, 8, generator=g) + y[:, None, None, None] / 5, y)
    measurement = prune_snr.measure(Stem(), train=data, test=data, head_epochs=1, device="cpu")
    assert [p["name"] for p in measurement.points] == ["b.1"]


def test_the_families_prune_snr_knows_have_their_own_adapters():
    vgg = build_model("vgg16", num_classes=10, width_mult=0.125)
    assert len(default_points(vgg)) == 13 and droppable_blocks(vgg) == [] and not models.expanded_by_default(vgg)
    timm_eff = timm.create_model("efficientnet_b0", num_classes=10)
    assert models.expanded_by_default(timm_eff) and "blocks.1.1.bn2" in default_points(timm_eff, expanded=True)
    assert "blocks.1.1.bn2" not in default_points(timm_eff)
    for resnet in (timm.create_model("resnet18", num_classes=10), torchvision.models.resnet18(num_classes=10)):
        assert droppable_blocks(resnet) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
        assert droppable_blocks(drop_blocks(resnet, ["layer2.1"])) == ["layer1.0", "layer1.1", "layer3.1", "layer4.1"]


def test_a_torchvision_mbconv_with_a_residual_connection_is_dropped_whole():
    model = torchvision.models.efficientnet_b0(num_classes=10).eval()
    assert models.expanded_by_default(model) and droppable_blocks(model)[0] == "features.2.1"
    block = model.features[2][1]
    x = torch.randn(1, block.block[0][0].in_channels, 8, 8)
    drop_blocks(model, ["features.2.1"])
    assert torch.equal(model.features[2][1](x), x) and model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    points = default_points(model, expanded=True)  # what a remeasurement after the drop asks
    assert "features.2.1" in points and "features.2.1.block.1" not in points and "features.2.0.block.1" in points


def test_a_cut_replaces_the_classifier_the_user_named_not_a_later_linear():
    class Aux(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(4, 10)
            self.aux = nn.Linear(4, 2)  # registered after the classifier, never in the logits' path

        def forward(self, x):
            return self.fc(self.pool(self.features(x)).flatten(1))

    model = Aux()
    models.name_classifier(model, "fc")
    assert models.classifier_name(model) == "fc"
    cut = cut_after(model, "features.1", head_pool=2, num_classes=10)
    assert (
        isinstance(cut.fc, nn.Linear)
        and cut.fc.in_features == 4 * 2 * 2
        and cut(torch.zeros(1, 3, 16, 16)).shape == (1, 10)
    )


def test_a_model_that_names_its_own_points_and_cuts_by_method_is_still_asked():
    class Own(nn.Module):
        spec = {"name": "own", "num_classes": 3}

        def measurement_points(self):
            return ["a"]

        def truncation_spec(self, point, *, head_pool):
            return {"depth": 1, "head_pool": head_pool} if point == "a" else None

    assert default_points(Own()) == ["a"] and cuttable(Own(), "a") and not cuttable(Own(), "b")
