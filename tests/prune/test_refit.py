"""Specs of ``--refit-epochs``: every pruned model's classifier can get a measured head's training."""

import copy

import torch

from prune_snr.prune import prune


def test_refit_retrains_the_classifier_on_frozen_features_and_nothing_else(vgg_measured):
    model, measurement = vgg_measured
    common = dict(
        target=0.5,
        metric="params",
        criterion="l1",
        allocation="uniform",
        round_to=1,
        finetune_epochs=0,
        device="cpu",
        measurement=measurement,
    )
    plain, _ = prune(copy.deepcopy(model), "synthetic", **common)
    refit, report = prune(copy.deepcopy(model), "synthetic", refit_epochs=4, head_patience=0, **common)
    assert report["refit"]["classifier"] == "classifier" and report["refit"]["epochs_used"] == 4
    changed = {k for k, v in refit.state_dict().items() if not torch.equal(v, plain.state_dict()[k])}
    assert changed == {"classifier.weight", "classifier.bias"}
    # the report grades the refit classifier: its validation accuracy is the one the refit reached
    assert report["pruned_before_finetune"]["val_accuracy"] == report["refit"]["val_accuracy"]
    assert report["refit_epochs"] == 4


def test_without_refit_the_report_has_no_refit_part(vgg_measured):
    model, measurement = vgg_measured
    _, report = prune(
        copy.deepcopy(model),
        "synthetic",
        target=0.3,
        criterion="l1",
        round_to=1,
        finetune_epochs=0,
        device="cpu",
        measurement=measurement,
    )
    assert "refit" not in report and "refit_epochs" not in report


def test_a_refit_that_only_makes_the_validation_loss_worse_keeps_the_classifier_it_started_from(vgg_measured):
    from prune_snr.data import build_dataset, hold_out
    from prune_snr.prune.plan import Splits
    from prune_snr.prune.refit import refit_classifier

    model, _ = vgg_measured
    train = build_dataset("synthetic", "train", augment=False)
    plain, val = hold_out(train, 0.1)
    splits = Splits(train=plain, plain=plain, val=val, test=val, num_classes=10)
    start = copy.deepcopy(model.classifier.state_dict())
    report = refit_classifier(
        model, splits, epochs=3, lr=10.0, patience=2, min_epochs=1, device="cpu"
    )  # lr 10: every step overshoots
    assert report["best_epoch"] == 0 and report["val_accuracy"] == report["val_accuracy_before"]
    assert all(torch.equal(v, start[k]) for k, v in model.classifier.state_dict().items())
