"""``measure``: phases 2 and 3 of METHOD.md for every point of a model, plus the label sweep."""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import MeasureConfig, fields_to_keep, resolve, spelling
from ..data import DEFAULT_VAL_FRACTION, choose_labels
from ..errors import DataError
from ..models import default_points, handed_back, name_classifier, resolve_points
from ..runtime import broadcast_object, resolve_device, seed_everything, tune_convolutions, world
from .features import weights_digest
from .inputs import check_label_count, measured_data, plan_train_rows
from .problem import FeatureCache, HeadProblem
from .result import Measurement


def _default_cache() -> Path:
    return Path(os.environ.get("PRUNE_SNR_CACHE", Path.home() / ".cache" / "prune-snr")) / "features"


def measure(
    model: nn.Module,
    dataset: str | tuple | None = None,
    cfg: MeasureConfig | None = None,
    *,
    train=None,
    val=None,
    test=None,
    classifier: str | None = None,
    cache_dir: str | Path | None = None,
    progress=None,
    **options,
) -> Measurement:
    """Measure layer-wise accuracy and per-filter clusters, noise and SNR (METHOD.md).

    One backbone pass per split caches the ``p x p``-pooled features of every point; linear
    heads for all points train on the cache (the training split less its validation part);
    each layer's field matrices are one einsum of class-mean features with the head weights.

    Every point records ``val_accuracy`` (its head on the validation split: what decisions read)
    beside ``test_accuracy`` (the paper's figure; grading only), and the field figures (SNR,
    noise, clusters) on ``fields_split`` (validation by default) with the test split's under
    ``test``.

    Args:
        model: a trained classifier: any ``nn.Module`` (e.g. ``prune_snr.load("runs/x/model.pt")``, or your own).
        dataset: a dataset name for :func:`prune_snr.build_dataset`, or ``(train_set, test_set)``
            (default: ``cfg.dataset``).
        train, val, test: your own data instead: a ``Dataset`` or ``DataLoader`` of ``(image, label)`` each (``val``
            optional: without it the validation split is carved from ``train``, or from ``test`` with
            ``val_source="test"`` for a model whose training data is unknown). The label count is the classifier's.
        classifier: the name of the layer that gives the logits, where it is not the last ``Linear``.
        cfg: the options (:class:`prune_snr.config.MeasureConfig`); keyword ``options`` (its
            field names) override it, as a convenience. They are:
        points: ``"all"`` (the model's measurement points), ``"a,b"`` or a list of module names.
        pool: ``p``; heads see ``C * p * p`` features per point.
        threshold: θ for clusters/noise.
        clusters: ``blocks`` (default: the paper authors' complete blocks) or ``components`` (connected components).
        head_epochs, head_lr, head_batch_size: Adam training of the heads (``head_epochs`` is the cap).
        head_optimizer: ``adam`` (default) or ``sgd`` (the paper authors': momentum 0.975, lr decayed x0.975 per
            epoch, L2 1e-3).
        preset: ``"paper"`` takes the authors' choices where they differ from the defaults (SGD heads at lr 0.01,
            no early stopping, fields from the test split); options given beside it win. Figures only: ``prune``
            refuses test-split fields for its decisions.
        head_patience, head_min_epochs: early stopping of each head on its validation loss (validation rows
            only; without a validation split, or with ``head_patience=0``, every head trains ``head_epochs``).
            Each point records ``head_epochs_used`` and ``head_best_epoch`` (the epoch whose weights it keeps).
        label_sweep: label counts K to re-measure on the first K labels (or K labels drawn
            with ``label_seed``), reusing the cached features.
        fields_split: split whose class means give the field matrices: ``val`` (default; what
            pruning reads), ``test`` (the paper's figure) or ``train``.
        val_fraction: seeded, label-stratified fraction of the training split held out of the
            heads for decisions (:func:`prune_snr.data.validation_split`).
        cache_dtype: ``float32`` or ``float16`` features on disk.
        head_dtype: ``float32`` or ``bfloat16``: precision of the heads' training rows and matmuls (weights, Adam
            and validation/test scores stay float32; bfloat16 trains wide heads 2.7-3.5x faster on an AMX CPU).
        train_per_class: read and train the heads on at most N training images per label (seeded, label-stratified;
            the validation rows are carved first and stay the same). Before the feature pass the cache's size is
            projected and a cache larger than the free disk is refused.
        memory_budget: GiB the process may hold while the heads train (default: a quarter of the
            RAM); their chunks of rows get what it does not already hold, and so do phase 3's
            chunks of filters (no layer's ``F x L x L`` matrices are ever held at once).
        save_fields: field matrices kept per point: those of the N highest-SNR filters (default 16;
            ``filters.png`` draws 4), or ``"all"``; every filter's statistics are kept.
        expanded: EfficientNet: also measure each MBConv's depthwise output.
        cache_dir: where features are cached (default ``~/.cache/prune-snr/features``).

    Returns:
        A :class:`Measurement`; ``.save(DIR)`` writes ``measurement.json``, ``fields.npz``, ``heads.pt``.

    Raises:
        DataError / ModelError: unknown dataset, the model's class count does not match it, or the feature cache
            would not fit the free disk.

    Example:
        >>> from prune_snr import build_model
        >>> m = measure(  # doctest: +SKIP
        ...     build_model("vgg16", num_classes=10, width_mult=0.125), "synthetic", head_epochs=2
        ... )
        >>> [p["val_accuracy"] for p in m.points]  # doctest: +SKIP
    """
    with handed_back(model):  # the feature pass moves the model and sets eval: the caller's is handed back as it was
        return _measure(model, dataset, cfg, train, val, test, classifier, cache_dir, progress, options)


def _measure(model, dataset, cfg, train, val, test, classifier, cache_dir, progress, options) -> Measurement:
    t_start = time.perf_counter()
    name_classifier(model, classifier)
    cfg = resolve(MeasureConfig, overrides=options, base=cfg)
    dataset = cfg.dataset if dataset is None and train is None else dataset
    device_t = resolve_device(cfg.device)
    tune_convolutions(device_t)
    train_set, test_set, dataset_id, given_val = measured_data(
        model, dataset, cfg.data_dir, train=train, val=val, test=test
    )
    num_classes = check_label_count(model, dataset, train_set)
    names = resolve_points(model, cfg.points, expanded=bool(cfg.expanded))
    seed_everything(cfg.seed)
    val_fraction = DEFAULT_VAL_FRACTION if cfg.val_fraction is None else cfg.val_fraction
    read, rest_rows, train_val_rows = _train_rows(cfg, train_set.targets, val_fraction, given_val)
    cache, feats, timings = _feature_pass(
        model, cfg, names, dataset_id, train_set, test_set, read, device_t, cache_dir, progress
    )
    if world()[0] > 0:  # under torchrun rank 0 alone trains the heads and computes the fields: one GPU's work, not N
        return _from_rank_zero(None)
    problem = HeadProblem.of(
        feats,
        cfg,
        names,
        num_classes,
        rest_rows=rest_rows,
        train_val_rows=train_val_rows,
        val_fraction=val_fraction,
        device=device_t,
        progress=progress,
    )
    heads, records, fields, sweep = _solve(problem, cfg, timings)
    timings["total_s"] = time.perf_counter() - t_start
    timings["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    meta = {
        **_meta(model, dataset, dataset_id, cfg, train_set, problem, val_fraction, names, device_t),
        "timings": timings,
        **cache.meta(model),
    }
    return _from_rank_zero(_measurement(meta, heads, records, fields, sweep))


def _train_rows(cfg: MeasureConfig, targets, val_fraction: float, given_val: np.ndarray | None) -> tuple:
    """``(read, rest, val)`` of :func:`plan_train_rows` under ``cfg``'s split options."""
    return plan_train_rows(
        targets,
        val_fraction=val_fraction,
        val_source=cfg.val_source or "train",
        per_class=cfg.train_per_class,
        seed=cfg.seed,
        split_seed=cfg.split_seed,
        pool=cfg.held_out,
        given_val=given_val,
    )


def _feature_pass(
    model: nn.Module,
    cfg: MeasureConfig,
    names: list[str],
    dataset_id: str,
    train_set,
    test_set,
    read: np.ndarray | None,
    device: torch.device,
    cache_dir: str | Path | None,
    progress,
) -> tuple[FeatureCache, dict, dict]:
    """``(the feature cache, its features per split, the seconds of each split's pass)``: the pooled features of the
    training rows ``read`` (all where None) and of the test split, read from the cache or computed by one pass."""
    cache = FeatureCache.plan(
        model,
        cfg,
        names,
        dataset_id,
        train_set,
        test_set,
        read=read,
        device=device,
        root=Path(cache_dir) if cache_dir else _default_cache(),
    )
    feats, timings = cache.extract(model, cfg, names, device=device, progress=progress)
    return cache, feats, timings


def _solve(problem: HeadProblem, cfg: MeasureConfig, timings: dict) -> tuple[dict, list[dict], dict, list[dict]]:
    """``(heads, point records, fields, label sweep)``: the heads and fields of every label, then of each K of
    ``label_sweep``; the seconds they took go into ``timings``."""
    t0 = time.perf_counter()
    heads, records, fields = problem.solve(None, "heads")
    timings["heads_and_fields_s"] = time.perf_counter() - t0
    timings["heads_s"] = problem.head_seconds["heads"]
    for r in records:
        r.update(_epochs_used(heads[r["name"]]))
    return heads, records, fields, _label_sweep(problem, cfg, heads, records, timings)


def _measurement(meta: dict, heads: dict, records: list[dict], fields: dict, sweep: list[dict]) -> Measurement:
    """The :class:`Measurement` of the solved heads and fields (``fields``: ``{point: (statistics, filters,
    matrices)}``)."""
    return Measurement(
        meta=meta,
        points=records,
        fields={n: f[2] for n, f in fields.items()},
        label_sweep=sweep,
        heads={n: {"weight": h.weight, "bias": h.bias} for n, h in heads.items()},
        field_filters={n: f[1] for n, f in fields.items()},
        filter_stats={n: f[0] for n, f in fields.items()},
    )


def _label_sweep(
    problem: HeadProblem, cfg: MeasureConfig, heads: dict, records: list[dict], timings: dict
) -> list[dict]:
    """The measurement again on the first K labels (or K drawn with ``label_seed``) for each K of ``label_sweep``."""
    sweep = []
    for K in cfg.label_sweep or []:
        if K > problem.num_classes:
            raise DataError(f"--labels {K}: the dataset has only {problem.num_classes} labels")
        labels = choose_labels(problem.num_classes, K, cfg.label_seed)
        t0 = time.perf_counter()
        if labels == list(
            range(problem.num_classes)
        ):  # every label, in order: the very problem the measurement just solved
            sweep_heads, recs = heads, records
            problem.head_seconds[f"heads (K={K})"] = 0.0
        else:
            sweep_heads, recs, _ = problem.solve(labels, f"heads (K={K})")
        timings[f"sweep_{K}_s"] = time.perf_counter() - t0
        timings[f"sweep_{K}_heads_s"] = problem.head_seconds[f"heads (K={K})"]
        sweep.append(
            {
                "labels": K,
                "label_ids": labels,
                "points": [
                    {
                        "name": r["name"],
                        "val_accuracy": r.get("val_accuracy"),
                        "test_accuracy": r["test_accuracy"],
                        "error_rate": 1 - r["test_accuracy"],
                        "snr": r["snr"],
                        "cluster_size": r["cluster_size"],
                        "clusters_per_filter": r["clusters_per_filter"],
                        "noise_per_filter": r["noise_per_filter"],
                        "clustered_labels_per_filter": r["clustered_labels_per_filter"],
                        **_epochs_used(sweep_heads[r["name"]]),
                    }
                    for r in recs
                ],
            }
        )
    return sweep


def _meta(
    model: nn.Module,
    dataset,
    dataset_id: str,
    cfg: MeasureConfig,
    train_set,
    problem: HeadProblem,
    val_fraction: float,
    names: list[str],
    device: torch.device,
) -> dict:
    """What ``measurement.json`` records of the model, the data, the splits and the options."""
    spec = getattr(model, "spec", None) or {}
    trunk = set(default_points(model, expanded=True)) if cfg.points == "groups" else set(names)
    keep_fields = fields_to_keep(cfg.save_fields)
    return {
        "model": spec.get("name", type(model).__name__),
        "weights": weights_digest(model),
        "dataset": dataset if isinstance(dataset, str) else dataset_id,
        "num_classes": problem.num_classes,
        "classes": [str(c) for c in train_set.classes],
        "split_sizes": {
            "train": int(len(problem.rest_rows)),
            "val": int(len(problem.val_rows)),
            "test": int(len(problem.test_rows)),
        },
        "val_source": cfg.val_source or "train",
        "seed": cfg.seed,
        "device": str(device),
        # every option a measurement records (``option(recorded=True)``), then what it resolved them to
        "options": {
            **{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg) if f.metadata.get("recorded")},
            "points": names,
            "side_points": [n for n in names if n not in trunk],
            "head_early_stopping": bool(cfg.head_patience and len(problem.val_rows)),
            "val_fraction": val_fraction,
            "val_source": cfg.val_source or "train",
            "memory_budget_gib": round(problem.process_budget / 2**30, 3),
            "head_bias_in_fields": False,
            "save_fields": "all" if keep_fields is None else keep_fields,
        },
    }


def _from_rank_zero(measurement: Measurement | None) -> Measurement:
    """Rank 0's measurement on every rank (``measurement`` itself outside torchrun). The other ranks get it without
    the kept field matrices: every decision reads the per-filter statistics, which it carries."""
    if world()[1] == 1:
        return measurement
    shared = broadcast_object(
        None if measurement is None else dataclasses.replace(measurement, fields={}, field_filters={})
    )
    return measurement if measurement is not None else shared


def measure_checkpoint(
    checkpoint: str | Path, cfg: MeasureConfig, *, out: str | Path, plots: bool = True, progress=None
) -> Measurement:
    """``prune-snr measure``: measure a checkpoint on the data it was trained on (unless ``cfg`` says
    otherwise) and write ``measurement.json``, ``fields.npz``, ``heads.pt``, ``config.yaml`` and the PNGs to ``out``.

    The validation split defaults to the very images the training held out.
    """
    from ..atomic import atomic_save_text
    from ..checkpoint import build_from_checkpoint, load_checkpoint
    from ..config import dump_yaml
    from .plots import save_plots

    payload = load_checkpoint(checkpoint)
    cfg, saw_val = plan_validation(cfg, payload, checkpoint)
    result = measure(build_from_checkpoint(payload), cfg=cfg, progress=progress)
    result.meta["backbone_saw_val"] = saw_val
    out = Path(out)
    result.save(out)
    if plots:
        save_plots(result, out)
    atomic_save_text(out / "config.yaml", dump_yaml(cfg))
    return result


def plan_validation(cfg, payload: dict, checkpoint) -> tuple:
    """``cfg`` completed with the checkpoint's data and validation split (settled here, once, for both
    ``measure`` and ``prune``), and whether the backbone may have trained on that split (``backbone_saw_val``;
    a warning when it may).

    The split defaults to what the checkpoint's training held out (its ``val_fraction``, from the
    training split), or to part of the test split for imported weights, whose training data is unknown.
    """
    from ..checkpoint import default_val_source, imported, with_trained_data

    cfg = with_trained_data(cfg, payload, checkpoint)
    trained_val = (payload.get("config", {}).get("train") or {}).get("val_fraction")
    source = cfg.val_source or default_val_source(payload)
    used = cfg.val_fraction if cfg.val_fraction is not None else trained_val or DEFAULT_VAL_FRACTION
    cfg = dataclasses.replace(
        cfg, val_source=source, val_fraction=used, held_out=trained_val or None
    )  # config.yaml: the split used
    if cfg.split_seed is not None and source == "train" and trained_val and used >= trained_val:
        spelling.warn(
            f"{checkpoint}: --split-seed draws the validation split from the {trained_val:.0%} its training held "
            f"out, all of which --val-fraction {used:g} takes; pass a smaller --val-fraction (e.g. "
            f"{trained_val / 2:g}) to vary it",
            stacklevel=2,
        )
    saw = source == "train" and (imported(payload) or not trained_val or used > trained_val)
    if saw:
        why = (
            "its weights were imported (training data unknown)"
            if imported(payload)
            else f"its training held out {trained_val or 0:.0%} of the training split, less than the "
            f"{used:.0%} validated on"
        )
        spelling.warn(
            f"{checkpoint}: the validation split comes from the training split but {why}, so the backbone may have "
            "trained on it; use --val-source test for decisions on unseen images",
            stacklevel=2,
        )
    return cfg, saw


def _epochs_used(head) -> dict:
    """What a point record says of its head's training: the epochs it trained and the epoch whose weights it kept."""
    return {"head_epochs_used": head.epochs_used, "head_best_epoch": head.best_epoch}
