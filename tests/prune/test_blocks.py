"""Specs of prune/blocks.py: the stage that drops residual blocks whose loss of validation accuracy
stays within --delta."""

import pytest
import torch


@pytest.mark.parametrize("delta", [1.0, 0.02])
def test_prune_drops_blocks_within_delta_reports_every_candidate_and_reloads(effnet_measured, tmp_path, delta):
    import copy

    import prune_snr
    from prune_snr.models import droppable_blocks
    from prune_snr.prune import prune

    model, result = effnet_measured
    pruned, report = prune(
        copy.deepcopy(model),
        "synthetic",
        target=0.5,
        metric="macs",
        criterion="snr",
        allocation="measured",
        drop_blocks=True,
        delta=delta,
        round_to=1,
        measurement=result,
        finetune_epochs=0,
        device="cpu",
        out=tmp_path,
    )
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
    with pytest.raises(ConfigError, match="drop_blocks=True: vgg16 has no residual block"):
        prune(
            copy.deepcopy(model),
            "synthetic",
            target=0.5,
            criterion="l1",
            drop_blocks=True,
            measurement=result,
            finetune_epochs=0,
            device="cpu",
        )
