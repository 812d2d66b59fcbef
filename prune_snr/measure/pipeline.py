"""``measure``: phases 2 and 3 of METHOD.md for every point of a model, plus the label sweep."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import resource
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import ConcatDataset

from ..config import MeasureConfig, fields_to_keep, resolve
from ..data import DEFAULT_VAL_FRACTION, IndexSubset, build_dataset, choose_labels, per_class_subset, validation_split
from ..data.user import UserDataset, fingerprint, user_data
from ..errors import DataError, ModelError
from ..models import default_points, name_classifier, num_outputs, remember_input_shape, resolve_points
from ..models.points import unused_convs
from ..runtime import broadcast_object, resolve_device, seed_everything, tune_convolutions, world
from .features import cache_key, check_disk, extract, folder_bytes, join_headroom, point_widths, projected_bytes
from .fields import field_matrices, layer_stats, top_filters
from .heads import Rows, chunk_budget, class_means, default_memory_budget, train_heads
from .result import Measurement, point_record, test_figures


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
            the validation rows are carved first and stay the same). Before the feature pass the cache's size is projected
            and a cache larger than the free disk is refused.
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
        >>> m = measure(build_model("vgg16", num_classes=10, width_mult=0.125), "synthetic", head_epochs=2)  # doctest: +SKIP
        >>> [p["val_accuracy"] for p in m.points]  # doctest: +SKIP
    """
    t_start = time.perf_counter()
    name_classifier(model, classifier)
    if isinstance(options.get("points"), (list, tuple)):
        options["points"] = ",".join(options["points"])
    cfg = resolve(MeasureConfig, overrides=options, base=cfg)
    dataset = cfg.dataset if dataset is None and train is None else dataset
    fields_split, threshold, seed = cfg.fields_split, cfg.threshold, cfg.seed
    val_fraction = DEFAULT_VAL_FRACTION if cfg.val_fraction is None else cfg.val_fraction
    device_t = resolve_device(cfg.device)
    tune_convolutions(device_t)
    train_set, test_set, dataset_id, given_val = measured_data(model, dataset, cfg.data_dir, train=train, val=val, test=test)
    num_classes = len(train_set.classes)
    out_features = _num_outputs(model)
    if out_features is not None and out_features != num_classes:
        raise ModelError(f"the model has {out_features} outputs but {dataset if isinstance(dataset, str) else 'the dataset'} "
                         f"has {num_classes} labels; measure it on the dataset it was trained on")
    names = resolve_points(model, cfg.points, expanded=bool(cfg.expanded))
    trunk = set(default_points(model, expanded=True)) if cfg.points == "groups" else set(names)
    side = [n for n in names if n not in trunk]
    seed_everything(seed)
    cache_root = Path(cache_dir) if cache_dir else _default_cache()
    key = cache_key(model, dataset_id, names, cfg.pool, cfg.cache_dtype)
    val_source = cfg.val_source or "train"
    read, rest_rows, train_val_rows = plan_train_rows(train_set.targets, val_fraction=val_fraction, val_source=val_source,
                                                      per_class=cfg.train_per_class, seed=seed, split_seed=cfg.split_seed,
                                                      pool=cfg.held_out, given_val=given_val)
    splits = {"train": train_set, "test": test_set}
    folders = {"train": cache_root / key / "train", "test": cache_root / key / "test"}
    if read is not None:  # only the selected training images are read; their cache is keyed by the selection
        splits["train"] = IndexSubset(train_set, read)
        folders["train"] = cache_root / key / f"train-{cfg.train_per_class}pc-{hashlib.sha256(read.tobytes()).hexdigest()[:12]}"
    widths = point_widths(model, test_set[0][0], names, pool=cfg.pool, device=device_t)
    todo = [s for s in splits if not (folders[s] / "done.json").is_file()]
    rows_todo = sum(len(splits[s]) for s in todo)
    check_disk(cache_root, projected_bytes(rows_todo, widths, cfg.cache_dtype) + join_headroom(rows_todo, widths, cfg.cache_dtype))
    timings = {}
    feats = {}
    for split, ds in splits.items():
        t0 = time.perf_counter()
        feats[split] = extract(model, ds, names, pool=cfg.pool, folder=folders[split], batch_size=cfg.batch_size, workers=cfg.workers,
                               device=device_t, amp=cfg.amp, dtype=cfg.cache_dtype, progress=progress, description=f"features ({split})")
        timings[f"features_{split}_s"] = time.perf_counter() - t0
    (train_x, train_y), (test_x, test_y) = feats["train"], feats["test"]
    if world()[0] > 0:  # under torchrun rank 0 alone trains the heads and computes the fields: one GPU's work, not N
        return _from_rank_zero(None)

    if val_source == "test":  # the backbone's training data is unknown: decide on part of the test split, grade on the rest
        test_rows, val_rows = validation_split(test_y, val_fraction, split_seed=cfg.split_seed)
        val_x, val_y = test_x, test_y
    else:
        val_rows = train_val_rows
        test_rows, val_x, val_y = np.arange(len(test_y)), train_x, train_y
    process_budget = int(cfg.memory_budget * 2**30) if cfg.memory_budget else default_memory_budget()
    keep_fields = fields_to_keep(cfg.save_fields)

    def run(labels: list[int] | None, description: str):
        """Heads and field matrices on a label subset (None = all labels)."""
        L = num_classes if labels is None else len(labels)
        remap = np.arange(num_classes) if labels is None else np.full(num_classes, -1)
        if labels is not None:
            remap[labels] = np.arange(L)

        def rows(x, y, candidates):
            keep = candidates[remap[y[candidates]] >= 0]
            return Rows(x, keep, torch.from_numpy(remap[y[keep]]))

        train_rows = rows(train_x, train_y, rest_rows)
        scored = {"test": rows(test_x, test_y, test_rows)}
        if len(val_rows):
            scored["val"] = rows(val_x, val_y, val_rows)
        t_heads = time.perf_counter()
        heads = train_heads(train_rows, scored, num_classes=L, epochs=cfg.head_epochs, lr=cfg.head_lr, batch_size=cfg.head_batch_size,
                            seed=seed, device=device_t, memory_budget=chunk_budget(process_budget), progress=progress,
                            description=description,
                            patience=cfg.head_patience, min_epochs=cfg.head_min_epochs, stop_on="val",
                            dtype=getattr(torch, cfg.head_dtype), optimizer_name=cfg.head_optimizer)
        head_seconds[description] = time.perf_counter() - t_heads
        fields_rows = {"val": scored.get("val"), "test": scored["test"], "train": train_rows}[fields_split]
        records, fields = [], {}  # fields: point -> (statistics, kept filters, their matrices); none kept in the sweep
        for n in names:
            # phase 3 in filter chunks within the budget; only the per-filter statistics and the kept matrices stay
            mu = class_means(fields_rows.features[n], fields_rows.index, fields_rows.targets, L)
            stats = layer_stats(mu, heads[n].weight, threshold=threshold, memory_budget=chunk_budget(process_budget),
                                clusters=cfg.clusters)
            kept = top_filters(stats, keep_fields) if labels is None else np.zeros(0, dtype=np.int64)
            index = torch.from_numpy(kept)
            fields[n] = stats, kept, field_matrices(mu[:, index], heads[n].weight[:, index]).numpy()
            record = point_record(n, stats, heads[n].accuracies, threshold, heads[n].train_accuracy)
            if fields_split != "test":
                test = scored["test"]
                record["test"] = test_figures(layer_stats(class_means(test.features[n], test.index, test.targets, L), heads[n].weight,
                                                          threshold=threshold, memory_budget=chunk_budget(process_budget),
                                                          clusters=cfg.clusters), threshold)
            records.append(record)
        return heads, records, fields

    head_seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    heads, records, fields = run(None, "heads")
    timings["heads_and_fields_s"] = time.perf_counter() - t0
    timings["heads_s"] = head_seconds["heads"]
    for r in records:
        r.update(_epochs_used(heads[r["name"]]))
    sweep = []
    for K in cfg.label_sweep or []:
        if K > num_classes:
            raise DataError(f"--labels {K}: the dataset has only {num_classes} labels")
        labels = choose_labels(num_classes, K, cfg.label_seed)
        t0 = time.perf_counter()
        if labels == list(range(num_classes)):  # every label, in order: the very problem the measurement just solved
            sweep_heads, recs = heads, records
            head_seconds[f"heads (K={K})"] = 0.0
        else:
            sweep_heads, recs, _ = run(labels, f"heads (K={K})")
        timings[f"sweep_{K}_s"] = time.perf_counter() - t0
        timings[f"sweep_{K}_heads_s"] = head_seconds[f"heads (K={K})"]
        sweep.append({"labels": K, "label_ids": labels, "points": [
            {"name": r["name"], "val_accuracy": r.get("val_accuracy"), "test_accuracy": r["test_accuracy"],
             "error_rate": 1 - r["test_accuracy"], "snr": r["snr"], "cluster_size": r["cluster_size"],
             "clusters_per_filter": r["clusters_per_filter"], "noise_per_filter": r["noise_per_filter"],
             "clustered_labels_per_filter": r["clustered_labels_per_filter"],
             **_epochs_used(sweep_heads[r["name"]])} for r in recs]})
    timings["total_s"] = time.perf_counter() - t_start
    timings["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    spec = getattr(model, "spec", None) or {}
    meta = {
        "model": spec.get("name", type(model).__name__),
        "dataset": dataset if isinstance(dataset, str) else dataset_id,
        "num_classes": num_classes,
        "classes": [str(c) for c in train_set.classes],
        "split_sizes": {"train": int(len(rest_rows)), "val": int(len(val_rows)), "test": int(len(test_rows))},
        "val_source": val_source,
        "seed": seed,
        "device": str(device_t),
        "options": {"points": names, "side_points": side, "pool": cfg.pool, "threshold": threshold, "clusters": cfg.clusters,
                    "head_epochs": cfg.head_epochs, "head_lr": cfg.head_lr,
                    "head_batch_size": cfg.head_batch_size, "head_patience": cfg.head_patience, "head_min_epochs": cfg.head_min_epochs,
                    "head_optimizer": cfg.head_optimizer, "preset": cfg.preset,
                    "head_early_stopping": bool(cfg.head_patience and len(val_rows)), "fields_split": fields_split,
                    "label_seed": cfg.label_seed,
                    "val_fraction": val_fraction, "val_source": val_source, "split_seed": cfg.split_seed, "held_out": cfg.held_out,
                    "cache_dtype": cfg.cache_dtype, "head_dtype": cfg.head_dtype, "train_per_class": cfg.train_per_class,
                    "memory_budget_gib": round(process_budget / 2**30, 3), "batch_size": cfg.batch_size, "amp": cfg.amp,
                    "head_bias_in_fields": False, "save_fields": "all" if keep_fields is None else keep_fields},
        "timings": timings,
        "feature_cache": str(cache_root / key),
        "unused_convs": unused_convs(model),  # convs an eval forward never runs (auxiliary heads): no points
        "feature_rows": {split: len(ds) for split, ds in splits.items()},
        "feature_cache_bytes": sum(folder_bytes(f) for f in folders.values()),
        "feature_cache_projected_bytes": projected_bytes(sum(len(ds) for ds in splits.values()), widths, cfg.cache_dtype),
    }
    return _from_rank_zero(Measurement(meta=meta, points=records, fields={n: f[2] for n, f in fields.items()}, label_sweep=sweep,
                                       heads={n: {"weight": h.weight, "bias": h.bias} for n, h in heads.items()},
                                       field_filters={n: f[1] for n, f in fields.items()},
                                       filter_stats={n: f[0] for n, f in fields.items()}))


def _from_rank_zero(measurement: Measurement | None) -> Measurement:
    """Rank 0's measurement on every rank (``measurement`` itself outside torchrun). The other ranks get it without
    the kept field matrices: every decision reads the per-filter statistics, which it carries."""
    if world()[1] == 1:
        return measurement
    shared = broadcast_object(None if measurement is None else dataclasses.replace(measurement, fields={}, field_filters={}))
    return measurement if measurement is not None else shared


def measure_checkpoint(checkpoint: str | Path, cfg: MeasureConfig, *, out: str | Path, plots: bool = True,
                       progress=None) -> Measurement:
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
    cfg = dataclasses.replace(cfg, val_source=source, val_fraction=used, held_out=trained_val or None)  # config.yaml: the split used
    if cfg.split_seed is not None and source == "train" and trained_val and used >= trained_val:
        warnings.warn(f"{checkpoint}: --split-seed draws the validation split from the {trained_val:.0%} its training held out, "
                      f"all of which --val-fraction {used:g} takes; pass a smaller --val-fraction (e.g. {trained_val / 2:g}) to vary it",
                      stacklevel=2)
    saw = source == "train" and (imported(payload) or not trained_val or used > trained_val)
    if saw:
        why = ("its weights were imported (training data unknown)" if imported(payload) else
               f"its training held out {trained_val or 0:.0%} of the training split, less than the {used:.0%} validated on")
        warnings.warn(f"{checkpoint}: the validation split comes from the training split but {why}, so the backbone may have "
                      "trained on it; use --val-source test for decisions on unseen images", stacklevel=2)
    return cfg, saw


def measured_data(model: nn.Module, dataset, data_dir: str | None, *, train=None, val=None, test=None):
    """``(train_set, test_set, dataset_id, validation rows)`` of a measurement: a dataset name, ``(train_set, test_set)``,
    or the user's ``train``/``val``/``test`` (``Dataset`` or ``DataLoader``). A given ``val`` is appended to the training
    set and its rows returned (None: the validation split is carved as ``val_source`` says).

    Raises:
        DataError: no data, a name beside ``train=``/``test=``, or the user's data that cannot be read (one line).
    """
    data = user_data(lambda: num_outputs(model), dataset=dataset, train=train, val=val, test=test, command="measure")
    given_val = None
    if data is not None:
        train_set, val_set, test_set = data["train"], data["val"], data["test"]
        remember_input_shape(model, train_set.image_shape)
        if val_set is not None:
            given_val = np.arange(len(train_set), len(train_set) + len(val_set))
            train_set = UserDataset(ConcatDataset([train_set, val_set]), torch.cat([train_set.targets, val_set.targets]),
                                    len(train_set.classes), train_set.image_shape)
        dataset = (train_set, test_set)
    if dataset is None:
        raise DataError("measure needs data: a dataset name, (train_set, test_set), or train=/test= datasets")
    if isinstance(dataset, str):
        size = (getattr(model, "spec", None) or {}).get("input_size")
        train_set = build_dataset(dataset, "train", data_dir, augment=False, input_size=size)
        test_set = build_dataset(dataset, "test", data_dir, augment=False, input_size=size)
        if getattr(model, "spec", None) is None:  # a user's model on a named dataset: trace it on that data's shape
            remember_input_shape(model, tuple(test_set[0][0].shape))
        return train_set, test_set, f"{dataset}|{data_dir}|{size}", None
    train_set, test_set = dataset
    if getattr(model, "spec", None) is None:  # a user's model on datasets given as (train_set, test_set)
        remember_input_shape(model, tuple(train_set[0][0].shape))
    digest = f"{fingerprint(train_set)}{fingerprint(test_set)}"
    return train_set, test_set, f"{type(train_set).__name__}|{len(train_set)}|{len(test_set)}|{digest}", given_val


def plan_train_rows(targets, *, val_fraction: float, val_source: str, per_class: int | None, seed: int,
                    split_seed: int | None = None, pool: float | None = None,
                    given_val: np.ndarray | None = None) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    """``(read, rest, val)``: the training images the feature pass reads (``None``: all of them), and the heads'
    rows and the validation rows as positions in what it reads (no validation rows when they come from the test split).

    The validation rows are carved from the whole training split first, so ``per_class`` (``--train-per-class``)
    changes only which of the remaining images the heads train on (a seeded, label-stratified draw of at most
    ``per_class`` per label), never which images are validated on.
    """
    if given_val is not None:  # the user's own validation set, appended to the training rows
        rest, val = np.arange(given_val[0] if len(given_val) else len(targets)), given_val
    elif val_source == "test":
        rest, val = np.arange(len(targets)), np.zeros(0, dtype=np.int64)
    else:
        rest, val = validation_split(targets, val_fraction, split_seed=split_seed, pool=pool)
    if per_class is None:
        return None, rest, val
    rest = per_class_subset(targets, rest, per_class, seed=seed)
    read = np.union1d(rest, val)
    return read, np.searchsorted(read, rest), np.searchsorted(read, val)


def _epochs_used(head) -> dict:
    """What a point record says of its head's training: the epochs it trained and the epoch whose weights it kept."""
    return {"head_epochs_used": head.epochs_used, "head_best_epoch": head.best_epoch}


def _num_outputs(model: nn.Module) -> int | None:
    if getattr(model, "spec", None) is None and getattr(model, "num_classes", None) is None:
        try:
            return num_outputs(model)
        except ModelError:
            return None
    spec = getattr(model, "spec", None)
    if spec and "num_classes" in spec:
        return spec["num_classes"]
    return getattr(model, "num_classes", None)
