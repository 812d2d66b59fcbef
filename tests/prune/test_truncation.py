"""Specs of truncation beyond VGG: a cut model computes exactly the measured head of its cut point."""
import pytest
import torch
from torch.nn import functional as F

from prune_snr.measure import measure
from prune_snr.models import build_model
from prune_snr.models.truncation import can_cut
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
    result = measure(model, "synthetic", points="layer1.1,layer2.1,layer3.1", head_epochs=2, device="cpu",
                     cache_dir=tmp_path_factory.mktemp("resnetcache"))
    return model, result


@pytest.mark.parametrize("measured,point", [("effnet_measured", "bn1"), ("effnet_measured", "blocks.1.0"),
                                            ("effnet_measured", "blocks.3.2"), ("resnet_measured", "layer1.1"),
                                            ("resnet_measured", "layer2.1")])
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


def test_points_inside_a_block_are_no_cut_points(effnet_measured):
    model, _ = effnet_measured
    assert can_cut(model, "blocks.2.1") and not can_cut(model, "blocks.2.1.bn2") and not can_cut(model, "classifier")


def test_a_cut_model_rebuilds_from_its_spec(resnet_measured):
    model, result = resnet_measured
    cut = truncate(model, result, "layer2.1")
    again = build_model(cut.spec.pop("name"), **cut.spec)
    again.load_state_dict(cut.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again.eval()(x), cut.eval()(x))
