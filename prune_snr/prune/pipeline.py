"""``prune``: measurement-driven structural pruning, truncation, AFCC and fine-tuning.

One function per stage, in the order :func:`prune` runs them::

    load_splits -> measure_if_needed -> truncate_stage -> drop_stage -> prune_stage -> fine_tune -> afcc/latency -> report

:func:`prune` takes a :class:`prune_snr.config.PruneConfig`; :func:`prune_checkpoint` is ``prune-snr prune``.

Every stage takes a few typed arguments and returns what the next needs plus its part of the
:class:`PruneReport`, which is written once, at the end, as ``report.json``.
"""
from __future__ import annotations

import copy
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import Dataset, Subset

from ..atomic import atomic_save_json
from ..checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint, with_trained_data
from ..choices import MEASURED_ALLOCATIONS, MEASURED_CRITERIA, NEEDS_GRADIENTS
from ..config import FineTuneConfig, MeasureConfig, PruneConfig, resolve, to_dict
from ..data import DEFAULT_VAL_FRACTION, build_dataset, hold_out
from ..errors import ConfigError
from ..latency import LatencyMeter
from ..measure import Measurement, measure
from ..measure.pipeline import plan_validation
from ..models import count, drop_blocks, droppable_blocks, expanded_by_default, prunable_base
from ..models.blocks import inside
from ..runtime import make_loader
from ..train.loop import evaluate, fit
from .afcc import apply_afcc
from .importance import build_importance
from .refit import refit_classifier
from .target import DEFAULT_ROUND_TO, TOLERANCE, Allocation, PruneOutcome, prune_to_target
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
    blocks: dict | None = None
    search: dict | None = None
    refit: dict | None = None
    pruned_before_finetune: dict | None = None
    finetune: dict | None = None
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


def reads_measurement(cfg: PruneConfig) -> bool:
    """Whether a stage of this run decides on a measurement (filter scores, layer ratios, the cut)."""
    return cfg.criterion in MEASURED_CRITERIA or cfg.allocation in MEASURED_ALLOCATIONS or cfg.truncate


def _kept_channels(model: nn.Module) -> dict[str, int]:
    return {name: m.out_channels for name, m in model.named_modules() if isinstance(m, nn.Conv2d)}


def prune(
    model: nn.Module,
    dataset: str | None = None,
    cfg: PruneConfig | None = None,
    *,
    measurement: Measurement | None = None,
    out: str | Path | None = None,
    resume: bool = False,
    config: dict | None = None,
    progress=None,
    backbone_saw_val: bool | None = None,
    **options,
) -> tuple[nn.Module, dict]:
    """Prune ``model`` to remove ``cfg.target`` of its prunable params/MACs/latency, then fine-tune.

    Args:
        model: a trained classifier (``prune_snr.load(...)``).
        dataset: the dataset it was trained on (name for :func:`prune_snr.build_dataset`; default
            ``cfg.dataset``).
        cfg: the options (:class:`prune_snr.config.PruneConfig`); keyword ``options`` (its flat
            keys: ``target``, ``criterion``, ``allocation``, ``truncate``, ``finetune_epochs``,
            ``threshold``, ...) override it, as a convenience. The main ones:

            - ``target``: fraction of the prunable ``metric`` to remove, in (0, 1);
            - ``metric``: ``params``, ``macs`` or ``latency`` (of the exported model in ONNX Runtime
              on this machine at ``latency_batch``, relative to the unpruned model);
            - ``criterion`` / ``allocation``: rows of :data:`prune_snr.choices.CRITERIA` /
              :data:`prune_snr.choices.ALLOCATIONS`;
            - ``round_to``: keep channel counts multiples of this (default: the alignment ONNX
              Runtime's CPU convolutions run fast on here, 16 with AVX-512 else 8; 1 = off);
            - ``truncate``: cut the network where later layers add less than ``delta`` validation
              accuracy; ``target`` still counts from the original model;
            - ``iterative_steps`` with ``remeasure``: prune in that many equal steps and measure the
              pruned model anew between them (needs a measured criterion or allocation);
            - ``drop_blocks``: drop single residual blocks (identity shortcut) while the model stays
              within ``delta`` of the full model's validation accuracy (after any cut);
            - ``afcc``: keep only classifier weights inside each filter's clusters (after fine-tuning);
            - ``cfg.finetune``: epochs (0 = none), lr, fraction (a seeded part of the training split:
              a cheap proxy for search trials), distill (from the unpruned model), keep ("best": undo
              fine-tuning that lowered validation accuracy; the report's ``finetune`` says which was kept);
            - ``cfg.measure``: the options of the measurement made here when one is needed and
              ``measurement`` is not given.
        measurement: reuse a measurement of ``model`` (default: ``cfg.measurement``'s folder, else
            measured here when a stage needs one).
        out: folder for ``finetune.pt`` (resumable fine-tuning), ``pruned.pt`` and ``report.json``.

    Returns:
        ``(pruned model, report dict)``; the decisions read the validation split (the measurement's
        ``val_fraction``, else 0.1), fine-tuning the rest of the training split, and the test split grades.

    Raises:
        ConfigError: bad target/metric/criterion/allocation, or an unreachable target.

    Example:
        >>> pruned, report = prune(prune_snr.load("runs/fm/model.pt"), "fashion-mnist", target=0.5)  # doctest: +SKIP
        >>> report["after"]["accuracy"]  # doctest: +SKIP
    """
    t0 = time.perf_counter()
    cfg = resolve(PruneConfig, overrides=options, base=cfg)
    dataset = cfg.dataset if dataset is None else dataset
    if dataset is None:
        raise ConfigError("prune needs the dataset the model was trained on: pass one or set PruneConfig.dataset")
    if measurement is None and cfg.measurement:
        measurement = Measurement.load(cfg.measurement)
    if measurement is not None and reads_measurement(cfg):
        measurement.val_accuracies()  # a measurement without validation figures cannot drive decisions
        split = measurement.meta["options"].get("fields_split", "test")
        if split == "test":
            raise ConfigError(f"the measurement's fields come from the test split (--fields-split test), which only grades; "
                              f"--criterion {cfg.criterion}/--allocation {cfg.allocation} would decide on it: re-measure with "
                              "--fields-split val")
    val_fraction = cfg.val_fraction
    if val_fraction is None:
        recorded = measurement.meta["options"].get("val_fraction") if measurement is not None else None
        val_fraction = DEFAULT_VAL_FRACTION if recorded is None else recorded
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction {val_fraction}: prune decides on a validation split; use a fraction in (0, 1)")
    val_source = cfg.val_source or (measurement.meta.get("val_source") if measurement is not None else None) or "train"
    if measurement is not None and measurement.meta.get("val_source", "train") != val_source:
        raise ConfigError(f"--val-source {val_source} but the measurement decided on a validation split from the "
                          f"{measurement.meta.get('val_source', 'train')} split; re-measure with --val-source {val_source}")
    recorded = measurement.meta["options"] if measurement is not None else {}
    split_seed = cfg.split_seed if cfg.split_seed is not None else recorded.get("split_seed")
    if measurement is not None and recorded.get("split_seed") != split_seed:
        raise ConfigError(f"--split-seed {split_seed} but the measurement decided on the validation split of --split-seed "
                          f"{recorded.get('split_seed')}; re-measure with --split-seed {split_seed}")
    held_out = cfg.held_out if cfg.held_out is not None else recorded.get("held_out")
    round_to = DEFAULT_ROUND_TO if cfg.round_to is None else cfg.round_to
    splits = load_splits(dataset, cfg.data_dir, input_size=model.spec.get("input_size"), val_fraction=val_fraction,
                         num_classes=model.spec["num_classes"], val_source=val_source, split_seed=split_seed, held_out=held_out)
    out = Path(out) if out else None
    ckpt = out / FINETUNE if out else None
    if ckpt and ckpt.is_file() and not resume:
        raise ConfigError(f"{out} already holds a pruning run; pass --resume to continue its fine-tuning or choose another --out")
    original = model.cpu().eval()
    report = PruneReport(options={
        "dataset": dataset, "split": "test", "decision_split": "val", "val_fraction": val_fraction, "val_source": val_source,
        **({"split_seed": split_seed} if split_seed is not None else {}), "split_sizes": {"train": len(splits.plain), "val": len(splits.val), "test": len(splits.test)},
        **({"backbone_saw_val": backbone_saw_val} if backbone_saw_val is not None else {}), "seed": cfg.seed, "round_to": round_to,
        **({"latency_batch": cfg.latency_batch} if cfg.metric == "latency" else {}), "target": cfg.target, "metric": cfg.metric,
        "criterion": cfg.criterion, "allocation": cfg.allocation, "truncate": cfg.truncate,
        **({"cut": cfg.cut} if cfg.truncate else {}), **({"drop_blocks": True} if cfg.drop_blocks else {}),
        **({"iterative_steps": cfg.iterative_steps, "remeasure": True} if cfg.remeasure else {}), "afcc": cfg.afcc, **({"refit_epochs": cfg.refit_epochs} if cfg.refit_epochs else {}),
        "finetune_epochs": cfg.finetune.epochs, "finetune_fraction": cfg.finetune.fraction})

    keep_best = cfg.finetune.keep == "best" and cfg.finetune.epochs > 0
    unfinetuned = None  # the pruned weights before fine-tuning, for --finetune-keep best
    if resume and ckpt and ckpt.is_file():
        state = load_checkpoint(ckpt)
        pruned, history = build_from_checkpoint(state), state["pruning"]
        report = PruneReport.from_json({**report.to_json(), **state["config"]["report"]})
        unfinetuned = state.get("before_finetune")
        if keep_best and unfinetuned is None:
            raise ConfigError(f"{ckpt} was written without --finetune-keep best, so the weights before fine-tuning are gone; "
                              "resume without it, or start again in another --out")
    else:
        report.before = {**count(original), **grade(original, splits, cfg.device)}
        report.channels_before = _kept_channels(original)
        needed = reads_measurement(cfg)
        measure_options = dataclasses.replace(cfg.measure, data_dir=cfg.data_dir, val_fraction=val_fraction, val_source=val_source,
                                              split_seed=split_seed, held_out=held_out, seed=cfg.seed, device=cfg.device)
        measurement, report.measurement = measure_if_needed(original, measurement, needed=needed, dataset=dataset,
                                                            options=measure_options, progress=progress)
        base = original
        if cfg.truncate:
            base, measurement, report.truncation = truncate_stage(original, measurement, full_val_accuracy=report.before["val_accuracy"],
                                                                  delta=cfg.delta, splits=splits, device=cfg.device, cut=cfg.cut,
                                                                  target=cfg.target, metric=cfg.metric)
        if cfg.drop_blocks:
            base, measurement, report.blocks = drop_stage(base, measurement, original=original,
                                                          full_val_accuracy=report.before["val_accuracy"], delta=cfg.delta,
                                                          splits=splits, device=cfg.device, metric=cfg.metric)
        remeasure = None
        if cfg.remeasure:
            def remeasure(model, previous):
                return measure(model, dataset, remeasure_options(previous, measure_options), progress=progress)
        pruned, history, report.search, left = prune_stage(
            original, base, measurement, target=cfg.target, metric=cfg.metric, criterion=cfg.criterion, allocation=cfg.allocation,
            group_reduction=cfg.group_reduction, round_to=round_to, iterative_steps=cfg.iterative_steps,
            latency_batch=cfg.latency_batch, splits=splits, seed=cfg.seed, remeasure=remeasure, progress=progress,
            exact=cfg.exact_target)
        if report.truncation and base is not original:
            report.truncation["target_left_for_channels"] = max(0.0, left)
        if cfg.refit_epochs:
            report.refit = refit_classifier(pruned, splits, epochs=cfg.refit_epochs, lr=cfg.measure.head_lr,
                                            batch_size=cfg.measure.head_batch_size, patience=cfg.measure.head_patience,
                                            min_epochs=cfg.measure.head_min_epochs, seed=cfg.seed, device=cfg.device, progress=progress)
        report.pruned_before_finetune = {**count(pruned), **grade(pruned, splits, cfg.device)}
    config = {"model": pruned.spec, "report": report.to_json(), "prune": to_dict(cfg), **(config or {})}
    if keep_best and unfinetuned is None:
        unfinetuned = {k: v.detach().clone() for k, v in pruned.state_dict().items()}
    fine_tune(pruned, splits, cfg.finetune, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, amp=cfg.amp,
              checkpoint=ckpt, checkpoint_extra={"kind": "pruned", "config": config, "pruning": history,
                                                 **({"before_finetune": unfinetuned} if keep_best else {})}, resume=resume,
              teacher=original if cfg.finetune.distill else None, progress=progress)
    pruned = pruned.cpu().eval()
    report.after = {**count(pruned), **grade(pruned, splits, cfg.device)}
    if keep_best:
        report.finetune = keep_better(pruned, unfinetuned, report)
    if cfg.metric == "latency":
        report.latency = latency_report(original, pruned, batch=cfg.latency_batch)
    if cfg.afcc:
        stats = apply_afcc(pruned, splits.plain, threshold=measurement.threshold if measurement else cfg.measure.threshold)
        graded = grade(pruned, splits, cfg.device)
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


def prune_checkpoint(checkpoint: str | Path, cfg: PruneConfig, *, out: str | Path, resume: bool = False,
                     progress=None) -> tuple[nn.Module, dict]:
    """``prune-snr prune``: prune a checkpoint on the data it was trained on (unless ``cfg`` says
    otherwise); writes ``pruned.pt``, ``report.json`` and ``kept_channels.png`` to ``out``."""
    from .plots import save_kept_channels

    payload = load_checkpoint(checkpoint)
    measurement = None
    if cfg.measurement is None:
        cfg, saw_val = plan_validation(cfg, payload, checkpoint)
    else:  # the measurement's split decides, and it says whether the backbone saw it; read once, handed on
        cfg = with_trained_data(cfg, payload, checkpoint)
        measurement = Measurement.load(cfg.measurement)
        saw_val = measurement.meta.get("backbone_saw_val")
    pruned, report = prune(build_from_checkpoint(payload), cfg=cfg, measurement=measurement, out=out, resume=resume,
                           progress=progress, config={"source": str(Path(checkpoint).resolve())}, backbone_saw_val=saw_val)
    save_kept_channels(report, Path(out) / "kept_channels.png")
    return pruned, report


def load_splits(dataset: str, data_dir: str | None, *, input_size: int | None, val_fraction: float, num_classes: int,
                val_source: str = "train", split_seed: int | None = None, held_out: float | None = None) -> Splits:
    """The splits of a pruning run; the validation rows are held out of the training split, or with
    ``val_source="test"`` (imported weights) carved from the test split, which then grades on the rest
    (``split_seed``, ``held_out``: :func:`prune_snr.data.validation_split`'s ``split_seed`` and ``pool``)."""
    train = build_dataset(dataset, "train", data_dir, input_size=input_size)
    if len(train.classes) != num_classes:
        raise ConfigError(f"the model has {num_classes} outputs but {dataset} has {len(train.classes)} labels")
    plain = build_dataset(dataset, "train", data_dir, input_size=input_size, augment=False)
    test = build_dataset(dataset, "test", data_dir, input_size=input_size)
    if val_source == "test":
        test, val = hold_out(test, val_fraction, split_seed=split_seed)
        return Splits(train=train, plain=plain, val=val, test=test, num_classes=num_classes)
    plain, val = hold_out(plain, val_fraction, split_seed=split_seed, pool=held_out)
    train = hold_out(train, val_fraction, split_seed=split_seed, pool=held_out)[0]
    return Splits(train=train, plain=plain, val=val, test=test, num_classes=num_classes)


def keep_better(pruned: nn.Module, unfinetuned: dict, report: PruneReport) -> dict:
    """``--finetune-keep best``: restore the weights before fine-tuning unless it raised validation
    accuracy (a decision on validation; test is only reported). Returns the report's ``finetune`` part."""
    before, after = report.pruned_before_finetune, report.after
    kept = "after" if after["val_accuracy"] >= before["val_accuracy"] else "before"
    part = {"keep": "best", "kept": kept, "val_accuracy_after_finetune": after["val_accuracy"],
            "accuracy_after_finetune": after["accuracy"]}
    if kept == "before":
        pruned.load_state_dict(unfinetuned)
        report.after = dict(before)  # the same model: counts and grades as measured before fine-tuning
    return part


def grade(model: nn.Module, splits: Splits, device: str) -> dict:
    """Test accuracy (the grade) and validation accuracy (what a search decides on)."""
    return {"accuracy": evaluate(model, splits.test, device=device)["accuracy"],
            "val_accuracy": evaluate(model, splits.val, device=device)["accuracy"]}


def measure_if_needed(model: nn.Module, measurement: Measurement | None, *, needed: bool, dataset: str, options: MeasureConfig,
                      progress=None) -> tuple[Measurement | None, dict | None]:
    """The given measurement, or one made here with the recipe's options when a stage needs it
    (no label sweep; EfficientNet's depthwise points too unless ``expanded`` says otherwise)."""
    if measurement is not None or not needed:
        return measurement, None
    expanded = expanded_by_default(model) if options.expanded is None else options.expanded
    made = measure(model, dataset, dataclasses.replace(options, label_sweep=None, expanded=expanded), progress=progress)
    return made, {"made_here": True, "options": made.meta["options"]}


def remeasure_options(previous: Measurement, options: MeasureConfig) -> MeasureConfig:
    """The options of ``previous`` (its points, pool, θ, heads), on prune's data, split and seed: a re-measurement like it."""
    o = previous.meta["options"]
    return dataclasses.replace(options, points=",".join(p["name"] for p in previous.points), pool=o["pool"], threshold=o["threshold"],
                               head_epochs=o["head_epochs"], head_lr=o["head_lr"], head_batch_size=o["head_batch_size"],
                               head_patience=o.get("head_patience", 0), head_min_epochs=o.get("head_min_epochs", options.head_min_epochs),
                               fields_split=o["fields_split"], label_sweep=None, label_seed=None, expanded=None)


def truncate_stage(model: nn.Module, measurement: Measurement, *, full_val_accuracy: float, delta: float, splits: Splits,
                   device: str, cut: str = "measured", target: float | None = None, metric: str = "params",
                   ) -> tuple[nn.Module, Measurement, dict]:
    """Cut ``model`` and report every candidate: with ``cut="measured"`` after the earliest cuttable point
    within ``delta`` of the full model on validation; with ``cut="budget"`` after the deepest cuttable
    point whose cut alone removes ``target`` of ``metric`` (no accuracy read: the depth baseline);
    with ``cut="deeper"`` the deeper of the two (:func:`pick_cut`). The cut point's measured head is
    the classifier."""
    rows = candidates(measurement, full_val_accuracy, delta)
    sized = size_metric(metric)
    cuts = {}
    for row in rows:  # every candidate with the size it would leave
        row["cuttable"] = cuttable(model, row["point"])
        if row["cuttable"]:
            cuts[row["point"]] = truncate(model, measurement, row["point"])
            row.update(count(cuts[row["point"]]))
            row["kept"] = prunable_base(cuts[row["point"]], sized) / prunable_base(model, sized)
    report = {"delta": delta, "cut": cut, "kept_of": sized, "candidates": rows}
    cut = pick_cut(rows, model, cut, target=target, metric=metric)
    report["cut_after"] = cut
    if not cut:
        return model, measurement, report
    base = cuts[cut]
    names = [p["name"] for p in measurement.points]
    measurement = measurement.restricted(set(names[: names.index(cut) + 1]).__contains__)
    grades = grade(base, splits, device)
    report.update(accuracy_after_cut=grades["accuracy"], val_accuracy_after_cut=grades["val_accuracy"])
    return base, measurement, report


def drop_stage(model: nn.Module, measurement: Measurement | None, *, original: nn.Module, full_val_accuracy: float, delta: float,
               splits: Splits, device: str, metric: str) -> tuple[nn.Module, Measurement | None, dict]:
    """Drop residual blocks of ``model`` while it stays within ``delta`` of the full model on validation.

    Every droppable block is graded alone (validation decides, test is shown); then, the least
    harmful first, each joins the dropped set if the model without the whole set stays within
    ``delta``. Every candidate is reported with its accuracies, params, MACs and what it keeps
    of ``original``'s prunable ``metric``.
    """
    names = droppable_blocks(model)
    if not names:
        raise ConfigError(f"--drop-blocks: {model.spec['name']} has no residual block with an identity shortcut to drop; "
                          "leave --drop-blocks off for this model")
    rows, sized = [], size_metric(metric)
    for name in names:
        alone = drop_blocks(copy.deepcopy(model), [name])
        rows.append({"block": name, **grade(alone, splits, device), **count(alone),
                     "kept": prunable_base(alone, sized) / prunable_base(original, sized)})
    dropped, result = [], None
    for row in sorted(rows, key=lambda r: -r["val_accuracy"]):
        if full_val_accuracy - row["val_accuracy"] >= delta:
            break
        trial = drop_blocks(copy.deepcopy(model), [*dropped, row["block"]])
        grades = grade(trial, splits, device)
        if full_val_accuracy - grades["val_accuracy"] < delta:
            dropped.append(row["block"])
            result = (trial, grades)
    report = {"delta": delta, "kept_of": sized, "candidates": rows, "dropped": dropped}
    if not dropped:
        return model, measurement, report
    base, grades = result
    report.update(accuracy_after_drop=grades["accuracy"], val_accuracy_after_drop=grades["val_accuracy"], **count(base))
    if measurement is not None:
        measurement = measurement.restricted(lambda point: not inside(point, dropped))
    return base, measurement, report


def size_metric(metric: str) -> str:
    """What a candidate's ``kept`` counts: the budget's metric, or MACs for a latency budget (timing every candidate costs too much)."""
    return "macs" if metric == "latency" else metric


def pick_cut(rows: list[dict], model: nn.Module, rule: str, *, target: float | None, metric: str) -> str | None:
    """The cut point of ``rule`` (a row of :data:`prune_snr.choices.CUTS`), or None for no cut.

    ``deeper`` takes the measured cut unless the budget's own cut lies deeper: cutting shallower
    than the budget needs drops layers the budget could have kept (under a latency target, whose
    cuts are not counted, it is the measured cut).
    """
    if rule == "budget":
        return budget_cut(rows, target, metric)
    measured = choose_cut(rows, model)
    if rule == "measured" or metric == "latency" or measured is None:  # None: no point is within delta, so no cut
        return measured
    budget = budget_cut(rows, target, metric)
    order = [r["point"] for r in rows]
    return measured if budget is None else max(measured, budget, key=order.index)


def budget_cut(rows: list[dict], target: float, metric: str) -> str | None:
    """The deepest cuttable point (not the last) whose cut alone meets ``target`` of ``metric``."""
    meeting = [r["point"] for r in rows[:-1] if r["cuttable"] and 1 - (1 - target) / r["kept"] <= TOLERANCE]
    return meeting[-1] if meeting else None


def prune_stage(original: nn.Module, base: nn.Module, measurement: Measurement | None, *, target: float, metric: str, criterion: str,
                allocation: str, group_reduction: str, round_to: int | None, iterative_steps: int, latency_batch: int,
                splits: Splits, seed: int, remeasure=None, progress=None, exact: bool = False) -> tuple[nn.Module, list, dict, float]:
    """Prune ``base`` so that ``target`` counts from ``original`` (what a cut removed is not removed twice).

    With ``remeasure`` (a function ``(model, measurement) -> Measurement``) the ``iterative_steps``
    each remove an equal share; between steps the pruned model is measured anew and the next step's
    allocation and scores read that measurement. Otherwise torch-pruning's own iterative steps run
    on the one measurement.

    Returns ``(pruned, pruning history, search report, what the cut left for channels)``.
    """
    gradient_batches = None
    if criterion in NEEDS_GRADIENTS:
        loader = make_loader(splits.plain, batch_size=64, shuffle=True, seed=seed)
        gradient_batches = [batch for batch, _ in zip(loader, range(4))]
    reduction = {"group_reduction": group_reduction} if criterion in MEASURED_CRITERIA else {}

    def to_target(model: nn.Module, m: Measurement | None, step_target: float, steps: int, meter=None):
        alloc = Allocation(allocation, [p["name"] for p in m.points] if m else None, m.val_accuracies() if m else None,
                           splits.num_classes, snrs=[p["snr"] for p in m.points] if m else None)
        return prune_to_target(
            model, lambda pm: build_importance(criterion, model=pm, measurement=m, seed=seed, **reduction),
            target=step_target, metric=metric, allocation=alloc, round_to=None if round_to == 1 else round_to,
            iterative_steps=steps, gradient_batches=gradient_batches, latency=meter, progress=progress, exact=exact)

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
                              "note": "truncation alone (or with dropped blocks) meets the target; no channel pruned"}, base_target
        if remeasure is None:
            outcome = to_target(base, measurement, base_target, iterative_steps, meter)
            steps = None
        else:
            outcome, steps = remeasured_steps(base, measurement, to_target, remeasure, base_target=base_target, metric=metric,
                                              steps=iterative_steps)
    finally:
        if meter:
            meter.close()
    search = {"ratio": outcome.ratio, "removed": 1 - (1 - outcome.removed) * cut_kept, "trials": outcome.trials,
              "fallback_groups": outcome.fallback_groups, **({"remeasured_steps": steps} if steps else {}),
              **({"unreached": outcome.unreached} if outcome.unreached else {})}
    return outcome.model, outcome.history, search, base_target


def remeasured_steps(base: nn.Module, measurement: Measurement, to_target, remeasure, *, base_target: float, metric: str,
                     steps: int) -> tuple[PruneOutcome, list[dict]]:
    """``steps`` prunings of ``base``, each to ``base_target * step / steps`` of its prunable ``metric``, re-measuring between them."""
    total = prunable_base(base, metric)
    model, history, fallback, trials, rows = base, [], set(), 0, []
    for step in range(1, steps + 1):
        if step > 1:
            t0 = time.perf_counter()
            measurement = remeasure(model, measurement)
            rows[-1]["remeasure_s"] = time.perf_counter() - t0
        goal = 1 - base_target * step / steps  # kept fraction of base after this step
        outcome = to_target(model, measurement, 1 - goal * total / prunable_base(model, metric), 1)
        model, trials = outcome.model, trials + outcome.trials
        history += outcome.history
        fallback.update(outcome.fallback_groups)
        rows.append({"step": step, "ratio": outcome.ratio, "removed": 1 - prunable_base(model, metric) / total,
                     "filters": [p["n_filters"] for p in measurement.points], "val_accuracies": measurement.val_accuracies()})
    removed = 1 - prunable_base(model, metric) / total
    return PruneOutcome(model=model, ratio=outcome.ratio, removed=removed, history=history, fallback_groups=sorted(fallback),
                        trials=trials), rows


def fine_tune(model: nn.Module, splits: Splits, cfg: FineTuneConfig, *, batch_size: int, seed: int, device: str, amp: bool,
              checkpoint: Path | None, checkpoint_extra: dict, resume: bool, teacher: nn.Module | None, progress=None) -> None:
    """SGD + cosine on the training split less its validation part (a seeded ``cfg.fraction`` of it for cheap search trials)."""
    if cfg.epochs <= 0:
        return
    train = splits.train
    if cfg.fraction < 1:
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        train = Subset(train, order[: max(1, round(cfg.fraction * len(train)))].tolist())
    opts = SimpleNamespace(epochs=cfg.epochs, batch_size=batch_size, lr=cfg.lr, momentum=0.9, weight_decay=5e-4, schedule="cosine",
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
