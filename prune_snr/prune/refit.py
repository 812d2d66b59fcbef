"""Refit a pruned model's classifier on its frozen features: the same training a cut model's classifier had.

A truncated model's classifier is the measurement's linear head, trained on frozen features; a
width-pruned model keeps its old classifier, now reading fewer channels. ``prune --refit-epochs N``
gives every pruned model's classifier, cut or not, the same further training on frozen features (the
heads' optimizer, learning rate, batch, epochs cap and early stopping on the validation split), so
arms that cut and arms that do not get equal training before fine-tuning.

Example:
    >>> from prune_snr.prune import prune
    >>> pruned, report = prune(model, "fashion-mnist", target=0.5, refit_epochs=30)  # doctest: +SKIP
    >>> report["refit"]["val_accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..errors import ModelError
from ..measure.heads import EarlyStopping
from ..models import classifier_name
from ..progress import track
from ..runtime import resolve_device
from .plan import Context


def refit_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """With ``--refit-epochs N``: retrain the pruned model's classifier with the measurement's head batch size and
    patience (at the refit's own learning rate: it starts from trained weights on raw features), before it is graded
    and fine-tuned."""
    cfg = ctx.cfg
    if not cfg.refit_epochs:
        return model, {}
    return model, {
        "refit": refit_classifier(
            model,
            ctx.splits,
            epochs=cfg.refit_epochs,
            batch_size=cfg.measure.head_batch_size,
            patience=cfg.measure.head_patience,
            seed=cfg.seed,
            device=cfg.device,
            progress=ctx.progress,
        )
    }


def refit_classifier(
    model: nn.Module,
    splits,
    *,
    epochs: int,
    lr: float = 1e-3,
    batch_size: int = 1024,
    patience: int = 3,
    min_epochs: int = 5,
    seed: int = 0,
    device: str = "auto",
    progress=None,
) -> dict:
    """Train ``model``'s final ``nn.Linear``, from its current weights, on frozen features of ``splits.plain`` (Adam,
    early stopping on the ``splits.val`` loss, keeping the best epoch's weights, the starting ones included: epoch 0);
    returns the report's ``refit`` part.

    It trains on raw features, not standardized ones as the heads do: a head folded back to raw scale carries
    weights of ``1 / std`` size on nearly dead channels, which blow up when fine-tuning wakes those channels.
    """
    name = classifier_name(model)
    classifier = model.get_submodule(name)
    if not isinstance(classifier, nn.Linear):
        raise ModelError(
            f"--refit-epochs retrains an nn.Linear classifier; {type(model).__name__}'s is {type(classifier).__name__} "
            f"({name}): run without --refit-epochs"
        )
    device_t = resolve_device(device)
    model.to(device_t).eval()
    (x, y), (val_x, val_y) = (
        classifier_inputs(model, classifier, getattr(splits, s), batch_size=256, device=device_t)
        for s in ("plain", "val")
    )
    x, y, val_x, val_y = x.to(device_t), y.to(device_t), val_x.to(device_t), val_y.to(device_t)
    before = _accuracy(classifier, val_x, val_y)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    stopper, used = EarlyStopping(patience, min_epochs), epochs
    with torch.no_grad():
        stopper.step(F.cross_entropy(classifier(val_x), val_y).item(), 0)
    best_state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
    for epoch in track(progress, range(1, epochs + 1), "refit classifier", total=epochs):
        with torch.enable_grad():
            for idx in torch.randperm(len(y), generator=generator).to(device_t).split(batch_size):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(classifier(x[idx]), y[idx]).backward()
                optimizer.step()
        with torch.no_grad():
            improved, stop = stopper.step(F.cross_entropy(classifier(val_x), val_y).item(), epoch)
        if improved:
            best_state = {k: v.detach().clone() for k, v in classifier.state_dict().items()}
        if patience and stop:
            used = epoch
            break
    if patience:
        classifier.load_state_dict(best_state)
    return {
        "classifier": name,
        "epochs": epochs,
        "epochs_used": used,
        "best_epoch": stopper.best_epoch if patience else used,
        "val_accuracy_before": before,
        "val_accuracy": _accuracy(classifier, val_x, val_y),
    }


@torch.no_grad()
def classifier_inputs(
    model: nn.Module, classifier: nn.Linear, dataset, *, batch_size: int, device
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N x D features entering the classifier, labels)`` over ``dataset`` in order."""
    captured: list[torch.Tensor] = []
    hook = classifier.register_forward_pre_hook(lambda _, args: captured.append(args[0].flatten(1).float().cpu()))
    labels = []
    try:
        for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            model(images.to(device))
            labels.append(torch.as_tensor(targets))
    finally:
        hook.remove()
    return torch.cat(captured), torch.cat(labels)


@torch.no_grad()
def _accuracy(classifier: nn.Linear, x: torch.Tensor, y: torch.Tensor) -> float:
    return int((classifier(x).argmax(1) == y).sum()) / len(y)  # as evaluate() counts it
