"""Refit a pruned model's classifier on its frozen features: the same training a cut model's classifier had.

A truncated model's classifier is the measurement's linear head, trained on frozen features; a
width-pruned model keeps its old classifier, now reading fewer channels. ``prune --refit-epochs N``
gives every pruned model the head's treatment (the same trainer, epochs cap, learning rate and early
stopping on the validation split), so arms that cut and arms that do not get equal training before
fine-tuning.

Example:
    >>> from prune_snr.prune import prune
    >>> pruned, report = prune(model, "fashion-mnist", target=0.5, refit_epochs=30)  # doctest: +SKIP
    >>> report["refit"]["val_accuracy"]  # doctest: +SKIP
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ModelError
from ..measure.heads import Rows, train_heads
from ..models.points import classifier_name
from ..runtime import resolve_device


@torch.no_grad()
def classifier_inputs(model: nn.Module, classifier: nn.Linear, dataset, *, batch_size: int, device) -> tuple[np.ndarray, torch.Tensor]:
    """``(N x D x 1 features entering the classifier, labels)`` over ``dataset`` in order."""
    captured: list[torch.Tensor] = []
    hook = classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0].flatten(1).float().cpu()))
    labels = []
    try:
        for x, y in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            model(x.to(device))
            labels.append(torch.as_tensor(y))
    finally:
        hook.remove()
    return torch.cat(captured).unsqueeze(-1).numpy(), torch.cat(labels)


def refit_classifier(model: nn.Module, splits, *, epochs: int, lr: float = 1e-3, batch_size: int = 1024, patience: int = 3,
                     min_epochs: int = 5, seed: int = 0, device: str = "auto", progress=None) -> dict:
    """Retrain ``model``'s final ``nn.Linear`` in place on frozen features of ``splits.plain`` (early stopping on
    ``splits.val``); returns the report's ``refit`` part: epochs used and the validation accuracy before and after."""
    name = classifier_name(model)
    classifier = model.get_submodule(name)
    if not isinstance(classifier, nn.Linear):
        raise ModelError(f"--refit-epochs retrains an nn.Linear classifier; {type(model).__name__}'s is {type(classifier).__name__} "
                         f"({name}): run without --refit-epochs")
    device_t = resolve_device(device)
    model.to(device_t).eval()
    rows = {}
    for split in ("plain", "val"):
        x, y = classifier_inputs(model, classifier, getattr(splits, split), batch_size=256, device=device_t)
        rows[split] = Rows({name: x}, np.arange(len(y)), y)
    head = train_heads(rows["plain"], {"val": rows["val"]}, num_classes=splits.num_classes, epochs=epochs, lr=lr,
                       batch_size=batch_size, seed=seed, device=device_t, patience=patience, min_epochs=min_epochs,
                       progress=progress, description="refit classifier")[name]
    before = _accuracy(classifier, rows["val"], device_t)
    classifier.weight.data.copy_(head.weight.reshape(classifier.weight.shape).to(classifier.weight))
    classifier.bias.data.copy_(head.bias.to(classifier.bias))
    return {"classifier": name, "epochs": epochs, "epochs_used": head.epochs_used, "best_epoch": head.best_epoch,
            "val_accuracy_before": before, "val_accuracy": _accuracy(classifier, rows["val"], device_t)}


@torch.no_grad()
def _accuracy(classifier: nn.Linear, rows: Rows, device) -> float:
    x = torch.from_numpy(next(iter(rows.features.values()))).squeeze(-1).to(device)
    return float((classifier(x).argmax(1).cpu() == rows.targets).float().mean())
