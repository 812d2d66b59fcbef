"""What a pruning run reports (``report.json``), and the grading every stage's part uses.

:class:`PruneReport` holds the options and each stage's part; callers read it as the mapping ``report.json``
holds (``report["after"]["accuracy"]``), and :meth:`PruneReport.to_json` is that file.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import nn
from torch.utils.data import Dataset

from ..config import FineTuneConfig, PruneConfig, key_of, shown_in_report
from ..latency import LatencyMeter
from ..models import count
from ..train.loop import evaluate

if TYPE_CHECKING:  # the context holds a report: imported for the annotations only
    from .plan import Context


@dataclass
class Splits:
    """The data of one pruning run: decisions read ``val``; ``test`` grades; the rest trains."""

    train: Dataset  # augmented, less the validation rows: fine-tuning
    plain: Dataset  # un-augmented, less the validation rows: gradients, AFCC class means
    val: Dataset
    test: Dataset
    num_classes: int


@dataclass(eq=False)  # equal to what it reads as: Mapping's ==, so report == report.to_json()
class PruneReport(Mapping):
    """What ``report.json`` holds: the options first (:func:`options_part`), then each stage's part in the order the
    stages ran; a stage that did not run leaves no key. A part is whatever a stage returns (``{name: value}``),
    so a new stage needs no change here."""

    options: dict
    parts: dict = dataclasses.field(default_factory=dict)

    def add(self, part: dict) -> None:
        """Record a stage's part, ``{name: value}``; a later part of the same name replaces the earlier one."""
        self.parts.update({name: value for name, value in part.items() if value is not None})

    def to_json(self) -> dict:
        """``report.json``: the options, then every part a stage wrote (a deep copy)."""
        return copy.deepcopy(self._view())

    @classmethod
    def from_json(cls, data: dict, *, options: Iterable[str]) -> "PruneReport":
        """The report ``data`` (a ``report.json``) whose ``options`` keys are options, the rest stages' parts."""
        options = set(options)
        return cls(
            options={k: v for k, v in data.items() if k in options},
            parts={k: v for k, v in data.items() if k not in options},
        )

    # Read as the mapping report.json holds (what callers index), without the copy to_json makes.
    def _view(self) -> dict:
        return {**self.options, **self.parts}

    def __getitem__(self, key: str):
        return self._view()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._view())

    def __len__(self) -> int:
        return len(self._view())


def built_in_finetune_keys() -> set[str]:
    """The options of the built-in fine-tuning loop (``finetune_epochs``, ``finetune_lr``, ...), which a user's
    ``finetune=`` function replaces; ``finetune_keep`` applies to both."""
    return {key_of(f) for f in dataclasses.fields(FineTuneConfig) if f.name != "keep"}


def options_part(cfg: PruneConfig, splits: Splits, *, backbone_saw_val: bool | None, callback=None) -> dict:
    """The head of ``report.json``: the splits and the settled options of the run that a report shows
    (each option's ``report`` rule in its field, ``config/pruning.py``: an option in use brings its companions, ``cut``
    with ``truncate``; one not in use leaves no key, so reports of runs without it read as before it existed).
    With a ``finetune=`` ``callback`` the report names it instead of the built-in loop's options."""
    part = {
        "split": "test",
        "decision_split": "val",
        "split_sizes": {"train": len(splits.plain), "val": len(splits.val), "test": len(splits.test)},
    }
    if backbone_saw_val is not None:
        part["backbone_saw_val"] = backbone_saw_val
    for owner in (cfg, cfg.finetune):
        for f in dataclasses.fields(owner):
            value = getattr(owner, f.name)
            if shown_in_report(f, value, cfg):
                part[key_of(f)] = value
    if callback is not None:
        replaced = built_in_finetune_keys()
        part = {k: v for k, v in part.items() if k not in replaced}
        part["finetune_callback"] = getattr(callback, "__qualname__", type(callback).__name__)
    return part


def grade(model: nn.Module, splits: Splits, device: str) -> dict:
    """Test accuracy (the grade) and validation accuracy (what a search decides on)."""
    return {
        "accuracy": evaluate(model, splits.test, device=device)["accuracy"],
        "val_accuracy": evaluate(model, splits.val, device=device)["accuracy"],
    }


def sized_and_graded(model: nn.Module, splits: Splits, device: str) -> dict:
    """MACs, params, test and validation accuracy: the figures of ``before``, ``after`` and the
    model before fine-tuning."""
    return {**count(model), **grade(model, splits, device)}


def grade_original(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """The first stage: the unpruned model's size, accuracies and channels (what every later figure compares with)."""
    return model, {
        "before": sized_and_graded(model, ctx.splits, ctx.cfg.device),
        "channels_before": kept_channels(model),
    }


def grade_pruned(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """The pruned model's size and accuracies before fine-tuning (what ``--finetune-keep best`` compares with)."""
    return model, {"pruned_before_finetune": sized_and_graded(model, ctx.splits, ctx.cfg.device)}


def kept_channels(model: nn.Module) -> dict[str, int]:
    """Output channels of every convolution, by module name."""
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def keep_better(pruned: nn.Module, unfinetuned: dict, *, before: dict, after: dict) -> dict:
    """``--finetune-keep best``: restore the weights before fine-tuning unless it raised validation
    accuracy (a decision on validation; test is only reported). ``before``/``after``: the figures of
    the model before and after fine-tuning. Returns the report's parts: ``finetune`` and ``after``."""
    kept = "after" if after["val_accuracy"] >= before["val_accuracy"] else "before"
    part = {
        "keep": "best",
        "kept": kept,
        "val_accuracy_after_finetune": after["val_accuracy"],
        "accuracy_after_finetune": after["accuracy"],
    }
    if kept == "before":
        pruned.load_state_dict(unfinetuned)
        after = dict(before)  # the same model: counts and grades as measured before fine-tuning
    return {"finetune": part, "after": after}


def latency_stage(ctx: Context, model: nn.Module) -> tuple[nn.Module, dict]:
    """Under a latency target: the pruned model's latency against the original's, as ``latency``."""
    if ctx.cfg.metric != "latency":
        return model, {}
    return model, {"latency": latency_report(ctx.original, model, batch=ctx.cfg.latency_batch)}


def latency_report(original: nn.Module, pruned: nn.Module, *, batch: int) -> dict:
    """The pruned model's ONNX Runtime latency against the original at batch 1, 32 and ``batch``, timed interleaved."""
    meter = LatencyMeter(original, batch=batch)
    try:
        report = {}
        for b in sorted({1, 32, batch}):
            t = meter.seconds(pruned, batch=b)
            report[f"batch_{b}"] = {"pruned_s": t["model"], "original_s": t["reference"], "fraction": t["fraction"]}
        return report
    finally:
        meter.close()
