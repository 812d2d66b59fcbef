"""Phase 2, step 2: linear heads for every point, trained together on cached features.

Heads see standardized features (better conditioned, Adam converges in a few epochs) and are
folded back to the raw feature scale afterwards, ``W_raw = W / sigma``, because the field
matrices must be computed on raw, un-centered class means (METHOD.md). All heads share the
mini-batch indices and one optimizer; their losses are independent, so this is the same as
training each alone, at a fraction of the overhead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch.nn import functional as F

from ..progress import track

ROWS_PER_CHUNK = 8192


@dataclass
class Head:
    weight: torch.Tensor  # L x C x K, raw feature scale
    bias: torch.Tensor    # L, raw feature scale
    accuracy: float       # on the evaluation rows
    train_accuracy: float


def _rows(features: np.ndarray, index: np.ndarray) -> torch.Tensor:
    """Gather rows (sorted, so a memory-mapped array reads forward) as a float32 tensor."""
    order = np.argsort(index, kind="stable")
    out = np.empty((len(index), *features.shape[1:]), dtype=np.float32)
    out[order] = features[index[order]]
    return torch.from_numpy(out)


def feature_stats(features: np.ndarray, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-feature mean and std over ``index`` rows, accumulated in float64 chunk by chunk."""
    total = torch.zeros(features.shape[1:], dtype=torch.float64)
    total_sq = torch.zeros_like(total)
    for start in range(0, len(index), ROWS_PER_CHUNK):
        x = _rows(features, index[start:start + ROWS_PER_CHUNK]).double()
        total += x.sum(0)
        total_sq += (x * x).sum(0)
    n = len(index)
    mean = total / n
    std = (total_sq / n - mean * mean).clamp(min=0).sqrt()
    return mean.float(), std.float().clamp(min=1e-6)


def class_means(features: np.ndarray, index: np.ndarray, targets: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``mu[i]`` = mean feature over the rows of label i: ``L x C x K``."""
    sums = torch.zeros((num_classes, *features.shape[1:]), dtype=torch.float64)
    for start in range(0, len(index), ROWS_PER_CHUNK):
        x = _rows(features, index[start:start + ROWS_PER_CHUNK]).double()
        sums.index_add_(0, targets[start:start + ROWS_PER_CHUNK], x)
    counts = torch.bincount(targets, minlength=num_classes).clamp(min=1).double()
    return (sums / counts.view(-1, *([1] * (sums.ndim - 1)))).float()


def _standardized(features: dict[str, np.ndarray], index: np.ndarray, stats: dict) -> torch.Tensor:
    """All points' features of ``index`` rows side by side, standardized: ``N x sum(C*K)``."""
    blocks = [(_rows(features[n], index).flatten(1) - stats[n][0].flatten()) / stats[n][1].flatten() for n in features]
    return torch.cat(blocks, dim=1)


def train_heads(
    train_features: dict[str, np.ndarray],
    train_index: np.ndarray,
    train_targets: torch.Tensor,
    eval_features: dict[str, np.ndarray],
    eval_index: np.ndarray,
    eval_targets: torch.Tensor,
    *,
    num_classes: int,
    epochs: int = 30,
    lr: float = 1e-3,
    batch_size: int = 1024,
    seed: int = 0,
    device: torch.device = torch.device("cpu"),
    progress=None,
    description: str = "heads",
) -> dict[str, Head]:
    """Train one linear head per point on ``features[point][index]`` -> ``targets``.

    The standardized features of all points are gathered once into one in-memory matrix
    (on ``device``), so each step is one row gather plus one small matmul per point.

    Args:
        train_features / eval_features: ``{point: N x C x K}`` arrays (memory-mapped is fine).
        train_index / eval_index: the rows to use (a label subset, or all rows).
        train_targets / eval_targets: labels of those rows, already in ``0..num_classes-1``.

    Returns:
        ``{point: Head}`` with raw-scale weights ``L x C x K`` and test accuracy.
    """
    names = list(train_features)
    g = torch.Generator().manual_seed(seed)
    stats = {n: feature_stats(train_features[n], train_index) for n in names}
    dims = [int(np.prod(train_features[n].shape[1:])) for n in names]
    offsets = np.concatenate([[0], np.cumsum(dims)])
    x_train = _standardized(train_features, train_index, stats).to(device)
    y_train = train_targets.to(device)
    weights = [torch.zeros(num_classes, d, device=device, requires_grad=True) for d in dims]
    biases = [torch.zeros(num_classes, device=device, requires_grad=True) for _ in dims]
    optimizer = torch.optim.Adam(weights + biases, lr=lr)
    steps_per_epoch = max(1, len(train_index) // batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    for _ in track(progress, range(epochs), description, total=epochs):
        perm = torch.randperm(len(train_index), generator=g)
        for step in range(steps_per_epoch):
            sel = perm[step * batch_size:(step + 1) * batch_size].to(device)
            x, y = x_train.index_select(0, sel), y_train.index_select(0, sel)
            optimizer.zero_grad(set_to_none=True)
            loss = sum(F.cross_entropy(torch.addmm(b, x[:, lo:hi], w.t()), y)
                       for w, b, lo, hi in zip(weights, biases, offsets[:-1], offsets[1:]))
            loss.backward()
            optimizer.step()
            scheduler.step()
    del x_train
    heads = {}
    with torch.no_grad():
        x_eval = _standardized(eval_features, eval_index, stats).to(device)
        for n, w, b, lo, hi in zip(names, weights, biases, offsets[:-1], offsets[1:]):
            train_acc = _accuracy_std(train_features[n], train_index, train_targets, stats[n], w, b, device)
            eval_acc = (torch.addmm(b, x_eval[:, lo:hi], w.t()).argmax(1).cpu() == eval_targets).float().mean().item()
            mean, std = stats[n][0].flatten().to(device), stats[n][1].flatten().to(device)
            w_raw = w / std  # fold the standardization back: raw-scale head, same logits
            b_raw = b - w_raw @ mean
            heads[n] = Head(weight=w_raw.reshape(num_classes, *train_features[n].shape[1:]).cpu(), bias=b_raw.cpu(),
                            accuracy=eval_acc, train_accuracy=train_acc)
    return heads


def _accuracy_std(features, index, targets, stats, w, b, device) -> float:
    correct = 0
    mean, std = stats[0].flatten(), stats[1].flatten()
    for start in range(0, len(index), ROWS_PER_CHUNK):
        x = ((_rows(features, index[start:start + ROWS_PER_CHUNK]).flatten(1) - mean) / std).to(device)
        correct += (torch.addmm(b, x, w.t()).argmax(1).cpu() == targets[start:start + ROWS_PER_CHUNK]).sum().item()
    return correct / len(index)
