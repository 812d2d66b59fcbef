"""``prune``: measurement-driven structural pruning, truncation, AFCC and fine-tuning.

One function per stage, in the order :func:`prune` runs them::

    load_splits -> measure_if_needed -> truncate_stage -> prune_stage -> fine_tune -> afcc/latency -> report

Every stage takes a few typed arguments and returns what the next needs plus its part of the
:class:`PruneReport`, which is written once, at the end, as ``report.json``.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..atomic import atomic_save_json
from ..checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from ..data import DEFAULT_VAL_FRACTION, build_dataset, hold_out
from ..errors import ConfigError
from ..export import LatencyMeter
from ..measure import Measurement, measure
from ..models.points import _is_timm_efficientnet
from ..runtime import make_loader
from ..train.loop import evaluate, fit
from .afcc import apply_afcc
from .importance import CRITERIA, NEEDS_GRADIENTS, NEEDS_MEASUREMENT, build_importance
from .target import DEFAULT_ROUND_TO, TOLERANCE, Allocation, count, prunable_base, prune_to_target
from .truncate import candidates, choose_cut, cuttable, truncate

PRUNED = "pruned.pt"
FINETUNE = "finetune.pt"
REPORT = "report.json"


@dataclass
class Splits:
    """The data of one pruning run: decisions read ``val``; ``test`` grades; the rest trains."""

    train: Dataset   # augmented, less the validation rows: fine-tuning
    plain: Dataset   # un-augmented, less the validation rows: gradients, AFCC class means
    val: Dataset
    test: Dataset
    num_classes: int


@dataclass
class PruneReport:
    """What ``report.json`` holds; its keys are a contract (the options first, then each stage's part)."""

    options: dict
    before: dict | None = None
    channels_before: dict | None = None
    measurement: dict | None = None
    truncation: dict | None = None
    search: dict | None = None
    pruned_before_finetune: dict | None = None
    latency: dict | None = None
    afcc: dict | None = None
    after: dict | None = None
    channels_after: dict | None = None
    seconds: float | None = None

    def to_json(self) -> dict:
        parts = {k: v for k, v in dataclasses.asdict(self).items() if k != "options" and v is not None}
        return {**self.options, **parts}

    @classmethod
    def from_json(cls, data: dict) -> "PruneReport":
        names = {f.name for f in dataclasses.fields(cls)} - {"options"}
        return cls(options={k: v for k, v in data.items() if k not in names}, **{k: v for k, v in data.items() if k in names})


def _kept_channels(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prune(
    model: nn.Module,
    dataset: str,
    *,
    data_dir: str | None = None,
    target: float = 0.5,
    metric: str = "params",
    criterion: str = "l1",
    allocation: str = "measured",
    group_reduction: str = "mean",
    round_to: int | None = None,
    latency_batch: int = 32,
    iterative_steps: int = 1,
    truncate_layers: bool = False,
    delta: float = 0.005,
    afcc: bool = False,
    finetune_epochs: int = 1,
    finetune_lr: float = 0.01,
    finetune_fraction: float = 1.0,
    distill: bool = False,
    measurement: Measurement | None = None,
    measure_options: dict | None = None,
    val_fraction: float | None = None,
    batch_size: int = 128,
    seed: int = 0,
    device: str = "auto",
    amp: bool = False,
    out: str | Path | None = None,
    resume: bool = False,
    config: dict | None = None,
    progress=None,
) -> tuple[nn.Module, dict]:
    """Prune ``model`` to remove ``target`` of its prunable params/MACs, then fine-tune.

    Args:
        model: a trained classifier (``prune_snr.load(...)``).
        dataset: the dataset it was trained on (name for :func:`prune_snr.build_dataset`).
        target: fraction of the prunable ``metric`` to remove, in (0, 1).
        metric: ``params``, ``macs`` or ``latency`` (of the exported model in ONNX Runtime on this
            machine at ``latency_batch``, relative to the unpruned model).
        round_to: keep channel counts multiples of this (default ``None``: the alignment ONNX
            Runtime's CPU convolutions run fast on here, 16 with AVX-512 else 8; 1 = no rounding).
        criterion: a key of :data:`prune_snr.prune.importance.CRITERIA` (``snr`` or a baseline).
        allocation: ``uniform`` (one ratio per layer), ``measured`` (METHOD's per-layer ratios
            from marginal head accuracy) or ``global`` (torch-pruning's global ranking).
        truncate_layers: cut the network where later layers add less than ``delta`` accuracy;
            ``target`` still counts from the original model (channels are pruned only for what
            the cut did not remove).
        afcc: keep only classifier weights inside each filter's clusters (after fine-tuning).
        finetune_epochs / finetune_lr / distill: fine-tuning (0 epochs = none); distillation
            from the unpruned model.
        finetune_fraction: fine-tune on this seeded random fraction of the training set (a cheap
            proxy for search trials; 1.0 = all of it).
        measurement: reuse a measurement of ``model``; measured here when needed and not given
            (with ``measure_options``, e.g. ``{"pool": 2, "threshold": 0.3, "head_epochs": 30}``).
        val_fraction: the validation split every decision reads (default: the measurement's,
            else 0.1); fine-tuning uses the rest of the training split, the test split grades.
        out: folder for ``finetune.pt`` (resumable fine-tuning), ``pruned.pt`` and ``report.json``.

    Returns:
        ``(pruned model, report dict)``.

    Raises:
        ConfigError: bad target/metric/criterion/allocation, or an unreachable target.

    Example:
        >>> pruned, report = prune(prune_snr.load("runs/fm/model.pt"), "fashion-mnist", target=0.5)  # doctest: +SKIP
        >>> report["after"]["accuracy"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    round_to = DEFAULT_ROUND_TO if round_to is None else round_to
    if criterion not in CRITERIA:
        raise ConfigError(f"--criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    if not 0 < finetune_fraction <= 1:
        raise ConfigError(f"finetune fraction {finetune_fraction}: use a fraction in (0, 1]")
    if measurement is not None:
        measurement.val_accuracies()  # a measurement without validation figures cannot drive decisions
    if val_fraction is None:
        recorded = measurement.meta["options"].get("val_fraction") if measurement is not None else None
        val_fraction = DEFAULT_VAL_FRACTION if recorded is None else recorded
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction {val_fraction}: prune decides on a validation split; use a fraction in (0, 1)")
    splits = load_splits(dataset, data_dir, input_size=model.spec.get("input_size"), val_fraction=val_fraction,
                         num_classes=model.spec["num_classes"])
    out = Path(out) if out else None
    ckpt = out / FINETUNE if out else None
    if ckpt and ckpt.is_file() and not resume:
        raise ConfigError(f"{out} already holds a pruning run; pass --resume to continue its fine-tuning or choose another --out")
    original = model.cpu().eval()
    report = PruneReport(options={
        "dataset": dataset, "split": "test", "decision_split": "val", "val_fraction": val_fraction, "seed": seed, "round_to": round_to,
        **({"latency_batch": latency_batch} if metric == "latency" else {}), "target": target, "metric": metric,
        "criterion": criterion, "allocation": allocation, "truncate": truncate_layers, "afcc": afcc,
        "finetune_epochs": finetune_epochs, "finetune_fraction": finetune_fraction})

    if resume and ckpt and ckpt.is_file():
        state = load_checkpoint(ckpt)
        pruned, history = build_from_checkpoint(state), state["pruning"]
        report = PruneReport.from_json({**report.to_json(), **state["config"]["report"]})
    else:
        report.before = {**count(original), **grade(original, splits, device)}
        report.channels_before = _kept_channels(original)
        needed = criterion in NEEDS_MEASUREMENT or allocation == "measured" or truncate_layers
        measurement, report.measurement = measure_if_needed(
            original, measurement, needed=needed, dataset=dataset, data_dir=data_dir, val_fraction=val_fraction, seed=seed,
            device=device, options=measure_options, progress=progress)
        base = original
        if truncate_layers:
            base, measurement, report.truncation = truncate_stage(original, measurement, full_val_accuracy=report.before["val_accuracy"],
                                                                  delta=delta, splits=splits, device=device)
        pruned, history, report.search, left = prune_stage(
            original, base, measurement, target=target, metric=metric, criterion=criterion, allocation=allocation,
            group_reduction=group_reduction, round_to=round_to, iterative_steps=iterative_steps, latency_batch=latency_batch,
            splits=splits, seed=seed, progress=progress)
        if base is not original:
            report.truncation["target_left_for_channels"] = max(0.0, left)
        report.pruned_before_finetune = {**count(pruned), **grade(pruned, splits, device)}
    config = {"model": pruned.spec, "report": report.to_json(), **(config or {})}
    fine_tune(pruned, splits, epochs=finetune_epochs, lr=finetune_lr, fraction=finetune_fraction, batch_size=batch_size, seed=seed,
              device=device, amp=amp, checkpoint=ckpt, checkpoint_extra={"kind": "pruned", "config": config, "pruning": history},
              resume=resume, teacher=original if distill else None, progress=progress)
    pruned = pruned.cpu().eval()
    report.after = {**count(pruned), **grade(pruned, splits, device)}
    if metric == "latency":
        report.latency = latency_report(original, pruned, batch=latency_batch)
    if afcc:
        stats = apply_afcc(pruned, splits.plain, threshold=measurement.threshold if measurement else 0.3)
        graded = grade(pruned, splits, device)
        report.afcc = {**stats, "accuracy_before": report.after["accuracy"], "accuracy_after": graded["accuracy"]}
        report.after.update(graded)
    report.channels_after = _kept_channels(pruned)
    report.seconds = time.perf_counter() - t0
    result = report.to_json()
    config["report"] = result  # pruned.pt carries the final report (finetune.pt the one before fine-tuning)
    if out:
        save_checkpoint(out / PRUNED, {"kind": "pruned", "model": pruned.state_dict(), "pruning": history, "config": config})
        atomic_save_json(out / REPORT, result)
    return pruned, result


def load_splits(dataset: str, data_dir: str | None, *, input_size: int | None, val_fraction: float, num_classes: int) -> Splits:
    train = build_dataset(dataset, "train", data_dir, input_size=input_size)
    if len(train.classes) != num_classes:
        raise ConfigError(f"the model has {num_classes} outputs but {dataset} has {len(train.classes)} labels")
    plain, val = hold_out(build_dataset(dataset, "train", data_dir, input_size=input_size, augment=False), val_fraction)
    return Splits(train=hold_out(train, val_fraction)[0], plain=plain, val=val,
                  test=build_dataset(dataset, "test", data_dir, input_size=input_size), num_classes=num_classes)


def grade(model: nn.Module, splits: Splits, device: str) -> dict:
    """Test accuracy (the grade) and validation accuracy (what a search decides on)."""
    return {"accuracy": evaluate(model, splits.test, device=device)["accuracy"],
            "val_accuracy": evaluate(model, splits.val, device=device)["accuracy"]}


def measure_if_needed(model: nn.Module, measurement: Measurement | None, *, needed: bool, dataset: str, data_dir: str | None,
                      val_fraction: float, seed: int, device: str, options: dict | None, progress=None) -> tuple[Measurement | None, dict | None]:
    """The given measurement, or one made here with the recipe's options when a stage needs it."""
    if measurement is not None or not needed:
        return measurement, None
    options = {"expanded": _is_timm_efficientnet(model), **(options or {})}
    made = measure(model, dataset, data_dir=data_dir, val_fraction=val_fraction, seed=seed, device=device, progress=progress, **options)
    return made, {"made_here": True, "options": made.meta["options"]}


def truncate_stage(model: nn.Module, measurement: Measurement, *, full_val_accuracy: float, delta: float, splits: Splits,
                   device: str) -> tuple[nn.Module, Measurement, dict]:
    """Cut after the earliest cuttable point within ``delta`` of the full model on validation; report every candidate."""
    rows = candidates(measurement, full_val_accuracy, delta)
    cuts = {}
    for row in rows:  # every candidate with the size it would leave
        row["cuttable"] = cuttable(model, row["point"])
        if row["cuttable"]:
            cuts[row["point"]] = truncate(model, measurement, row["point"])
            row.update(count(cuts[row["point"]]))
    cut = choose_cut(rows, model)
    report = {"delta": delta, "candidates": rows, "cut_after": cut}
    if not cut:
        return model, measurement, report
    base = cuts[cut]
    names = [p["name"] for p in measurement.points]
    kept = set(names[: names.index(cut) + 1])
    measurement = Measurement(meta=measurement.meta, points=[p for p in measurement.points if p["name"] in kept],
                              fields={k: v for k, v in measurement.fields.items() if k in kept}, heads=measurement.heads)
    grades = grade(base, splits, device)
    report.update(accuracy_after_cut=grades["accuracy"], val_accuracy_after_cut=grades["val_accuracy"])
    return base, measurement, report


def prune_stage(original: nn.Module, base: nn.Module, measurement: Measurement | None, *, target: float, metric: str, criterion: str,
                allocation: str, group_reduction: str, round_to: int | None, iterative_steps: int, latency_batch: int,
                splits: Splits, seed: int, progress=None) -> tuple[nn.Module, list, dict, float]:
    """Prune ``base`` so that ``target`` counts from ``original`` (what a cut removed is not removed twice).

    Returns ``(pruned, pruning history, search report, what the cut left for channels)``.
    """
    alloc = Allocation(allocation, [p["name"] for p in measurement.points] if measurement else None,
                       measurement.val_accuracies() if measurement else None, splits.num_classes)
    gradient_batches = None
    if criterion in NEEDS_GRADIENTS:
        loader = make_loader(splits.plain, batch_size=64, shuffle=True, seed=seed)
        gradient_batches = [batch for batch, _ in zip(loader, range(4))]
    meter = LatencyMeter(base, batch=latency_batch) if metric == "latency" else None
    try:
        if meter and base is not original:
            reference = LatencyMeter(original, batch=latency_batch)
            cut_kept = reference.fraction(base)
            reference.close()
        elif meter:
            cut_kept = 1.0
        else:
            cut_kept = prunable_base(base, metric) / prunable_base(original, metric)
        base_target = 1 - (1 - target) / cut_kept
        if base_target <= TOLERANCE:
            return base, [], {"ratio": 0.0, "removed": 1 - cut_kept, "trials": 0, "fallback_groups": [],
                              "note": "truncation alone meets the target; no channel pruned"}, base_target
        reduction = {"group_reduction": group_reduction} if criterion in NEEDS_MEASUREMENT else {}
        outcome = prune_to_target(
            base, lambda m: build_importance(criterion, model=m, measurement=measurement, seed=seed, **reduction),
            target=base_target, metric=metric, allocation=alloc, round_to=None if round_to == 1 else round_to,
            iterative_steps=iterative_steps, gradient_batches=gradient_batches, latency=meter, progress=progress)
    finally:
        if meter:
            meter.close()
    search = {"ratio": outcome.ratio, "removed": 1 - (1 - outcome.removed) * cut_kept, "trials": outcome.trials,
              "fallback_groups": outcome.fallback_groups}
    return outcome.model, outcome.history, search, base_target


def fine_tune(model: nn.Module, splits: Splits, *, epochs: int, lr: float, fraction: float, batch_size: int, seed: int, device: str,
              amp: bool, checkpoint: Path | None, checkpoint_extra: dict, resume: bool, teacher: nn.Module | None, progress=None) -> None:
    """SGD + cosine on the training split less its validation part (a seeded ``fraction`` of it for cheap search trials)."""
    if epochs <= 0:
        return
    train = splits.train
    if fraction < 1:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train = Subset(train, order[: max(1, round(fraction * len(train)))].tolist())
    opts = SimpleNamespace(epochs=epochs, batch_size=batch_size, lr=lr, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                           label_smoothing=0.0, seed=seed, device=device, amp=amp, channels_last=True, workers=0)
    fit(model, train, splits.test, opts, checkpoint_path=checkpoint, checkpoint_extra=checkpoint_extra, resume=resume,
        teacher=teacher, progress=progress)


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
