"""The two halves of a measurement around its one backbone pass: the feature cache it fills, and the problem the
heads solve on those features (phases 2 and 3 of METHOD.md), for all labels or a label subset of the sweep."""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import MeasureConfig, fields_to_keep
from ..data import IndexSubset, validation_split
from ..models.points import unused_convs
from .features import cache_key, check_disk, extract, folder_bytes, join_headroom, point_widths, projected_bytes
from .feed import Rows, class_means
from .fields import field_matrices, layer_stats, top_filters
from .heads import chunk_budget, default_memory_budget, train_heads
from .result import point_record, test_figures


@dataclasses.dataclass
class FeatureCache:
    """Where each split's pooled features live on disk (keyed by the weights, the data, the points and the pool)."""

    root: Path
    key: str
    splits: dict  # split name -> the dataset the feature pass reads
    folders: dict  # split name -> its cache folder
    widths: dict  # point -> C * p * p
    dtype: str

    @classmethod
    def plan(
        cls,
        model: nn.Module,
        cfg: MeasureConfig,
        names: list[str],
        dataset_id: str,
        train_set,
        test_set,
        *,
        read: np.ndarray | None,
        device: torch.device,
        root: Path,
    ) -> FeatureCache:
        """The cache of this measurement, its disk need checked before anything is read (a one-line error if short)."""
        key = cache_key(model, dataset_id, names, cfg.pool, cfg.cache_dtype)
        splits = {"train": train_set, "test": test_set}
        folders = {"train": root / key / "train", "test": root / key / "test"}
        if read is not None:  # only the selected training images are read; their cache is keyed by the selection
            splits["train"] = IndexSubset(train_set, read)
            folders["train"] = (
                root / key / f"train-{cfg.train_per_class}pc-{hashlib.sha256(read.tobytes()).hexdigest()[:12]}"
            )
        widths = point_widths(model, test_set[0][0], names, pool=cfg.pool, device=device)
        rows_todo = sum(len(splits[s]) for s in splits if not (folders[s] / "done.json").is_file())
        check_disk(
            root,
            projected_bytes(rows_todo, widths, cfg.cache_dtype) + join_headroom(rows_todo, widths, cfg.cache_dtype),
        )
        return cls(root, key, splits, folders, widths, cfg.cache_dtype)

    def extract(
        self, model: nn.Module, cfg: MeasureConfig, names: list[str], *, device: torch.device, progress
    ) -> tuple[dict, dict]:
        """``({split: (features, labels)}, {features_<split>_s: seconds})``: one hooked pass per
        split not cached yet."""
        feats, timings = {}, {}
        for split, ds in self.splits.items():
            t0 = time.perf_counter()
            feats[split] = extract(
                model,
                ds,
                names,
                pool=cfg.pool,
                folder=self.folders[split],
                batch_size=cfg.batch_size,
                workers=cfg.workers,
                device=device,
                amp=cfg.amp,
                dtype=cfg.cache_dtype,
                progress=progress,
                description=f"features ({split})",
            )
            timings[f"features_{split}_s"] = time.perf_counter() - t0
        return feats, timings

    def meta(self, model: nn.Module) -> dict:
        return {
            "feature_cache": str(self.root / self.key),
            "unused_convs": unused_convs(model),  # convs an eval forward never runs (auxiliary heads): no points
            "feature_rows": {split: len(ds) for split, ds in self.splits.items()},
            "feature_cache_bytes": sum(folder_bytes(f) for f in self.folders.values()),
            "feature_cache_projected_bytes": projected_bytes(
                sum(len(ds) for ds in self.splits.values()), self.widths, self.dtype
            ),
        }


@dataclasses.dataclass
class HeadProblem:
    """The cached features split into the heads' training rows, the validation rows and the test rows."""

    cfg: MeasureConfig
    names: list[str]
    num_classes: int
    train: tuple  # (features, labels) of the training split's pass
    test: tuple
    val: tuple  # the pass the validation rows index: the training split's, or the test split's (val_source="test")
    rest_rows: np.ndarray
    val_rows: np.ndarray
    test_rows: np.ndarray
    process_budget: int
    device: torch.device
    progress: object = None
    head_seconds: dict = dataclasses.field(default_factory=dict)

    @classmethod
    def of(
        cls,
        feats: dict,
        cfg: MeasureConfig,
        names: list[str],
        num_classes: int,
        *,
        rest_rows: np.ndarray,
        train_val_rows: np.ndarray,
        val_fraction: float,
        device: torch.device,
        progress=None,
    ) -> HeadProblem:
        train, test = feats["train"], feats["test"]
        if (
            cfg.val_source or "train"
        ) == "test":  # the backbone's training data is unknown: decide on part of the test split
            test_rows, val_rows = validation_split(test[1], val_fraction, split_seed=cfg.split_seed)
            val = test
        else:
            val_rows, test_rows, val = train_val_rows, np.arange(len(test[1])), train
        budget = int(cfg.memory_budget * 2**30) if cfg.memory_budget else default_memory_budget()
        return cls(cfg, names, num_classes, train, test, val, rest_rows, val_rows, test_rows, budget, device, progress)

    def _rows(self, split: tuple, candidates: np.ndarray, remap: np.ndarray) -> Rows:
        keep = candidates[remap[split[1][candidates]] >= 0]
        return Rows(split[0], keep, torch.from_numpy(remap[split[1][keep]]))

    def solve(self, labels: list[int] | None, description: str) -> tuple[dict, list[dict], dict]:
        """``(heads, point records, fields)`` on a label subset (None = all labels). ``fields``: point -> (statistics,
        kept filters, their matrices); the sweep keeps no matrices."""
        cfg, L = self.cfg, self.num_classes if labels is None else len(labels)
        remap = np.arange(self.num_classes) if labels is None else np.full(self.num_classes, -1)
        if labels is not None:
            remap[labels] = np.arange(L)
        train_rows = self._rows(self.train, self.rest_rows, remap)
        scored = {"test": self._rows(self.test, self.test_rows, remap)}
        if len(self.val_rows):
            scored["val"] = self._rows(self.val, self.val_rows, remap)
        t_heads = time.perf_counter()
        heads = train_heads(
            train_rows,
            scored,
            num_classes=L,
            epochs=cfg.head_epochs,
            lr=cfg.head_lr,
            batch_size=cfg.head_batch_size,
            seed=cfg.seed,
            device=self.device,
            memory_budget=chunk_budget(self.process_budget),
            progress=self.progress,
            description=description,
            patience=cfg.head_patience,
            min_epochs=cfg.head_min_epochs,
            stop_on="val",
            dtype=getattr(torch, cfg.head_dtype),
            optimizer_name=cfg.head_optimizer,
        )
        self.head_seconds[description] = time.perf_counter() - t_heads
        fields_rows = {"val": scored.get("val"), "test": scored["test"], "train": train_rows}[cfg.fields_split]
        records, fields = [], {}
        keep = fields_to_keep(cfg.save_fields) if labels is None else 0
        for n in self.names:
            fields[n], record = self._point(n, heads[n], fields_rows, scored["test"], L, keep)
            records.append(record)
        return heads, records, fields

    def _point(self, name: str, head, fields_rows: Rows, test: Rows, L: int, keep: int | None) -> tuple[tuple, dict]:
        """Phase 3 of one point in filter chunks within the budget: only the per-filter statistics and the kept
        matrices stay; the record carries the test split's figures beside those of ``fields_split``."""
        cfg, budget = self.cfg, chunk_budget(self.process_budget)
        mu = class_means(fields_rows.features[name], fields_rows.index, fields_rows.targets, L)
        stats = layer_stats(mu, head.weight, threshold=cfg.threshold, memory_budget=budget, clusters=cfg.clusters)
        kept = top_filters(stats, keep) if keep != 0 else np.zeros(0, dtype=np.int64)
        index = torch.from_numpy(kept)
        record = point_record(name, stats, head.accuracies, cfg.threshold, head.train_accuracy)
        if cfg.fields_split != "test":
            test_mu = class_means(test.features[name], test.index, test.targets, L)
            record["test"] = test_figures(
                layer_stats(test_mu, head.weight, threshold=cfg.threshold, memory_budget=budget, clusters=cfg.clusters),
                cfg.threshold,
            )
        return (stats, kept, field_matrices(mu[:, index], head.weight[:, index]).numpy()), record
