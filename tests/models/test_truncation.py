"""Specs of models/truncation.py: where a model can be cut and the arguments that rebuild it cut."""

import pytest
import torch
from torch import nn

from prune_snr.errors import ModelError
from prune_snr.models import Adapter, build_model, cut_spec, cuttable, default_points, register_adapter
from prune_snr.models.truncation import can_cut


def test_vgg_is_cut_after_any_conv_block_by_rebuilding_its_first_blocks():
    model = build_model("vgg16", num_classes=10, width_mult=0.125)
    assert (
        cuttable(model, "features.conv5")
        and not cuttable(model, "features.pool2")
        and not cuttable(model, "classifier")
    )
    spec = cut_spec(model, "features.conv5", head_pool=2)
    assert spec["cut"] == 5 and spec["head_pool"] == 2 and spec["width_mult"] == 0.125
    cut = build_model("vgg16", **spec)
    assert default_points(cut)[-1] == "features.conv5" and cut(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ModelError, match="not one of its cut points"):
        cut_spec(model, "features.pool2", head_pool=2)


def test_a_family_adapter_that_rebuilds_its_model_cut_is_asked_whatever_the_model_spec_says():
    class Own(nn.Module):
        spec = {"name": "own", "num_classes": 3}

    @register_adapter(Own)
    class OwnAdapter(Adapter):
        def cut_spec(self, model, point, *, head_pool):
            return {"depth": 1, "head_pool": head_pool} if point == "a" else None

    model = Own()
    assert cuttable(model, "a") and not cuttable(model, "b")
    assert cut_spec(model, "a", head_pool=2) == {"num_classes": 3, "depth": 1, "head_pool": 2}


def test_any_other_model_is_cut_after_a_stage_boundary_of_its_feature_path():
    model = build_model("timm:resnet18", num_classes=10)
    assert cuttable(model, "layer2.1") and not cuttable(model, "layer2.1.conv1")
    assert cut_spec(model, "layer2.1", head_pool=2) == {
        **{k: v for k, v in model.spec.items() if k != "name"},
        "cut_after": "layer2.1",
        "head_pool": 2,
    }


def test_points_inside_a_block_are_no_cut_points():
    model = build_model("efficientnet_b0", num_classes=10)
    assert can_cut(model, "blocks.2.1") and not can_cut(model, "blocks.2.1.bn2") and not can_cut(model, "classifier")
