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


# Dropping single residual blocks (identity shortcut, input shape kept).

def test_droppable_blocks_are_the_residual_blocks_with_an_identity_shortcut():
    from prune_snr.models import droppable_blocks

    effnet = build_model("efficientnet_b0", num_classes=10)
    assert droppable_blocks(effnet) == [f"blocks.{i}.{j}" for i, j in ((1, 1), (2, 1), (3, 1), (3, 2), (4, 1), (4, 2),
                                                                      (5, 1), (5, 2), (5, 3))]
    assert all(effnet.get_submodule(b).has_skip for b in droppable_blocks(effnet))
    assert droppable_blocks(build_model("timm:resnet18", num_classes=10)) == ["layer1.0", "layer1.1", "layer2.1", "layer3.1", "layer4.1"]
    assert droppable_blocks(build_model("torchvision:resnet18", num_classes=10))[0] == "layer1.0"
    assert droppable_blocks(build_model("vgg16", num_classes=10, width_mult=0.125)) == []


@pytest.mark.parametrize("name,block", [("efficientnet_b0", "blocks.5.2"), ("timm:resnet18", "layer3.1")])
def test_a_dropped_model_computes_the_original_with_that_block_skipped_and_rebuilds_from_its_spec(name, block):
    from prune_snr.models import drop_blocks

    model = build_model(name, num_classes=10).eval()
    torch.manual_seed(0)
    for m in model.modules():  # timm zero-initialises each block's last BN: make every residual branch count
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    handle = model.get_submodule(block).register_forward_hook(lambda m, inputs, output: inputs[0])  # the block skipped
    with torch.no_grad():
        skipped = model(x)
    handle.remove()
    with torch.no_grad():
        full = model(x)
    dropped = drop_blocks(build_model(name, num_classes=10).eval(), [block])
    dropped.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith(block + ".")})
    with torch.no_grad():
        out = dropped(x)
    assert torch.allclose(out, skipped, rtol=1e-4, atol=1e-9) and not torch.allclose(out, full, rtol=1e-2, atol=0)
    assert dropped.spec["dropped"] == [block]
    rebuilt = build_model(**dropped.spec).eval()
    rebuilt.load_state_dict(dropped.state_dict())
    with torch.no_grad():
        assert torch.equal(rebuilt(x), out)
    assert sum(p.numel() for p in rebuilt.parameters()) < sum(p.numel() for p in model.parameters())


def test_a_block_without_an_identity_shortcut_cannot_be_dropped():
    from prune_snr.errors import ModelError
    from prune_snr.models import drop_blocks

    with pytest.raises(ModelError, match="blocks.1.0.*identity shortcut"):
        drop_blocks(build_model("efficientnet_b0", num_classes=10), ["blocks.1.0"])


@pytest.mark.parametrize("delta", [1.0, 0.02])
def test_prune_drops_blocks_within_delta_reports_every_candidate_and_reloads(effnet_measured, tmp_path, delta):
    import copy

    import prune_snr
    from prune_snr.models import droppable_blocks
    from prune_snr.prune import prune

    model, result = effnet_measured
    pruned, report = prune(copy.deepcopy(model), "synthetic", target=0.5, metric="macs", criterion="snr", allocation="measured",
                           drop_blocks=True, delta=delta, round_to=1, measurement=result, finetune_epochs=0, device="cpu",
                           out=tmp_path)
    blocks, full = report["blocks"], report["before"]["val_accuracy"]
    assert [c["block"] for c in blocks["candidates"]] == droppable_blocks(model)
    assert all({"val_accuracy", "accuracy", "params", "macs", "kept"} <= set(c) for c in blocks["candidates"])
    alone = {c["block"]: c["val_accuracy"] for c in blocks["candidates"]}
    assert all(full - alone[b] < delta for b in blocks["dropped"])
    if delta == 1.0:  # every block is within a delta of 100 points
        assert blocks["dropped"] == sorted(alone, key=lambda b: -alone[b])
    if blocks["dropped"]:
        assert full - blocks["val_accuracy_after_drop"] < delta
        assert pruned.spec["dropped"] == blocks["dropped"]
    from prune_snr.models import prunable_base

    actually_removed = 1 - prunable_base(pruned, "macs") / prunable_base(model, "macs")
    # the report's figure comes from the bisection's own count (within 0.2 points of a recount; exact for VGG)
    assert report["search"]["removed"] == pytest.approx(actually_removed, abs=2e-3) and actually_removed >= 0.48
    reloaded = prune_snr.load(tmp_path / "pruned.pt")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(reloaded(x), pruned.eval()(x), atol=1e-5)


def test_drop_blocks_on_a_model_without_residual_blocks_is_one_line(vgg_measured):
    import copy

    from prune_snr.errors import ConfigError
    from prune_snr.prune import prune

    model, result = vgg_measured
    with pytest.raises(ConfigError, match="--drop-blocks: vgg16 has no residual block"):
        prune(copy.deepcopy(model), "synthetic", target=0.5, criterion="l1", drop_blocks=True, measurement=result,
              finetune_epochs=0, device="cpu")
