"""``Measurement``: the plain data a measurement produces, and its artifacts on disk.

Artifacts (all written atomically):
- ``measurement.json``: model, dataset, split sizes, seed, options, per-point figures
  (``name, n_filters, val_accuracy, test_accuracy, snr, noise_per_filter, clusters_per_filter,
  cluster_size, dead_fraction``; the field figures on ``options.fields_split``, the test
  split's under ``test``) and ``label_sweep``. ``val_accuracy`` drives decisions;
  ``test_accuracy`` is the paper's figure and never feeds one.
- ``fields.npz``: ``NAME/M`` (F x L x L float32, un-normalised mean fields) and ``NAME/snr``
  (F float32) for every point; every figure in the JSON is recomputable from these.
- ``heads.pt``: each point's linear head on the raw feature scale (``weight`` L x C x p*p,
  ``bias`` L), loadable with ``weights_only=True``; truncation and AFCC use them.
"""
from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_save_bytes, atomic_save_json

from ..checkpoint import save_checkpoint, load_checkpoint
from ..errors import CheckpointError
from .fields import filter_stats, layer_summary

MEASUREMENT = "measurement.json"
FIELDS = "fields.npz"
HEADS = "heads.pt"


@dataclass
class Measurement:
    meta: dict                      # model, dataset, split sizes, seed, options, timings
    points: list[dict]              # per-point figures, input to output
    fields: dict[str, np.ndarray]   # point -> M (F x L x L)
    heads: dict[str, dict] = field(default_factory=dict)  # point -> {"weight", "bias"}
    label_sweep: list[dict] = field(default_factory=list)

    @property
    def threshold(self) -> float:
        return self.meta["options"]["threshold"]

    @property
    def has_validation(self) -> bool:
        """Whether the points carry validation figures (measurements made before the split did not)."""
        return bool(self.points) and all(p.get("val_accuracy") is not None for p in self.points)

    def val_accuracies(self) -> list[float]:
        """Each point's validation head accuracy, input to output: what decisions read."""
        if not self.has_validation:
            raise CheckpointError("this measurement has no validation figures (it predates --val-fraction); re-measure with "
                                  "prune-snr measure CHECKPOINT --out DIR and pass that folder")
        return [p["val_accuracy"] for p in self.points]

    def restricted(self, keep) -> "Measurement":
        """This measurement with only the points for which ``keep(name)`` holds (the model lost the others)."""
        return Measurement(meta=self.meta, points=[p for p in self.points if keep(p["name"])],
                           fields={k: v for k, v in self.fields.items() if keep(k)}, heads=self.heads)

    def point(self, name: str) -> dict:
        return next(p for p in self.points if p["name"] == name)

    def stats(self, name: str):
        """Per-filter statistics of point ``name`` (recomputed from its field matrices)."""
        return filter_stats(torch.from_numpy(self.fields[name]), threshold=self.threshold)

    def snr(self, name: str) -> np.ndarray:
        return self.stats(name).snr.numpy()

    def to_json(self) -> dict:
        return {**self.meta, "points": self.points, "label_sweep": self.label_sweep}

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        arrays = {}
        for name, M in self.fields.items():
            arrays[f"{name}/M"] = M.astype(np.float32)
            arrays[f"{name}/snr"] = self.snr(name).astype(np.float32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_save_bytes(out / FIELDS, buf.getvalue())
        save_checkpoint(out / HEADS, {"model": {n: {"weight": h["weight"], "bias": h["bias"]} for n, h in self.heads.items()}})
        atomic_save_json(out / MEASUREMENT, self.to_json())  # last: its presence means the set is complete
        return out

    @classmethod
    def load(cls, folder: str | Path) -> "Measurement":
        """Read a measurement folder written by :meth:`save` (``prune-snr measure --out``)."""
        folder = Path(folder)
        path = folder / MEASUREMENT
        if not path.is_file():
            raise CheckpointError(f"{folder} holds no {MEASUREMENT}; run prune-snr measure --out {folder} first")
        try:
            data = json.loads(path.read_text())
            with np.load(folder / FIELDS) as npz:
                fields = {key[:-2]: npz[key] for key in npz.files if key.endswith("/M")}
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"measurement in {folder} is damaged ({exc}); re-run prune-snr measure") from exc
        heads = load_checkpoint(folder / HEADS)["model"] if (folder / HEADS).is_file() else {}
        points = data.pop("points")
        sweep = data.pop("label_sweep", [])
        return cls(meta=data, points=points, fields=fields, heads=heads, label_sweep=sweep)


FIGURES = ("snr", "noise_per_filter", "clusters_per_filter", "cluster_size", "dead_fraction")


def test_figures(M: torch.Tensor, threshold: float) -> dict:
    """The field figures of one point on another split's class means."""
    summary = layer_summary(filter_stats(M, threshold=threshold))
    return {k: summary[k] for k in FIGURES}


def point_record(name: str, M: torch.Tensor, accuracies: dict[str, float], threshold: float,
                 train_accuracy: float | None = None) -> dict:
    """The per-point entry of ``measurement.json``: ``val_accuracy``, ``test_accuracy`` and the field figures of ``M``."""
    record = {"name": name, "n_filters": int(M.shape[0]), "val_accuracy": accuracies.get("val"),
              "test_accuracy": accuracies.get("test")}
    record.update(test_figures(M, threshold))
    if train_accuracy is not None:
        record["train_accuracy"] = train_accuracy
    return record


def paper_accuracy(point: dict) -> float:
    """A point's test-split head accuracy (the paper's figure), also from measurements made before the split."""
    return point["test_accuracy"] if "test_accuracy" in point else point["accuracy"]
