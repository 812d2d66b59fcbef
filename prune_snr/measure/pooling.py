"""The pooled output of every point: forward hooks, installed by a context manager that removes them in ``finally``,
pool each point's output to ``N x C x p*p`` (by a matmul where that beats torch's adaptive pooling kernel)."""

from __future__ import annotations

import contextlib
import functools

import torch
from torch import nn
from torch.nn import functional as F


@contextlib.contextmanager
def capture(model: nn.Module, points: list[str], pool: int):
    """Yield a dict that each forward pass fills with ``{point: N x C x p*p}`` pooled outputs."""
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = []

    def hook(name):
        def fn(_module, _inputs, output):
            # pooled first, in the output's own dtype: under autocast never a float32 copy of a whole bfloat16 map
            store[name] = pooled(output, pool)

        return fn

    try:
        for name in points:
            handles.append(modules[name].register_forward_hook(hook(name)))
        yield store
    finally:
        for h in handles:
            h.remove()


#: Largest ``--pool`` pooled by a matmul: its cost grows with ``pool**2`` multiply-adds per value,
#: torch's kernel's does not.
MATMUL_POOL = 4


def pooled(output: torch.Tensor, pool: int) -> torch.Tensor:
    """``adaptive_avg_pool2d(output, pool)`` as ``N x C x pool*pool``: for a contiguous ``N x C x H x W`` output one
    matmul with the pooling matrix (:func:`pooling_matrix`) when ``pool`` is at most ``MATMUL_POOL``: at ``pool`` 2
    2-25x faster on CPU than torch's kernel, which cost 13 % of the feature pass of VGG-16 w/4 at 32 px (a
    ``2 x 2`` output pooled to ``2 x 2`` took as long as a convolution), outside autocast. Anything else (autocast's
    bfloat16 outputs included: their pooling matrix would round) goes through torch's kernel.

    Example:
        >>> x = torch.randn(2, 3, 7, 5)
        >>> torch.allclose(pooled(x, 2), F.adaptive_avg_pool2d(x, 2).flatten(2), atol=1e-6)
        True
    """
    last = output.ndim == 4 and not output.is_contiguous() and output.is_contiguous(memory_format=torch.channels_last)
    if output.ndim != 4 or not (output.is_contiguous() or last) or pool > MATMUL_POOL or output.dtype != torch.float32:
        return F.adaptive_avg_pool2d(output, pool).flatten(2)  # in bfloat16 too: it averages in float32, rounds once
    n, c, h, w = output.shape
    matrix = pooling_matrix(h, w, pool, output.device, output.dtype)
    with torch.autocast(output.device.type, enabled=False):
        if last:  # channels-last maps (the CPU's passes): N x HW x C, pooled from the left
            return (matrix.t() @ output.permute(0, 2, 3, 1).reshape(n, h * w, c)).transpose(1, 2).contiguous()
        return (output.view(n * c, h * w) @ matrix).view(n, c, pool * pool)


@functools.lru_cache(maxsize=64)
def pooling_matrix(h: int, w: int, pool: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """``H*W x pool*pool``: column ``i*pool + j`` averages adaptive pooling's bin ``(i, j)``, rows
    ``floor(i*H/pool)`` to ``ceil((i+1)*H/pool)`` and the same for columns."""

    def bins(size):
        m = torch.zeros(size, pool, dtype=torch.float64)
        for i in range(pool):
            start, end = (i * size) // pool, -(-(i + 1) * size // pool)
            m[start:end, i] = 1 / (end - start)
        return m

    return torch.kron(bins(h), bins(w)).to(device=device, dtype=dtype)
