"""``prune``: measurement-driven structural pruning, truncation, AFCC and fine-tuning."""
from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn
from torch.utils.data import Subset

from ..atomic import atomic_save_json

from ..checkpoint import build_from_checkpoint, load_checkpoint, save_checkpoint
from ..data import DEFAULT_VAL_FRACTION, build_dataset, hold_out
from ..errors import ConfigError
from ..measure import Measurement, measure
from ..models.points import _is_timm_efficientnet
from ..runtime import make_loader
from ..train.loop import evaluate, fit
from .afcc import apply_afcc
from .importance import CRITERIA, NEEDS_GRADIENTS, NEEDS_MEASUREMENT, build_importance
from ..export import LatencyMeter
from .target import DEFAULT_ROUND_TO, TOLERANCE, Allocation, count, prunable_base, prune_to_target
from .truncate import candidates, choose_cut, cuttable, truncate

PRUNED = "pruned.pt"
FINETUNE = "finetune.pt"
REPORT = "report.json"


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
    round_to: int | None = DEFAULT_ROUND_TO,
    latency_batch: int = 1,
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
        round_to: keep channel counts multiples of this (default 8, the alignment ONNX Runtime's
            CPU convolutions run fast on; 1 or None = no rounding).
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
    if criterion not in CRITERIA:
        raise ConfigError(f"--criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    if measurement is not None:
        measurement.val_accuracies()  # a measurement without validation figures cannot drive decisions
    if val_fraction is None:
        recorded = measurement.meta["options"].get("val_fraction") if measurement is not None else None
        val_fraction = DEFAULT_VAL_FRACTION if recorded is None else recorded
    if not 0 < val_fraction < 1:
        raise ConfigError(f"--val-fraction {val_fraction}: prune decides on a validation split; use a fraction in (0, 1)")
    size = model.spec.get("input_size")
    train_set = build_dataset(dataset, "train", data_dir, input_size=size)
    test_set = build_dataset(dataset, "test", data_dir, input_size=size)
    plain_train = build_dataset(dataset, "train", data_dir, input_size=size, augment=False)
    if len(train_set.classes) != model.spec["num_classes"]:
        raise ConfigError(f"the model has {model.spec['num_classes']} outputs but {dataset} has {len(train_set.classes)} labels")
    train_set, _ = hold_out(train_set, val_fraction)
    plain_train, val_set = hold_out(plain_train, val_fraction)

    def grade(m: nn.Module) -> dict:
        """Test accuracy (the grade) and validation accuracy (what a search decides on)."""
        return {"accuracy": evaluate(m, test_set, device=device)["accuracy"],
                "val_accuracy": evaluate(m, val_set, device=device)["accuracy"]}
    if not 0 < finetune_fraction <= 1:
        raise ConfigError(f"finetune fraction {finetune_fraction}: use a fraction in (0, 1]")
    finetune_set = train_set
    if finetune_fraction < 1:
        order = torch.randperm(len(train_set), generator=torch.Generator().manual_seed(seed))
        finetune_set = Subset(train_set, order[: max(1, round(finetune_fraction * len(train_set)))].tolist())
    opts = SimpleNamespace(epochs=finetune_epochs, batch_size=batch_size, lr=finetune_lr, momentum=0.9, weight_decay=5e-4,
                           schedule="cosine", label_smoothing=0.0, seed=seed, device=device, amp=amp, channels_last=True, workers=0)
    out = Path(out) if out else None
    ckpt = out / FINETUNE if out else None
    original = model.cpu().eval()
    report: dict = {"dataset": dataset, "split": "test", "decision_split": "val", "val_fraction": val_fraction, "seed": seed,
                    "round_to": round_to, **({"latency_batch": latency_batch} if metric == "latency" else {}), "target": target, "metric": metric, "criterion": criterion,
                    "allocation": allocation, "truncate": truncate_layers, "afcc": afcc, "finetune_epochs": finetune_epochs,
                    "finetune_fraction": finetune_fraction}

    if ckpt and ckpt.is_file() and not resume:
        raise ConfigError(f"{out} already holds a pruning run; pass --resume to continue its fine-tuning or choose another --out")
    if resume and ckpt and ckpt.is_file():
        state = load_checkpoint(ckpt)
        pruned = build_from_checkpoint(state)
        report.update(state["config"]["report"])
        history = state["pruning"]
    else:
        before = {**count(original), **grade(original)}
        report["before"] = before
        report["channels_before"] = _kept_channels(original)
        needs_measurement = criterion in NEEDS_MEASUREMENT or allocation == "measured" or truncate_layers
        if measurement is None and needs_measurement:
            options = {"expanded": _is_timm_efficientnet(original), **(measure_options or {})}
            measurement = measure(original, dataset, data_dir=data_dir, val_fraction=val_fraction, seed=seed, device=device,
                                  progress=progress, **options)
            report["measurement"] = {"made_here": True, "options": measurement.meta["options"]}
        base = original
        if truncate_layers:
            rows = candidates(measurement, before["val_accuracy"], delta)
            for row in rows:  # every candidate with the size it would leave
                row["cuttable"] = cuttable(original, row["point"])
                if row["cuttable"]:
                    row.update(count(truncate(original, measurement, row["point"])))
            cut = choose_cut(rows, original)
            report["truncation"] = {"delta": delta, "candidates": rows, "cut_after": cut}
            if cut:
                base = truncate(original, measurement, cut)
                names = [p["name"] for p in measurement.points]
                kept = set(names[: names.index(cut) + 1])
                measurement = Measurement(meta=measurement.meta, points=[p for p in measurement.points if p["name"] in kept],
                                          fields={k: v for k, v in measurement.fields.items() if k in kept}, heads=measurement.heads)
                cut_grades = grade(base)
                report["truncation"]["accuracy_after_cut"] = cut_grades["accuracy"]
                report["truncation"]["val_accuracy_after_cut"] = cut_grades["val_accuracy"]
        alloc = Allocation(allocation, [p["name"] for p in measurement.points] if measurement else None,
                           measurement.val_accuracies() if measurement else None, len(train_set.classes))
        gradient_batches = None
        if criterion in NEEDS_GRADIENTS:
            loader = make_loader(plain_train, batch_size=64, shuffle=True, seed=seed)
            gradient_batches = [batch for batch, _ in zip(loader, range(4))]
        # --target counts from the original model: what truncation removed is not removed twice.
        meter = LatencyMeter(original, batch=latency_batch) if metric == "latency" else None
        cut_kept = (meter.fraction(base) if meter and base is not original else 1.0) if meter else \
            prunable_base(base, metric) / prunable_base(original, metric)
        base_target = 1 - (1 - target) / cut_kept
        if base is not original:
            report["truncation"]["target_left_for_channels"] = max(0.0, base_target)
        if base_target <= TOLERANCE:
            pruned, history = base, []
            report["search"] = {"ratio": 0.0, "removed": 1 - cut_kept, "trials": 0,
                                "fallback_groups": [], "note": "truncation alone meets the target; no channel pruned"}
        else:
            outcome = prune_to_target(
                base, lambda m: build_importance(criterion, model=m, measurement=measurement, seed=seed,
                                                 **({"group_reduction": group_reduction} if criterion in NEEDS_MEASUREMENT else {})),
                target=base_target, metric=metric, allocation=alloc, round_to=None if round_to == 1 else round_to,
                iterative_steps=iterative_steps, gradient_batches=gradient_batches,
                latency=LatencyMeter(base, batch=latency_batch) if meter and base is not original else meter, progress=progress)
            pruned, history = outcome.model, outcome.history
            removed = 1 - (1 - outcome.removed) * cut_kept
            report["search"] = {"ratio": outcome.ratio, "removed": removed, "trials": outcome.trials,
                                "fallback_groups": outcome.fallback_groups}
        report["pruned_before_finetune"] = {**count(pruned), **grade(pruned)}
    config = {"model": pruned.spec, "report": report, **(config or {})}
    if finetune_epochs > 0:
        fit(pruned, finetune_set, test_set, opts, checkpoint_path=ckpt,
            checkpoint_extra={"kind": "pruned", "config": config, "pruning": history}, resume=resume,
            teacher=original if distill else None, progress=progress)
    pruned = pruned.cpu().eval()
    after = {**count(pruned), **grade(pruned)}
    if metric == "latency":
        meter = LatencyMeter(original, batch=latency_batch)
        report["latency"] = {}
        for b in sorted({1, 32, latency_batch}):
            t = meter.seconds(pruned, batch=b)
            report["latency"][f"batch_{b}"] = {"pruned_s": t["model"], "original_s": t["reference"],
                                               "fraction": t["model"] / t["reference"]}
        meter.close()
    if afcc:
        stats = apply_afcc(pruned, plain_train, threshold=measurement.threshold if measurement else 0.3)
        graded = grade(pruned)
        report["afcc"] = {**stats, "accuracy_before": after["accuracy"], "accuracy_after": graded["accuracy"]}
        after.update(graded)
    report["after"] = after
    report["channels_after"] = _kept_channels(pruned)
    report["seconds"] = time.perf_counter() - t0
    if out:
        save_checkpoint(out / PRUNED, {"kind": "pruned", "model": pruned.state_dict(), "pruning": history, "config": config})
        atomic_save_json(out / REPORT, report)
    return pruned, report
