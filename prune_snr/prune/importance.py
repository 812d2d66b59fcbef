"""Channel importance for torch-pruning: per-filter SNR from a measurement, plus baselines.

``CRITERION_BUILDERS`` maps each row of :data:`prune_snr.choices.CRITERIA` (the one table behind
``--criterion``) to a builder of a ``torch_pruning.importance.Importance``, so SNR and the
baselines run through the same pruner.

Example:
    >>> imp = build_importance("snr", model=model, measurement=measurement)  # doctest: +SKIP
    >>> pruner = tp.pruner.MetaPruner(model, example_inputs, importance=imp, pruning_ratio=0.5)  # doctest: +SKIP
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch_pruning as tp
from torch import nn

from ..choices import CRITERIA
from ..errors import ConfigError
from ..measure.result import Measurement
from ..models import point_conv


def _ranks(values: torch.Tensor) -> torch.Tensor:
    """Within-layer ranks scaled to (0, 1]: the weakest filter gets 1/F, the strongest 1."""
    order = torch.argsort(torch.argsort(values, stable=True), stable=True)
    return (order.double() + 1) / len(values)


def filter_scores(
    measurement: Measurement, saliency: str = "snr", model: nn.Module | None = None
) -> dict[str, np.ndarray]:
    """Per-filter saliency of every measured point (higher = keep).

    ``snr``: METHOD's SNR_f. ``snr-strength``: SNR_f x max(M_f) / mean_f' max(M_f'), which gives
    back the filter strength that normalizing by max(M_f) hides. ``snr-x-l1``: the product of
    the filter's within-layer rank by SNR and by the L1 norm of its conv kernel (needs ``model``).
    """
    if saliency not in CRITERIA.measured:
        raise ConfigError(f"saliency {saliency!r}: choose one of {', '.join(CRITERIA.measured)}")
    scores = {}
    for point in measurement.points:
        stats = measurement.stats(point["name"])
        score = stats.snr.double()
        if saliency == "snr-strength":
            strength = stats.strength.double()
            score = score * strength / strength.mean().clamp(min=1e-12)
        elif saliency == "snr-x-l1":
            if model is None:
                raise ConfigError("saliency snr-x-l1 needs the model (for the kernels' L1 norms)")
            l1 = point_conv(model, point["name"]).weight.detach().abs().flatten(1).sum(1).double()
            score = _ranks(score) * _ranks(l1)
        scores[point["name"]] = score.numpy()
    return scores


class SNRImportance(tp.importance.Importance):
    """Scores each channel of a torch-pruning group by its filters' measured saliency.

    Every member of the group whose output channels are a measured point's filters contributes
    (not only ``group[0]``: in an MBConv the root is ``se.conv_expand`` while the measured conv is
    ``conv_dw``); members are aggregated with ``group_reduction`` (mean by default). A group with
    no measured member falls back to ``fallback`` (group L1 magnitude) and is recorded in
    ``fallback_groups``.
    """

    def __init__(
        self,
        model: nn.Module,
        measurement: Measurement,
        *,
        saliency: str = "snr",
        group_reduction: str = "mean",
        fallback: tp.importance.Importance | None = None,
    ):
        if group_reduction not in ("mean", "max", "sum"):
            raise ConfigError(f"group_reduction {group_reduction!r}: use mean, max or sum")
        scores = filter_scores(measurement, saliency, model)
        self.by_module: dict[int, torch.Tensor] = {}
        self.names: dict[int, str] = {}
        for point, score in scores.items():
            conv = point_conv(model, point)
            if conv.out_channels != len(score):
                raise ConfigError(
                    f"measurement of {point} has {len(score)} filters but the model has {conv.out_channels}; "
                    "re-measure this model (was it pruned since?)"
                )
            self.by_module[id(conv)] = torch.from_numpy(score).float()
            self.names[id(conv)] = point
        self.group_reduction = group_reduction
        self.fallback = fallback or tp.importance.GroupMagnitudeImportance(p=1)
        self.fallback_groups: list[str] = []

    @torch.no_grad()
    def __call__(self, group) -> torch.Tensor:
        n = len(group[0].idxs)
        total = torch.full((n,), -torch.inf) if self.group_reduction == "max" else torch.zeros(n)
        count = torch.zeros(n)
        for i, (dep, idxs) in enumerate(group):
            # depthwise convs have their own pruner class: match any out-channel pruning of a measured conv
            if getattr(dep.pruning_fn, "__name__", "") != "prune_out_channels" or id(dep.layer) not in self.by_module:
                continue
            root = torch.as_tensor(group[i].root_idxs)
            values = self.by_module[id(dep.layer)][torch.as_tensor(idxs)]
            if self.group_reduction == "max":
                total.scatter_reduce_(0, root, values, reduce="amax")
            else:
                total.scatter_add_(0, root, values)
            count.scatter_add_(0, root, torch.ones_like(values))
        if count.sum() == 0:
            linear = isinstance(group[0].dep.target.module, torch.nn.Linear)
            why = "a linear layer: only convolutions are measured" if linear else "no measured point in this group"
            self.fallback_groups.append(f"{_group_name(group)}: {why}")
            return self.fallback(group)
        if self.group_reduction == "mean":
            total = total / count.clamp(min=1)
        return total


def _group_name(group) -> str:
    target = group[0].dep.target
    return getattr(target, "name", None) or str(target)


class WithFallback(tp.importance.Importance):
    """A torch-pruning criterion that scores groups it has no score for (``None``, e.g. ``bn`` on
    an SE bottleneck with no BatchNorm) by L1 magnitude instead of leaving them unpruned; those
    groups are listed in ``fallback_groups`` like SNR's."""

    def __init__(self, primary: tp.importance.Importance):
        self.primary = primary
        self.fallback = tp.importance.GroupMagnitudeImportance(p=1)
        self.fallback_groups: list[str] = []

    def __call__(self, group) -> torch.Tensor:
        scores = self.primary(group)
        if scores is None:
            self.fallback_groups.append(_group_name(group))
            return self.fallback(group)
        return scores


def _random(seed: int = 0) -> tp.importance.Importance:
    class SeededRandom(tp.importance.Importance):
        def __init__(self):
            self.generator = torch.Generator().manual_seed(seed)

        def __call__(self, group):
            return torch.rand(len(group[0].idxs), generator=self.generator)

    return SeededRandom()


#: ``--criterion`` name -> builder(model, measurement, seed). Baselines are torch-pruning's own.
CRITERION_BUILDERS: dict[str, Callable[..., tp.importance.Importance]] = {
    "snr": lambda model, measurement, seed=0, **kw: SNRImportance(model, measurement, saliency="snr", **kw),
    "snr-strength": lambda model, measurement, seed=0, **kw: SNRImportance(
        model, measurement, saliency="snr-strength", **kw
    ),
    "snr-x-l1": lambda model, measurement, seed=0, **kw: SNRImportance(model, measurement, saliency="snr-x-l1", **kw),
    "l1": lambda model, measurement, seed=0, **kw: tp.importance.GroupMagnitudeImportance(p=1),
    "l2": lambda model, measurement, seed=0, **kw: tp.importance.GroupMagnitudeImportance(p=2),
    "bn": lambda model, measurement, seed=0, **kw: WithFallback(tp.importance.BNScaleImportance()),
    "lamp": lambda model, measurement, seed=0, **kw: tp.importance.LAMPImportance(p=2),
    "taylor": lambda model, measurement, seed=0, **kw: tp.importance.GroupTaylorImportance(),
    "fpgm": lambda model, measurement, seed=0, **kw: tp.importance.FPGMImportance(),
    "random": lambda model, measurement, seed=0, **kw: _random(seed),
}
assert set(CRITERION_BUILDERS) == set(CRITERIA), "a --criterion row without a builder (or the reverse)"


def build_importance(name: str, *, model: nn.Module, measurement: Measurement | None = None, seed: int = 0, **kwargs):
    """The importance for ``--criterion name``; unknown names are an error listing the choices."""
    CRITERIA.check(name)
    if name in CRITERIA.measured and measurement is None:
        raise ConfigError(f"--criterion {name} needs a measurement (--measurement DIR, or let prune measure first)")
    return CRITERION_BUILDERS[name](model, measurement, seed=seed, **kwargs)
