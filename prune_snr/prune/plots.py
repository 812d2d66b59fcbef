"""PNG of kept channels per conv layer, before -> after."""

from __future__ import annotations

from pathlib import Path

from ..measure.plots import save_figure


def save_kept_channels(report: dict, path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    before, after = report["channels_before"], report["channels_after"]
    names = [n for n in before if n in after] or list(after)
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(names)), 3.5))
    x = range(len(names))
    ax.bar(x, [before.get(n, 0) for n in names], color="lightgray", label="before")
    ax.bar(x, [after[n] for n in names], color="tab:blue", label="kept")
    ax.set_xticks(list(x), [n.replace("features.", "").replace(".conv", "") for n in names], rotation=70, fontsize=6)
    ax.set_ylabel("output channels")
    ax.set_title(
        f"kept channels ({report['criterion']}, {report['allocation']}, target {report['target']} {report['metric']})"
    )
    ax.legend()
    return save_figure(fig, Path(path))
