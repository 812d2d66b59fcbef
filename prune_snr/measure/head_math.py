"""The heads' arithmetic, batched over a group: one matmul per feature width for the logits, softmax and
cross-entropy written out at few labels, gradients without autograd, and each head's loss and hits over a source."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from .feed import _Source

#: Below this many labels softmax and cross-entropy are written out: torch's CPU kernels take 4-7x longer on a
#: last dimension this short (10 labels: 1.2 ms vs 0.16 ms for 4 x 1024 rows) and were a sixth of the heads' time.
SHORT_LABELS = 16


def _class_logits(xs: list[torch.Tensor], layout: list[list[int]], active: list[bool], weights, biases):
    """Per width class with active heads: (its rows ``k x n x d``, logits ``k x n x L`` by one
    ``baddbmm``, which heads)."""
    for x, heads in zip(xs, layout):
        on = [j for j, i in enumerate(heads) if active[i]]
        if not on:
            continue
        if len(on) < len(heads):
            x = x[on]
        w = torch.stack([weights[heads[j]] for j in on])
        b = torch.stack([biases[heads[j]] for j in on]).unsqueeze(1)
        if x.dtype == w.dtype:
            logits = torch.baddbmm(b, x, w.transpose(1, 2))
        else:  # rows held in a lower precision: the matmul in it, the bias and everything after in float32
            logits = torch.bmm(x, w.to(x.dtype).transpose(1, 2)).float().add_(b)
        yield x, logits, [heads[j] for j in on]


def _logits(
    xs: list[torch.Tensor], layout: list[list[int]], active: list[bool], weights, biases
) -> tuple[torch.Tensor, list[int]]:
    """Logits of the active heads, ``P x n x L``, and which heads they are."""
    parts, which = [], []
    for _, logits, heads in _class_logits(xs, layout, active, weights, biases):
        parts.append(logits)
        which += heads
    return (parts[0] if len(parts) == 1 else torch.cat(parts)), which


def _softmax(logits: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dimension of ``P x n x L`` logits, as a new tensor."""
    if logits.shape[-1] >= SHORT_LABELS:
        return torch.softmax(logits, dim=-1)
    g = logits - logits.amax(-1, keepdim=True)
    g.exp_()
    return g.div_(g.sum(-1, keepdim=True))


def _cross_entropy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every head's logits ``P x n x L`` against the labels ``y`` (``n``): ``P x n``."""
    P, n, L = logits.shape
    if L >= SHORT_LABELS:
        return F.cross_entropy(logits.reshape(P * n, L), y.repeat(P), reduction="none").view(P, n)
    shifted = logits - logits.amax(-1, keepdim=True)
    return shifted.exp().sum(-1).log_() - shifted.gather(-1, y.view(1, n, 1).expand(P, n, 1)).squeeze(-1)


def _set_gradients(xs, y: torch.Tensor, layout, active, weights, biases) -> None:
    """Gradients of the summed mean cross-entropies of the active heads, written into their ``.grad`` (inactive
    heads get none, so Adam leaves them as they are). Written out rather than through autograd: the softmax
    less the one-hot labels, then one ``bmm`` per width class (half the time of autograd's backward here)."""
    with torch.no_grad():
        for x, logits, heads in _class_logits(xs, layout, active, weights, biases):
            g = _softmax(logits)
            if logits.shape[2] < SHORT_LABELS:
                g.sub_(
                    F.one_hot(y, logits.shape[2]).to(g.dtype)
                )  # broadcast over heads: cheaper than an index at few labels
            else:
                g[:, torch.arange(len(y), device=y.device), y] -= 1
            g /= len(y)
            grad_w = torch.bmm(g.transpose(1, 2).to(x.dtype), x).float()
            grad_b = g.sum(1)
            for j, i in enumerate(heads):
                weights[i].grad, biases[i].grad = grad_w[j], grad_b[j]


def _scores(source: _Source, layout, active, weights, biases, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy and correct predictions of every head over ``source`` (inactive heads: 0)."""
    loss = torch.zeros(count, dtype=torch.float64)
    correct = torch.zeros(count, dtype=torch.long)
    with torch.no_grad():
        for xs, y in source.chunks():
            logits, which = _logits(xs, layout, active, weights, biases)
            ce = _cross_entropy(logits, y).sum(1)
            hit = (logits.argmax(2) == y).sum(1)
            loss[which] += ce.double().cpu()
            correct[which] += hit.cpu()
    return loss, correct
