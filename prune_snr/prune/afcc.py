"""AFCC on the classifier (METHOD.md, scope *head*): keep only filter→label weights inside
the filter's clusters.

The clusters are those of the model's *own* classifier as the linear head: its field matrices
``M[f, i, j] = sum_k mu[i, f, k] W[j, f, k]`` use the class means of the features the classifier
sees (the last conv block, pooled as the model pools it), computed in chunks of filters, so only
each filter's cluster ids (``F x L``) are held. The mask zeroes weights in place.
"""

from __future__ import annotations

import torch
from torch import nn

from ..choices import CLUSTERS, THRESHOLD
from ..errors import ConfigError
from ..measure.fields import layer_stats
from ..models import classifier_name
from ..runtime import make_loader
from .plan import Context
from .report import grade


def afcc_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """With ``--afcc`` (after fine-tuning, so it does not undo the mask): zero ``model``'s classifier
    weights outside filter clusters at the measurement's θ, and grade it again."""
    if not ctx.cfg.afcc:
        return model, {}
    measured = ctx.measurement.config if ctx.measurement else ctx.cfg.measure
    stats = apply_afcc(model, ctx.splits.plain, threshold=measured.threshold, clusters=measured.clusters)
    graded = grade(model, ctx.splits, ctx.cfg.device)
    after = ctx.report.get("after")
    return model, {
        "afcc": {**stats, "accuracy_before": after["accuracy"], "accuracy_after": graded["accuracy"]},
        "after": {**after, **graded},
    }


@torch.no_grad()
def classifier_class_means(model: nn.Module, dataset, num_classes: int, batch_size: int = 256) -> torch.Tensor:
    """Mean classifier input per label: ``L x D``."""
    head = dict(model.named_modules())[classifier_name(model)]
    store = {}
    handle = head.register_forward_hook(lambda m, inputs, out: store.update(x=inputs[0].detach().flatten(1)))
    sums, counts = None, torch.zeros(num_classes)
    model.eval()
    device = next(model.parameters()).device  # the model's own device: batches go there, sums stay on the CPU
    try:
        for x, y in make_loader(dataset, batch_size=batch_size, shuffle=False):
            model(x.to(device))
            feats = store["x"].double().cpu()
            sums = torch.zeros(num_classes, feats.shape[1], dtype=torch.float64) if sums is None else sums
            sums.index_add_(0, y, feats)
            counts += torch.bincount(y, minlength=num_classes)
    finally:
        handle.remove()
    return (sums / counts.clamp(min=1)[:, None]).float()


@torch.no_grad()
def apply_afcc(model: nn.Module, dataset, *, threshold: float = THRESHOLD, clusters: str = CLUSTERS.default) -> dict:
    """Zero the classifier weights outside each filter's clusters; returns weight counts."""
    head = dict(model.named_modules())[classifier_name(model)]
    if not isinstance(head, torch.nn.Linear):
        raise ConfigError(
            f"--afcc keeps a linear classifier's weights inside filter clusters; {type(model).__name__}'s classifier "
            "is a convolution: use --no-afcc"
        )
    L, D = head.weight.shape
    mu = classifier_class_means(model, dataset, L)
    n_filters = _filters_feeding(model, D)
    K = D // n_filters
    W = head.weight.detach().cpu().view(L, n_filters, K)
    stats = layer_stats(
        mu.view(L, n_filters, K), W, threshold=threshold, clusters=clusters
    )  # in chunks of filters: no F x L x L at once
    in_cluster = stats.component < L  # F x L: label is in one of the filter's clusters
    mask = in_cluster.t()[:, :, None].expand(L, n_filters, K).reshape(L, D).to(head.weight.device, head.weight.dtype)
    before = int((head.weight != 0).sum())
    head.weight.mul_(mask)
    return {"weights_before": before, "weights_after": int((head.weight != 0).sum()), "filters": n_filters}


def _filters_feeding(model: nn.Module, features: int) -> int:
    """Channels of the last conv (the classifier sees them, each pooled to K values)."""
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    channels = convs[-1].out_channels
    return channels if features % channels == 0 else features
