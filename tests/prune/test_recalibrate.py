"""Specs of ``--bn-recalibrate N``: BatchNorm statistics re-estimated after pruning, graded both ways."""

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from prune_snr.errors import ConfigError
from prune_snr.prune import prune
from prune_snr.prune.recalibrate import recalibrate_batchnorm


def test_the_running_statistics_become_the_plain_average_of_the_batches_read():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 1, bias=False), nn.BatchNorm2d(3))
    batches = [(torch.randn(16, 2, 4, 4) * (i + 1) + i, torch.zeros(16)) for i in range(6)]
    read = recalibrate_batchnorm(net, batches, batches=4)
    with torch.no_grad():
        outs = [net[0](x) for x, _ in batches[:4]]
    expected_mean = torch.stack([o.mean(dim=(0, 2, 3)) for o in outs]).mean(0)
    expected_var = torch.stack([o.var(dim=(0, 2, 3), unbiased=True) for o in outs]).mean(0)
    assert read == 4
    torch.testing.assert_close(net[1].running_mean, expected_mean)
    torch.testing.assert_close(net[1].running_var, expected_var)
    assert net[1].momentum == 0.1 and not net.training


def test_dropout_stays_off_while_the_statistics_are_read():
    seen = []
    net = nn.Sequential(nn.Dropout(0.5), nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    net[0].register_forward_hook(lambda module, *_: seen.append(module.training))
    recalibrate_batchnorm(net, [(torch.randn(4, 1, 3, 3), None)] * 3, batches=3)
    assert seen == [False, False, False]


def test_a_pass_that_fails_after_its_first_batch_leaves_the_statistics_as_they_were():
    net = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    net[1].running_mean.fill_(3.0)
    net[1].num_batches_tracked.fill_(7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    batches = [(torch.randn(4, 1, 3, 3), None), (torch.randn(4, 2, 3, 3), None)]  # the second has a wrong shape
    with pytest.raises(RuntimeError):
        recalibrate_batchnorm(net, batches, batches=2)
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before) and net[1].momentum == 0.1 and not net.training


STATISTICS = ("running_mean", "running_var", "num_batches_tracked")


def pruned(vgg_measured, **options):
    """The measured tiny VGG pruned to half its params by L1 (``options`` added), and the report."""
    model, measurement = vgg_measured
    options = (
        dict(
            target=0.5,
            metric="params",
            criterion="l1",
            round_to=1,
            finetune_epochs=0,
            device="cpu",
            measurement=measurement,
            batch_size=32,
        )
        | options
    )
    return prune(copy.deepcopy(model), "synthetic", **options)


def test_prune_reports_the_accuracy_after_pruning_with_and_without_recalibration(vgg_measured):
    plain, plain_report = pruned(vgg_measured, bn_recalibrate=0)
    recalibrated, report = pruned(vgg_measured, bn_recalibrate=3)
    part = report["bn_recalibration"]
    assert part["batches"] == 3 and report["bn_recalibrate"] == 3
    # without: the pruned model as plain pruning leaves it; with: the grade the report carries from then on
    assert part["without"] == {k: plain_report["pruned_before_finetune"][k] for k in ("accuracy", "val_accuracy")}
    assert report["pruned_before_finetune"]["accuracy"] != part["without"]["accuracy"]
    changed = {k for k, v in recalibrated.state_dict().items() if not torch.equal(v, plain.state_dict()[k])}
    assert changed and all(k.endswith(STATISTICS) for k in changed)
    assert "bn_recalibration" not in plain_report and "bn_recalibrate" not in plain_report


def test_recalibration_is_on_by_default_and_leaves_the_fine_tuned_weights_as_they_were(vgg_measured):
    plain, _ = pruned(vgg_measured, bn_recalibrate=0, finetune_epochs=1)
    recalibrated, report = pruned(vgg_measured, finetune_epochs=1)
    assert report["bn_recalibration"]["batches"] > 0
    # fine-tuning trains on batch statistics and draws the same batches: only the running statistics may differ
    weights = {k for k in plain.state_dict() if not k.endswith(STATISTICS)}
    assert all(torch.equal(plain.state_dict()[k], recalibrated.state_dict()[k]) for k in weights)


def test_the_recalibrated_statistics_depend_on_the_seed_not_on_what_ran_before(vgg_measured):
    torch.manual_seed(1)  # the training split's augmentation draws from the global generator
    first, _ = pruned(vgg_measured, bn_recalibrate=3)
    torch.manual_seed(2)
    second, _ = pruned(vgg_measured, bn_recalibrate=3)
    assert all(torch.equal(v, second.state_dict()[k]) for k, v in first.state_dict().items())


def test_a_model_without_batchnorm_is_not_recalibrated_and_its_run_resumes_at_the_default(tmp_path):
    net = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(40, 1, 8, 8, generator=g), torch.arange(40) % 10)
    options = dict(train=data, test=data, target=0.3, metric="macs", criterion="l1", allocation="uniform",
                   finetune_epochs=1, round_to=1, device="cpu", out=tmp_path)  # fmt: skip
    _, report = prune(copy.deepcopy(net), **options)
    _, resumed = prune(copy.deepcopy(net), resume=True, **options)
    assert "bn_recalibration" not in report and resumed["after"] == report["after"]
    with pytest.raises(ConfigError, match="was pruned with bn_recalibrate=50"):  # its grades were taken at 50
        prune(copy.deepcopy(net), resume=True, bn_recalibrate=0, **options)
