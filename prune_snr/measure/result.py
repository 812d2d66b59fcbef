"""``Measurement``: the plain data a measurement produces, and its artifacts on disk.

Artifacts (all written atomically):
- ``measurement.json``: model, dataset, split sizes, seed, options, per-point figures
  (``name, n_filters, val_accuracy, test_accuracy, snr, noise_per_filter, clusters_per_filter,
  cluster_size, dead_fraction``; the field figures on ``options.fields_split``, the test
  split's under ``test``) and ``label_sweep``. ``val_accuracy`` drives decisions;
  ``test_accuracy`` is the paper's figure and never feeds one.
- ``fields.npz``: per point, every filter's statistics (``NAME/snr``, ``signal``, ``noise``,
  ``strength`` float32; ``n_noise``, ``n_clusters``, ``n_active`` int32; ``dead`` bool;
  ``component`` F x L int16/int32: each label's cluster id, its smallest label, L if inactive),
  from which every figure in the JSON follows; and the un-normalised field matrices ``NAME/M``
  (F' x L x L float32) of ``--save-fields`` filters only (the highest-SNR ones, ``all`` keeps
  every filter's), whose filter indices are ``NAME/M_filters`` (ascending). Files written before
  the statistics were stored hold only ``NAME/M`` (every filter) and ``NAME/snr``: they still load,
  and the statistics are recomputed from the matrices.
- ``heads.pt``: each point's linear head on the raw feature scale (``weight`` L x C x p*p,
  ``bias`` L), loadable with ``weights_only=True``; truncation and AFCC use them.
"""

from __future__ import annotations

import dataclasses
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_save_bytes, atomic_save_json
from ..checkpoint import load_checkpoint, save_checkpoint
from ..config import MeasureConfig
from ..errors import CheckpointError
from .fields import FilterStats, filter_stats, layer_summary

MEASUREMENT = "measurement.json"
FIELDS = "fields.npz"
HEADS = "heads.pt"
#: The per-filter statistics fields.npz stores for every point, and their dtypes on disk (``component`` aside).
#: What a measurement written before an option was recorded did: its fields on the test split, every head trained
#: the full ``head_epochs`` (no early stopping), every filter's field matrices kept.
UNRECORDED = {"fields_split": "test", "head_patience": 0, "save_fields": "all", "clusters": "components"}
STATS = {
    "snr": np.float32,
    "signal": np.float32,
    "noise": np.float32,
    "strength": np.float32,
    "n_noise": np.int32,
    "n_clusters": np.int32,
    "n_active": np.int32,
    "dead": np.bool_,
}


@dataclass
class Measurement:
    meta: dict  # model, dataset, split sizes, seed, options, timings
    points: list[dict]  # per-point figures, input to output
    fields: dict[str, np.ndarray]  # point -> M of the stored filters (F' x L x L, rows as in field_filters)
    heads: dict[str, dict] = field(default_factory=dict)  # point -> {"weight", "bias"}
    label_sweep: list[dict] = field(default_factory=list)
    field_filters: dict[str, np.ndarray] = field(
        default_factory=dict
    )  # point -> filter of each row of fields (absent: all)
    filter_stats: dict[str, FilterStats] = field(default_factory=dict)  # point -> statistics (absent: from the fields)

    @property
    def threshold(self) -> float:
        return self.meta["options"]["threshold"]

    @property
    def clusters(self) -> str:
        """What a cluster is in this measurement: ``blocks`` or ``components`` (measurements that do
        not say: the latter)."""
        return self.meta["options"].get("clusters", UNRECORDED["clusters"])

    @property
    def config(self) -> MeasureConfig:
        """The options this measurement was made with (``meta["options"]``, and its seed) as a :class:`MeasureConfig`;
        see :func:`recorded_config`.

        Example:
            >>> m = Measurement(
            ...     meta={"seed": 1, "options": {"points": ["features.conv1"], "pool": 1}}, points=[], fields={}
            ... )
            >>> m.config.points, m.config.pool, m.config.seed, m.config.fields_split
            ('features.conv1', 1, 1, 'test')
        """
        return recorded_config(self.meta.get("options", {}), seed=self.meta.get("seed"))

    @property
    def has_validation(self) -> bool:
        """Whether the points carry validation figures (measurements made before the split did not)."""
        return bool(self.points) and all(p.get("val_accuracy") is not None for p in self.points)

    def val_accuracies(self) -> list[float]:
        """Each point's validation head accuracy, input to output: what decisions read."""
        if not self.has_validation:
            raise CheckpointError(
                "this measurement has no validation figures (its heads were graded on test only); re-measure with "
                "prune-snr measure CHECKPOINT --out DIR and pass that folder"
            )
        return [p["val_accuracy"] for p in self.points]

    def restricted(self, keep) -> "Measurement":
        """This measurement with only the points for which ``keep(name)`` holds (the model lost the others)."""
        return Measurement(
            meta=self.meta,
            points=[p for p in self.points if keep(p["name"])],
            fields={k: v for k, v in self.fields.items() if keep(k)},
            heads=self.heads,
            field_filters={k: v for k, v in self.field_filters.items() if keep(k)},
            filter_stats={k: v for k, v in self.filter_stats.items() if keep(k)},
        )

    def trunk(self) -> "Measurement":
        """This measurement without its side points (squeeze-excite gates measured only to score their channel
        groups): what the layer allocation and the cut read, one step of depth per point."""
        side = set(self.meta.get("options", {}).get("side_points") or ())
        return self.restricted(lambda name: name not in side) if side else self

    def point(self, name: str) -> dict:
        return next(p for p in self.points if p["name"] == name)

    def stats(self, name: str) -> FilterStats:
        """Per-filter statistics of point ``name``: the stored ones, else recomputed from its field matrices."""
        if name not in self.filter_stats:
            if not self.keeps_every_matrix(name):
                raise CheckpointError(
                    f"measurement point {name} holds neither statistics nor every filter's fields; re-measure it"
                )
            self.filter_stats[name] = filter_stats(
                torch.from_numpy(self.fields[name]), threshold=self.threshold, clusters=self.clusters
            )
        return self.filter_stats[name]

    def keeps_every_matrix(self, name: str) -> bool:
        """Whether point ``name`` keeps every filter's field matrix (``--save-fields all``): what its statistics at
        another θ are computed from."""
        filters = self.stored_filters(name)
        n_filters = next((p.get("n_filters") for p in self.points if p["name"] == name), None)
        return np.array_equal(filters, np.arange(len(filters))) and n_filters in (None, len(filters))

    def snr(self, name: str) -> np.ndarray:
        return self.stats(name).snr.numpy()

    def stored_filters(self, name: str) -> np.ndarray:
        """The filters whose field matrices point ``name`` keeps (``fields[name][r]`` is filter
        ``stored_filters(name)[r]``'s)."""
        if name in self.field_filters:
            return self.field_filters[name]
        return np.arange(len(self.fields[name])) if name in self.fields else np.zeros(0, dtype=np.int64)

    def matrix(self, name: str, f: int) -> np.ndarray:
        """Filter ``f``'s un-normalised field matrix at point ``name`` (``L x L``), if it was kept."""
        rows = np.flatnonzero(self.stored_filters(name) == f)
        if not len(rows):
            raise KeyError(
                f"{name}: the field matrix of filter {f} was not kept (measure with "
                "--save-fields all to keep every one)"
            )
        return self.fields[name][rows[0]]

    def to_json(self) -> dict:
        return {**self.meta, "points": self.points, "label_sweep": self.label_sweep}

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        arrays = {}
        names = [p["name"] for p in self.points]
        names += [n for n in {**self.fields, **self.filter_stats} if n not in names]
        for name in names:
            stats = self.stats(name)
            for key, dtype in STATS.items():
                arrays[f"{name}/{key}"] = getattr(stats, key).numpy().astype(dtype)
            L = stats.component.shape[1]
            arrays[f"{name}/component"] = stats.component.numpy().astype(np.int16 if L < 2**15 else np.int32)
            if name in self.fields:
                arrays[f"{name}/M"] = self.fields[name].astype(np.float32)
                arrays[f"{name}/M_filters"] = self.stored_filters(name).astype(np.int32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        atomic_save_bytes(out / FIELDS, buf.getvalue())
        save_checkpoint(
            out / HEADS, {"model": {n: {"weight": h["weight"], "bias": h["bias"]} for n, h in self.heads.items()}}
        )
        atomic_save_json(out / MEASUREMENT, self.to_json())  # last: its presence means the set is complete
        return out

    @classmethod
    def given(cls, measurement: "Measurement | str | Path | None", folder: str | None) -> "Measurement | None":
        """``measurement`` (a Measurement, or the folder one was saved to), else the one saved in ``folder`` (a
        config's ``measurement`` option), else None."""
        if measurement is None and folder:
            measurement = folder
        return cls.load(measurement) if isinstance(measurement, (str, Path)) else measurement

    @classmethod
    def load(cls, folder: str | Path) -> "Measurement":
        """Read a measurement folder written by :meth:`save` (``prune-snr measure --out``)."""
        folder = Path(folder)
        path = folder / MEASUREMENT
        if not path.is_file():
            raise CheckpointError(f"{folder} holds no {MEASUREMENT}; run prune-snr measure --out {folder} first")
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict) or not isinstance(data.get("points"), list):
                raise ValueError(f"{MEASUREMENT} holds no list of points")
            with np.load(folder / FIELDS) as npz:
                fields = {key[:-2]: npz[key] for key in npz.files if key.endswith("/M")}
                field_filters = {
                    key[:-10]: npz[key].astype(np.int64) for key in npz.files if key.endswith("/M_filters")
                }
                stats = {key[:-10]: _read_stats(npz, key[:-10]) for key in npz.files if key.endswith("/component")}
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"measurement in {folder} is damaged ({exc}); re-run prune-snr measure") from exc
        heads = load_checkpoint(folder / HEADS)["model"] if (folder / HEADS).is_file() else {}
        points = data.pop("points")
        sweep = data.pop("label_sweep", [])
        return cls(
            meta=data,
            points=points,
            fields=fields,
            heads=heads,
            label_sweep=sweep,
            field_filters=field_filters,
            filter_stats=stats,
        )


def recorded_config(options: dict, *, seed: int | None = None) -> MeasureConfig:
    """The :class:`MeasureConfig` that ``options`` (``measurement.json``'s) record.

    ``points`` is the resolved list of names, joined with ``,``; an option a measurement does not record
    is what measurements did before it was recorded (:data:`UNRECORDED`), else the default. What is no
    option of :class:`MeasureConfig` (``memory_budget_gib``, the budget in use; ``head_early_stopping``)
    stays in ``options``; the dataset and device stand in ``meta`` beside them, the label sweep in
    :attr:`Measurement.label_sweep`.
    """
    known = {f.name for f in dataclasses.fields(MeasureConfig)}
    values = {**UNRECORDED, **{k: v for k, v in options.items() if k in known}}
    if isinstance(values.get("points"), (list, tuple)):
        values["points"] = ",".join(values["points"])
    values["save_fields"] = str(values["save_fields"])
    if seed is not None:
        values["seed"] = seed
    return MeasureConfig(**values)


def _read_stats(npz, name: str) -> FilterStats:
    """A point's stored statistics, in the dtypes :func:`~prune_snr.measure.fields.filter_stats` gives."""
    read = {key: torch.from_numpy(npz[f"{name}/{key}"]) for key in STATS}
    read.update({key: read[key].long() for key in ("n_noise", "n_clusters", "n_active")})
    return FilterStats(**read, component=torch.from_numpy(npz[f"{name}/component"].astype(np.int32)))


FIGURES = (
    "snr",
    "noise_per_filter",
    "clusters_per_filter",
    "cluster_size",
    "clustered_labels_per_filter",
    "dead_fraction",
)


def test_figures(M: torch.Tensor | FilterStats, threshold: float) -> dict:
    """The field figures of one point (its ``F x L x L`` matrices, or their statistics) on another
    split's class means."""
    summary = layer_summary(M if isinstance(M, FilterStats) else filter_stats(M, threshold=threshold))
    return {k: summary[k] for k in FIGURES}


def point_record(
    name: str,
    M: torch.Tensor | FilterStats,
    accuracies: dict[str, float],
    threshold: float,
    train_accuracy: float | None = None,
) -> dict:
    """The per-point entry of ``measurement.json``: ``val_accuracy``, ``test_accuracy`` and the field figures of ``M``
    (the point's matrices or their statistics)."""
    record = {
        "name": name,
        "n_filters": len(M.snr) if isinstance(M, FilterStats) else int(M.shape[0]),
        "val_accuracy": accuracies.get("val"),
        "test_accuracy": accuracies.get("test"),
    }
    record.update(test_figures(M, threshold))
    if train_accuracy is not None:
        record["train_accuracy"] = train_accuracy
    return record


def paper_accuracy(point: dict) -> float:
    """A point's test-split head accuracy (the paper's figure), also from measurements made before the split."""
    return point["test_accuracy"] if "test_accuracy" in point else point["accuracy"]
