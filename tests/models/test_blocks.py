"""Specs of models/blocks.py: which residual blocks can be dropped, and a dropped model that rebuilds from its spec."""

import pytest
import torch

from prune_snr.models import build_model


def test_droppable_blocks_are_the_residual_blocks_with_an_identity_shortcut():
    from prune_snr.models import droppable_blocks

    effnet = build_model("efficientnet_b0", num_classes=10)
    assert droppable_blocks(effnet) == [
        f"blocks.{i}.{j}" for i, j in ((1, 1), (2, 1), (3, 1), (3, 2), (4, 1), (4, 2), (5, 1), (5, 2), (5, 3))
    ]
    assert all(effnet.get_submodule(b).has_skip for b in droppable_blocks(effnet))
    assert droppable_blocks(build_model("timm:resnet18", num_classes=10)) == [
        "layer1.0",
        "layer1.1",
        "layer2.1",
        "layer3.1",
        "layer4.1",
    ]
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
