"""PNG figures of a measurement (matplotlib, Agg backend)."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np

from ..atomic import atomic_save_bytes
from .result import Measurement, paper_accuracy


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure as PNG atomically and close it (shared by every stage's plots)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return atomic_save_bytes(path, buf.getvalue())


#: Above this many labels filters.png does not outline cluster cells (too small to see, too many to draw).
OUTLINE_LABELS = 100


def _short(name: str) -> str:
    return name.replace("features.", "").replace("blocks.", "b")


def save_plots(m: Measurement, out: str | Path, *, filters_per_layer: int = 4, max_layers: int = 8) -> list[Path]:
    """Write ``layers.png`` (accuracy & SNR), ``noise.png`` (noise & cluster size),
    ``filters.png`` (normalised matrices of the highest-SNR filters) and, with a label sweep,
    ``label_sweep.png``. Returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    names = [_short(p["name"]) for p in m.points]
    x = np.arange(len(names))
    written = []

    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.5), 3.5))
    ax.plot(x, [paper_accuracy(p) for p in m.points], "o-", color="tab:blue")
    ax.set_ylabel("head test accuracy", color="tab:blue")
    ax2 = ax.twinx()
    snr = [p["snr"] if math.isfinite(p["snr"]) else np.nan for p in m.points]
    ax2.plot(x, snr, "s--", color="tab:red")
    ax2.set_ylabel("layer SNR", color="tab:red")
    ax.set_xticks(x, names, rotation=60, fontsize=7)
    ax.set_title(f"{m.meta['model']} on {m.meta['dataset']}: accuracy and SNR by layer")
    written.append(save_figure(fig, out / "layers.png"))

    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.5), 3.5))
    ax.plot(x, [p["noise_per_filter"] for p in m.points], "o-", color="tab:purple")
    ax.set_ylabel("noise elements per filter", color="tab:purple")
    ax2 = ax.twinx()
    ax2.plot(x, [p["cluster_size"] for p in m.points], "s--", color="tab:green")
    ax2.set_ylabel("mean cluster size", color="tab:green")
    ax.set_xticks(x, names, rotation=60, fontsize=7)
    ax.set_title("noise and cluster size by layer")
    written.append(save_figure(fig, out / "noise.png"))

    step = max(1, math.ceil(len(m.points) / max_layers))
    shown = m.points[::step]
    L = m.stats(shown[0]["name"]).component.shape[1]
    names = [str(c)[:10] for c in m.meta.get("classes", range(L))]
    side = min(max(1.8, 0.22 * L), 6.0)  # a 1000-label matrix is drawn as an image, not cell by cell
    fig, axes = plt.subplots(len(shown), filters_per_layer, figsize=(filters_per_layer * side + 1.2, len(shown) * side),
                             squeeze=False, constrained_layout=True)
    image = None
    for r, (row, p) in enumerate(zip(axes, shown)):
        stats = m.stats(p["name"])
        # the highest-SNR filters among those whose matrices were kept (--save-fields keeps the highest-SNR ones)
        kept = m.stored_filters(p["name"])
        order = kept[np.argsort(-stats.snr.numpy()[kept], kind="stable")][:filters_per_layer]
        for ax, f in zip(row, order):
            M_f = m.matrix(p["name"], int(f))
            peak = M_f.max()
            image = ax.imshow(M_f / peak if peak > 0 else M_f, vmin=0, vmax=1, cmap="viridis")
            ticks = range(L) if L <= 20 else []
            ax.set_xticks(ticks, [names[i] for i in ticks] if r == len(shown) - 1 else [], rotation=90, fontsize=5)
            ax.set_yticks(ticks, [names[i] for i in ticks] if ax is row[0] else [], fontsize=5)
            # a cluster's cells (signal elements) get a red outline: labels the filter confuses among each other only
            for labels in stats.clusters(int(f)) if peak > 0 and L <= OUTLINE_LABELS else []:
                for i in labels:
                    for j in labels:
                        if M_f[i, j] / peak > m.threshold:
                            ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=0.8))
            ax.set_title(f"filter {int(f)}, SNR {stats.snr[f]:.1f}", fontsize=6)
        row[0].set_ylabel(f"{_short(p['name'])}\ninput label", fontsize=7)
        for ax in row[len(order):]:
            ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("output unit", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="field / max field")
    fig.suptitle(f"normalised field matrices of the top-SNR filters (θ = {m.threshold}; red: cluster cells"
                 f"{'' if L <= OUTLINE_LABELS else f', not drawn above {OUTLINE_LABELS} labels'}; "
                 f"fields on the {m.config.fields_split} split)", fontsize=8)
    written.append(save_figure(fig, out / "filters.png"))

    if m.label_sweep:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        ks = [s["labels"] for s in m.label_sweep]
        for idx in sorted({0, len(m.points) // 2, len(m.points) - 1}):
            ax.plot(ks, [s["points"][idx]["error_rate"] for s in m.label_sweep], "o-", label=_short(m.points[idx]["name"]))
        if max(ks) > 100:
            ax.set_xscale("log")
        ax.set_xlabel("number of labels")
        ax.set_ylabel("head test error rate")
        ax.legend(fontsize=7)
        ax.set_title("label sweep")
        written.append(save_figure(fig, out / "label_sweep.png"))
    return written
