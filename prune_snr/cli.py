"""The one place that parses flags, prints tables and exits with codes.

Commands only resolve options (defaults -> --recipe -> flags) and call one library function.
A :class:`PruneSnrError` becomes one red line on stderr and exit code 2 (``--debug`` shows the
traceback instead).
"""
from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .errors import ConfigError, PruneSnrError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure per-filter label clusters and SNR in a trained CNN, then prune it with that measurement.")
console = Console()
err_console = Console(stderr=True)
_state = {"debug": False}

# Options shared by several commands, declared once.
Recipe = Annotated[Optional[Path], typer.Option("--recipe", help="YAML recipe; flags given here override its keys.")]
Dataset = Annotated[Optional[str], typer.Option("--dataset", help="cifar10, cifar100, imagenet, fashion-mnist, synthetic[:K], imagefolder:PATH.")]
DataDir = Annotated[Optional[str], typer.Option("--data-dir", help="Folder holding the dataset files.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda[:N].")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed.")]
Amp = Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bfloat16 autocast.")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Batch size.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output folder.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False) -> None:
    _state["debug"] = debug


def progress_bar() -> Progress:
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True)


@contextlib.contextmanager
def user_errors():
    """Turn the project's errors into one line and exit code 2."""
    try:
        yield
    except PruneSnrError as exc:
        if _state["debug"]:
            raise
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted[/]; the last finished epoch/step is saved, re-run with --resume")
        raise typer.Exit(130) from None


def _str(value):
    return None if value is None else str(value)


@app.command()
def train(
    recipe: Recipe = None,
    model: Annotated[Optional[str], typer.Option("--model", help="vgg16, efficientnet_b0, timm:NAME or torchvision:NAME.")] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    width_mult: Annotated[Optional[float], typer.Option("--width-mult", help="Scale every conv width (vgg16).")] = None,
    labels: Annotated[Optional[int], typer.Option("--labels", help="Keep only the first K labels.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    batch_size: BatchSize = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help="onecycle, cosine or constant.")] = None,
    seed: Seed = None,
    device: Device = None,
    amp: Amp = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes.")] = None,
    out: Out = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
) -> None:
    """Train a model; writes OUT/checkpoint.pt every epoch, then OUT/model.pt and OUT/metrics.json."""
    from .config import TrainConfig, resolve
    from .train import train as run_train

    with user_errors():
        cfg = resolve(TrainConfig, recipe, dict(model=model, dataset=dataset, data_dir=data_dir, width_mult=width_mult, labels=labels,
                                                epochs=epochs, batch_size=batch_size, lr=lr, schedule=schedule, seed=seed, device=device,
                                                amp=amp, workers=workers, out=_str(out)))

        def report(rec: dict) -> None:
            console.print(f"epoch {rec['epoch']}/{cfg.epochs}: train loss {rec['train_loss']:.4f} acc {rec['train_accuracy']:.4f} | "
                          f"test acc {rec['test_accuracy']:.4f} | {rec['seconds']:.1f} s ({rec['images_per_second']:.0f} img/s)")

        with progress_bar() as progress:
            metrics = run_train(cfg, resume=resume, progress=progress, on_epoch=report)
        table = Table(title=f"{cfg.model} on {cfg.dataset}")
        for col in ("test accuracy", "params", "MACs", "run folder"):
            table.add_column(col)
        table.add_row(f"{metrics['test_accuracy']:.4f}", f"{metrics['params']:,}", f"{metrics['macs']:,}", str(cfg.out))
        console.print(table)


@app.command()
def measure(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt or pruned.pt written by prune-snr.")],
    recipe: Recipe = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    points: Annotated[Optional[str], typer.Option("--points", help="all, or comma-separated module names.")] = None,
    pool: Annotated[Optional[int], typer.Option("--pool", help="Adaptive average pooling p (head sees C*p*p features).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="θ for clusters and noise.")] = None,
    head_epochs: Annotated[Optional[int], typer.Option("--head-epochs", help="Epochs of each linear head.")] = None,
    labels: Annotated[Optional[str], typer.Option("--labels", help="Label sweep: label counts, e.g. 3,5,10.")] = None,
    label_seed: Annotated[Optional[int], typer.Option("--label-seed", help="Draw the K labels at random with this seed.")] = None,
    fields_split: Annotated[Optional[str], typer.Option("--fields-split", help="Split for the class means: test or train.")] = None,
    expanded: Annotated[Optional[bool], typer.Option("--expanded/--no-expanded", help="EfficientNet: also measure depthwise outputs.")] = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    device: Device = None,
    amp: Amp = None,
    out: Out = None,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG figures.")] = True,
) -> None:
    """Measure layer accuracy, clusters, noise and SNR; writes measurement.json, fields.npz, heads.pt, PNGs."""
    from .checkpoint import load
    from .config import MeasureConfig, resolve
    from .measure import measure as run_measure
    from .measure.plots import save_plots

    with user_errors():
        cfg = resolve(MeasureConfig, recipe, dict(dataset=dataset, data_dir=data_dir, points=points, pool=pool, threshold=threshold,
                                                  head_epochs=head_epochs, label_sweep=labels, label_seed=label_seed, fields_split=fields_split,
                                                  expanded=expanded, batch_size=batch_size, seed=seed, device=device, amp=amp, out=_str(out)))
        if not cfg.out:
            raise ConfigError("measure needs --out DIR")
        model = load(checkpoint)
        with progress_bar() as progress:
            result = run_measure(model, cfg.dataset, data_dir=cfg.data_dir, points=cfg.points, pool=cfg.pool, threshold=cfg.threshold,
                                 head_epochs=cfg.head_epochs, head_lr=cfg.head_lr, head_batch_size=cfg.head_batch_size,
                                 label_sweep=cfg.label_sweep, label_seed=cfg.label_seed, fields_split=cfg.fields_split,
                                 expanded=cfg.expanded, batch_size=cfg.batch_size, seed=cfg.seed, device=cfg.device, amp=cfg.amp,
                                 progress=progress)
        result.save(cfg.out)
        if plots:
            save_plots(result, cfg.out)
        from .config import dump_yaml
        from .checkpoint import atomic_save_text

        atomic_save_text(Path(cfg.out) / "config.yaml", dump_yaml(cfg))
        console.print(points_table(result))
        t = result.meta["timings"]
        console.print(f"wall {t['total_s']:.1f} s (features {t['features_train_s'] + t['features_test_s']:.1f} s, heads+fields "
                      f"{t['heads_and_fields_s']:.1f} s), peak RSS {t['peak_rss_mb']:.0f} MB -> {cfg.out}")


def points_table(result) -> Table:
    table = Table(title=f"{result.meta['model']} on {result.meta['dataset']} (test split, seed {result.meta['seed']})")
    table.add_column("point", no_wrap=True)
    for col in ("filters", "acc", "SNR", "noise/f", "clust/f", "clust size", "dead"):
        table.add_column(col, justify="right")
    for p in result.points:
        table.add_row(p["name"], str(p["n_filters"]), f"{p['accuracy']:.4f}", f"{p['snr']:.3f}", f"{p['noise_per_filter']:.2f}",
                      f"{p['clusters_per_filter']:.2f}", f"{p['cluster_size']:.2f}", f"{p['dead_fraction']:.2f}")
    return table


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
