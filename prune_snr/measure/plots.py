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
    out = Path(out)
    written = [
        save_figure(_by_layer(m, "accuracy"), out / "layers.png"),
        save_figure(_by_layer(m, "noise"), out / "noise.png"),
        save_figure(_filters(m, filters_per_layer, max_layers), out / "filters.png"),
    ]
    if m.label_sweep:
        written.append(save_figure(_label_sweep(m), out / "label_sweep.png"))
    return written


def _by_layer(m: Measurement, which: str):
    """Two figures of a point each, on twin axes: head accuracy and SNR, or noise per filter and cluster size."""
    import matplotlib.pyplot as plt

    names = [_short(p["name"]) for p in m.points]
    x = np.arange(len(names))
    if which == "accuracy":
        left = ([paper_accuracy(p) for p in m.points], "head test accuracy", "tab:blue")
        right = ([p["snr"] if math.isfinite(p["snr"]) else np.nan for p in m.points], "layer SNR", "tab:red")
        title = f"{m.meta['model']} on {m.meta['dataset']}: accuracy and SNR by layer"
    else:
        left = ([p["noise_per_filter"] for p in m.points], "noise elements per filter", "tab:purple")
        right = ([p["cluster_size"] for p in m.points], "mean cluster size", "tab:green")
        title = "noise and cluster size by layer"
    fig, ax = plt.subplots(figsize=(max(6, len(names) * 0.5), 3.5))
    ax.plot(x, left[0], "o-", color=left[2])
    ax.set_ylabel(left[1], color=left[2])
    ax2 = ax.twinx()
    ax2.plot(x, right[0], "s--", color=right[2])
    ax2.set_ylabel(right[1], color=right[2])
    ax.set_xticks(x, names, rotation=60, fontsize=7)
    ax.set_title(title)
    return fig


def _filters(m: Measurement, filters_per_layer: int, max_layers: int):
    """The normalised field matrices of the highest-SNR kept filters of up to ``max_layers``
    points, clusters outlined."""
    import matplotlib.pyplot as plt

    shown = m.points[:: max(1, math.ceil(len(m.points) / max_layers))]
    L = m.stats(shown[0]["name"]).component.shape[1]
    side = min(max(1.8, 0.22 * L), 6.0)  # a 1000-label matrix is drawn as an image, not cell by cell
    fig, axes = plt.subplots(
        len(shown),
        filters_per_layer,
        figsize=(filters_per_layer * side + 1.2, len(shown) * side),
        squeeze=False,
        constrained_layout=True,
    )
    image = None
    for r, (row, p) in enumerate(zip(axes, shown)):
        stats = m.stats(p["name"])
        # the highest-SNR filters among those whose matrices were kept (--save-fields keeps the highest-SNR ones)
        kept = m.stored_filters(p["name"])
        order = kept[np.argsort(-stats.snr.numpy()[kept], kind="stable")][:filters_per_layer]
        for ax, f in zip(row, order):
            image = _matrix(ax, m, p["name"], int(f), stats, first_column=ax is row[0], last_row=r == len(shown) - 1)
        row[0].set_ylabel(f"{_short(p['name'])}\ninput label", fontsize=7)
        for ax in row[len(order) :]:
            ax.axis("off")
    for ax in axes[-1]:
        ax.set_xlabel("output unit", fontsize=7)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.6, label="field / max field")
    fig.suptitle(
        f"normalised field matrices of the top-SNR filters (θ = {m.threshold}; red: cluster cells"
        f"{'' if L <= OUTLINE_LABELS else f', not drawn above {OUTLINE_LABELS} labels'}; "
        f"fields on the {m.config.fields_split} split)",
        fontsize=8,
    )
    return fig


def _matrix(ax, m: Measurement, point: str, f: int, stats, *, first_column: bool, last_row: bool):
    """One filter's normalised matrix on ``ax``; its clusters' cells outlined in red."""
    import matplotlib.pyplot as plt

    M_f = m.matrix(point, f)
    L = M_f.shape[0]
    names = [str(c)[:10] for c in m.meta.get("classes", range(L))]
    peak = M_f.max()
    image = ax.imshow(M_f / peak if peak > 0 else M_f, vmin=0, vmax=1, cmap="viridis")
    ticks = range(L) if L <= 20 else []
    ax.set_xticks(ticks, [names[i] for i in ticks] if last_row else [], rotation=90, fontsize=5)
    ax.set_yticks(ticks, [names[i] for i in ticks] if first_column else [], fontsize=5)
    # a cluster's cells (signal elements): labels the filter confuses among each other only
    for labels in stats.clusters(f) if peak > 0 and L <= OUTLINE_LABELS else []:
        for i in labels:
            for j in labels:
                if M_f[i, j] / peak > m.threshold:
                    ax.add_patch(plt.Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=0.8))
    ax.set_title(f"filter {f}, SNR {stats.snr[f]:.1f}", fontsize=6)
    return image


def _label_sweep(m: Measurement):
    """Head error rate against the number of labels at the first, middle and last point."""
    import matplotlib.pyplot as plt

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
    return fig
