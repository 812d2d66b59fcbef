"""The commands of the stages: ``train``, ``measure`` and ``prune``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..config import MeasureConfig, PruneConfig, TrainConfig, resolve
from ..errors import ConfigError
from .base import OutFolder, console, progress_bar, torchrun, user_errors
from .flags import takes
from .tables import points_table, prune_table


def _size(path: Path) -> str:
    """A file's size for people (``3.2 MB``), or ``missing``."""
    if not path.is_file():
        return "missing"
    size = float(path.stat().st_size)
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


@takes(TrainConfig)
def train(
    old_labels: Annotated[Optional[str], typer.Option("--labels", hidden=True)] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")
    ] = False,
    *,
    options: dict,
    recipe: Optional[Path] = None,
) -> None:
    """Train a model; writes OUT/checkpoint.pt every epoch, then OUT/model.pt and OUT/metrics.json."""
    from ..train import train as run_train

    with user_errors():
        if old_labels is not None:  # measure's --labels is a label sweep; train's K labels are --num-labels
            raise ConfigError(
                f"train keeps the first K labels with --num-labels {old_labels}; --labels is measure's label sweep"
            )
        cfg = resolve(TrainConfig, recipe, options)

        def report(rec: dict) -> None:
            console.print(
                f"epoch {rec['epoch']}/{cfg.epochs}: train loss {rec['train_loss']:.4f} acc "
                f"{rec['train_accuracy']:.4f} | test acc {rec['test_accuracy']:.4f} | {rec['seconds']:.1f} s "
                f"({rec['images_per_second']:.0f} img/s)"
            )

        with torchrun(cfg.device), progress_bar() as progress:
            metrics = run_train(cfg, resume=resume, progress=progress, on_epoch=report)
        table = Table(title=f"{cfg.model} on {cfg.dataset}")
        for col in ("test accuracy", "params", "MACs", "run folder"):
            table.add_column(col)
        table.add_row(f"{metrics['test_accuracy']:.4f}", f"{metrics['params']:,}", f"{metrics['macs']:,}", str(cfg.out))
        console.print(table)


@takes(MeasureConfig, trust=True)
def measure(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt or pruned.pt written by prune-snr.")],
    out: OutFolder = ...,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG figures.")] = True,
    *,
    options: dict,
    recipe: Optional[Path] = None,
) -> None:
    """Measure layer accuracy, clusters, noise and SNR; writes measurement.json, fields.npz, heads.pt, PNGs."""
    from ..measure import measure_checkpoint

    with user_errors():
        cfg = resolve(MeasureConfig, recipe, options)
        with torchrun(cfg.device), progress_bar() as progress:
            result = measure_checkpoint(checkpoint, cfg, out=out, plots=plots, progress=progress)
        console.print(points_table(result))
        t = result.meta["timings"]
        console.print(
            f"wall {t['total_s']:.1f} s (features {t['features_train_s'] + t['features_test_s']:.1f} s, heads+fields "
            f"{t['heads_and_fields_s']:.1f} s), peak RSS {t['peak_rss_mb']:.0f} MB -> {out} "
            f"(fields.npz {_size(out / 'fields.npz')}; feature cache {result.meta['feature_cache_bytes'] / 1e6:.1f} MB)"
        )


@takes(PruneConfig, nested=("finetune",), trust=True)
def prune(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt written by prune-snr train.")],
    global_: Annotated[
        Optional[bool], typer.Option("--global/--per-layer", help="Shorthand for --allocation global / uniform.")
    ] = None,
    out: OutFolder = ...,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted fine-tuning in --out.")] = False,
    *,
    options: dict,
    recipe: Optional[Path] = None,
) -> None:
    """Prune filters (torch-pruning) to --target, optionally truncate and apply AFCC, then fine-tune; writes pruned.pt and report.json."""  # noqa: E501
    from ..prune import prune_checkpoint

    if global_ is not None and "allocation" not in options:
        options["allocation"] = "global" if global_ else "uniform"
    with user_errors():
        cfg = resolve(PruneConfig, recipe, options)
        with torchrun(cfg.device), progress_bar() as progress:
            _, report = prune_checkpoint(checkpoint, cfg, out=out, resume=resume, progress=progress)
        console.print(prune_table(report))
