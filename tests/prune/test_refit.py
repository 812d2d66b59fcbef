"""Specs of ``--refit-epochs``: every pruned model's classifier can get a measured head's training."""
import copy

import torch

from prune_snr.prune import prune


def test_refit_retrains_the_classifier_on_frozen_features_and_nothing_else(vgg_measured):
    model, measurement = vgg_measured
    common = dict(target=0.5, metric="params", criterion="l1", allocation="uniform", round_to=1, finetune_epochs=0,
                  device="cpu", measurement=measurement)
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
    _, report = prune(copy.deepcopy(model), "synthetic", target=0.3, criterion="l1", round_to=1, finetune_epochs=0,
                      device="cpu", measurement=measurement)
    assert "refit" not in report and "refit_epochs" not in report
