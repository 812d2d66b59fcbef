"""The one place that parses flags, prints tables and exits with codes.

Commands only resolve options (defaults -> --recipe -> flags) and call one library function.
A :class:`PruneSnrError` becomes one red line on stderr and exit code 2 (``--debug`` shows the
traceback instead).
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..choices import DATASETS
from ..config import ImportConfig, MeasureConfig, PruneConfig, SearchConfig, TrainConfig, resolve
from ..config.stages import DATA_DIR
from ..errors import ConfigError, PruneSnrError
from ..runtime import DIST_TIMEOUT, distributed, is_main
from .flags import TrustModelCode, apply_trust, takes

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Measure per-filter label clusters and SNR in a trained CNN, then prune it with that measurement.",
)
# Not a terminal (CI logs, `| tee`): wide tables instead of rich's 80-column squeeze.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state = {"debug": False}
_show_python_warning = warnings.showwarning

# The command's own options (config options come from the config fields, flags.py).
OutFolder = Annotated[Path, typer.Option("--out", help="Output folder (required; a recipe's out is the training run).")]


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
    dist_timeout: Annotated[
        float,
        typer.Option(
            "--dist-timeout",
            help="Under torchrun: seconds a rank waits for the others (rank 0 "
            "alone trains the heads and joins the feature cache meanwhile) before the job stops.",
        ),
    ] = DIST_TIMEOUT,
) -> None:
    _state["debug"] = debug
    _state["dist_timeout"] = dist_timeout
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """prune-snr's own warnings as one yellow line (where and why); others as Python prints them."""
    if not str(filename).startswith(str(Path(__file__).parent.parent)) and category is not UserWarning:
        return _show_python_warning(message, category, filename, lineno, file, line)
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def progress_bar():
    """A live rich bar on a terminal; elsewhere one plain line per finished epoch or phase."""
    if not err_console.is_terminal:
        from ..progress import PlainProgress

        return PlainProgress(lambda line: err_console.print(line, highlight=False, markup=False) if is_main() else None)
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not is_main(),
    )


@contextlib.contextmanager
def torchrun(device: str | None):
    """Join torchrun's process group for the command; only rank 0 prints tables."""
    with distributed(device or "auto", timeout=_state.get("dist_timeout", DIST_TIMEOUT)):
        console.quiet = not is_main()
        yield


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


@app.command()
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
        if old_labels is not None:  # the spelling before --num-labels (measure --labels is a label sweep)
            raise ConfigError(
                f"train --labels is now --num-labels {old_labels} (keep the first K labels); "
                "--labels is measure's label sweep"
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


@app.command("import")
@takes(ImportConfig, recipe=False)
def import_(*, options: dict) -> None:
    """Bring your own model: write a prune-snr checkpoint from hub or state_dict weights, for measure/prune/search/export."""  # noqa: E501
    from ..train.importing import import_model

    with user_errors():
        cfg = resolve(ImportConfig, None, options)
        report = import_model(cfg)
        table = Table(title=f"import {cfg.model} ({report['source']})")
        for col in ("params", "MACs", "input", *(["test accuracy"] if "test_accuracy" in report else []), "checkpoint"):
            table.add_column(col)
        table.add_row(
            f"{report['params']:,}",
            f"{report['macs']:,}",
            f"{report['input_size']} px",
            *([f"{report['test_accuracy']:.4f}"] if "test_accuracy" in report else []),
            str(Path(cfg.out) / "model.pt"),
        )
        console.print(table)
        if report["reset_classifier"]:
            console.print(
                f"note: new classifier ({', '.join(report['reset_classifier'])}): fine-tune or "
                "train it before measuring"
            )
        console.print(
            "its training data is unknown: measure and prune carve their validation split from the test "
            "split (--val-source test)"
        )


@app.command()
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


@app.command()
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


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt or pruned.pt written by prune-snr.")],
    out: Annotated[Path, typer.Option("--out", help="The .onnx file to write.")],
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default: the exporter's).")] = None,
    batch: Annotated[str, typer.Option("--batch", help="dynamic, or a fixed batch size.")] = "dynamic",
    input_size: Annotated[
        Optional[tuple[int, int]], typer.Option("--input-size", help="H W (default: the model's).")
    ] = None,
    baseline: Annotated[
        Optional[Path],
        typer.Option(
            "--baseline", help="Unpruned checkpoint to compare latency with (default: the one a pruned.pt came from)."
        ),
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Latency repeats (median reported).")] = 30,
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write OUT.int8.onnx: static QDQ quantization calibrated on training images; "
            "reports its test accuracy and latency.",
        ),
    ] = False,
    calibration_size: Annotated[
        int, typer.Option("--calibration-size", help="Training images (seeded sample) that calibrate --int8.")
    ] = 512,
    dataset: Annotated[
        Optional[str], typer.Option("--dataset", help=DATASETS.help("Images that calibrate --int8 and grade it:"))
    ] = None,
    data_dir: Annotated[Optional[str], typer.Option("--data-dir", help=DATA_DIR)] = None,
    trust_model_code: TrustModelCode = False,
) -> None:
    """Export to ONNX, check it with onnx.checker and onnxruntime, and time original vs slimmed (and int8)."""
    from ..export import export_checkpoint

    apply_trust(trust_model_code)
    with user_errors():
        report = export_checkpoint(
            checkpoint,
            out,
            opset=opset,
            batch=batch,
            input_size=tuple(input_size) if input_size else None,
            baseline=baseline,
            repeats=repeats,
            int8=int8,
            calibration_size=calibration_size,
            dataset=dataset,
            data_dir=data_dir,
        )
        path = Path(report["onnx"])
        table = Table(title=f"ONNX export of {checkpoint} (onnxruntime CPU, median of {repeats} paired rounds)")
        for col in ("batch", "slimmed ms", "original ms", "speedup"):
            table.add_column(col, justify="right")
        for key, t in report["latency_s"].items():
            base = report.get("baseline", {}).get("latency_s", {}).get(key)
            speedup = report.get("speedup", {}).get(
                key
            )  # the median of paired rounds, as in model.onnx.json, not base / t
            table.add_row(
                key.removeprefix("batch_"),
                f"{t * 1e3:.2f}",
                f"{base * 1e3:.2f}" if base else "-",
                f"{speedup:.2f}x" if speedup else "-",
            )
        console.print(table)
        if int8:
            q = report["int8"]
            console.print(
                f"int8 {q['onnx']}: test accuracy {q['accuracy']:.4f} (fp32 {q['fp32_accuracy']:.4f}, "
                f"{100 * (q['accuracy'] - q['fp32_accuracy']):+.2f} pts); "
                + ", ".join(
                    f"{k.replace('_', ' ')} {v * 1e3:.2f} ms ({q['speedup_over_fp32'][k]:.2f}x fp32)"
                    for k, v in q["latency_s"].items()
                )
            )
        diffs = ", ".join(f"{k}: {v:.1e}" for k, v in report.items() if k.endswith("max_abs_diff"))
        console.print(
            f"{path} ({report['bytes'] / 1e6:.2f} MB): onnx.checker OK; onnxruntime vs PyTorch max abs diff {diffs}"
        )
        odd = report["unaligned_conv_channels"]
        if odd:
            console.print(
                f"note: {len(odd)} convolutions have channel counts that are not multiples of 8 (e.g. "
                f"{odd[0]}); onnxruntime runs them on a slower CPU path. Prune with --round-to 8 (the "
                "default; 16 on AVX-512 CPUs) for speed."
            )


@app.command()
@takes(
    SearchConfig,
    include=("metric", "measurement", "round_to", "bn_recalibrate", "dataset", "data_dir", "seed", "device"),
    trust=True,
)
def search(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt written by prune-snr train.")],
    out: Annotated[Path, typer.Option("--out", help="Study folder: study.db, trials/, pareto.png.")] = ...,
    worker_index: Annotated[
        Optional[int],
        typer.Option(
            "--worker-index",
            help="This process's index when you start several workers on "
            "one --storage yourself: its own random stream.",
        ),
    ] = None,
    *,
    options: dict,
    recipe: Optional[Path] = None,
) -> None:
    """Multi-objective Optuna search (validation accuracy vs params/MACs/latency) over pruning configurations."""
    from ..search import run_search, run_workers

    with user_errors():
        cfg = resolve(SearchConfig, recipe, options)
        with progress_bar() as progress:
            if cfg.workers > 1:
                study = run_workers(checkpoint, cfg, out=out, workers=cfg.workers, progress=progress)
            else:
                study = run_search(checkpoint, cfg, out=out, progress=progress, worker=worker_index)
        _show_pareto(study, out)
        if cfg.workers > 1 and cfg.storage is None:
            console.print(f"dashboard: optuna-dashboard {(out / 'study.log').resolve()}  (binds 127.0.0.1:8080)")
        elif cfg.storage is None:
            console.print(
                f"dashboard: optuna-dashboard sqlite:///{(out / 'study.db').resolve()}  (binds 127.0.0.1:8080)"
            )
        if cfg.pick:
            _pick(study, cfg.pick, out)


@app.command("pick")
@takes(SearchConfig, only=("storage", "study_name"), recipe=False)
def pick_cmd(
    out: Annotated[Path, typer.Argument(help="Study folder written by prune-snr search.")],
    rule: Annotated[str, typer.Option("--pick", help='Conditions, e.g. "params<=0.5,accuracy>=0.9".')],
    *,
    options: dict,
) -> None:
    """Write the most accurate Pareto trial meeting --pick to OUT/pruned.pt."""
    from ..search import load_study

    with user_errors():
        cfg = resolve(SearchConfig, None, options)
        _pick(load_study(out, cfg.storage, cfg.study_name), rule, out)


def _show_pareto(study, out: Path) -> None:
    from ..search import pareto_rows, save_pareto_plot

    rows = pareto_rows(study)
    table = Table(title=f"Pareto front of {study.study_name} ({len(study.trials)} trials; val decides, test grades)")
    proxied = any(r["full_accuracy"] is not None for r in rows)
    for col in (
        "#",
        "val (proxy)" if proxied else "val",
        "test (proxy)" if proxied else "test",
        *(["val (full)", "test (full)"] if proxied else []),
        "kept",
        "criterion",
        "alloc",
        "target",
        "θ",
        "ft",
        "trunc",
        "afcc",
    ):
        table.add_column(col, justify="right", no_wrap=True)

    def fmt(x):
        return "-" if x is None else f"{x:.4f}"

    for r in rows:
        full = [fmt(r["full_val_accuracy"]), fmt(r["full_accuracy"])] if proxied else []
        table.add_row(
            str(r["trial"]),
            fmt(r["val_accuracy"]),
            fmt(r["accuracy"]),
            *full,
            f"{r['kept']:.3f}",
            r["criterion"],
            r["allocation"],
            f"{r['target']:.2f}",
            str(r.get("threshold", "-")),
            str(r["finetune_epochs"]),
            "y" if r.get("truncate") else "n",
            "y" if r.get("afcc") else "n",
        )
    console.print(table)
    if rows:
        console.print(f"Pareto plot: {save_pareto_plot(study, out / 'pareto.png')}")


def _pick(study, rule: str, out: Path) -> None:
    from ..search import write_pick

    trial, chosen, target = write_pick(study, rule, out)
    console.print(
        f"picked trial {trial.number} (val accuracy {chosen['val_accuracy']:.4f}, test {chosen['accuracy']:.4f}, "
        f"kept {trial.values[1]:.3f}) -> {target}"
    )


def prune_table(report: dict) -> Table:
    before, after = report["before"], report["after"]
    table = Table(
        title=f"prune --target {report['target']} ({report['metric']}), criterion {report['criterion']}, "
        f"allocation {report['allocation']} on {report['dataset']} (test split, seed {report['seed']})"
    )
    for col in ("", "accuracy", "params", "MACs"):
        table.add_column(col, justify="right")
    table.add_row("before", f"{before['accuracy']:.4f}", f"{before['params']:,}", f"{before['macs']:,}")
    cut, blocks = report.get("truncation") or {}, report.get("blocks") or {}
    if cut.get("cut_after"):
        table.add_row(f"cut after {cut['cut_after']}", f"{cut['accuracy_after_cut']:.4f}", "", "")
    if blocks.get("dropped"):
        table.add_row(
            f"dropped {', '.join(blocks['dropped'])}",
            f"{blocks['accuracy_after_drop']:.4f}",
            f"{blocks['params']:,}",
            f"{blocks['macs']:,}",
        )
    mid, recal = report.get("pruned_before_finetune"), report.get("bn_recalibration")
    if recal:
        table.add_row("pruned, BatchNorm as before", f"{recal['without']['accuracy']:.4f}", "", "")
        table.add_row(
            f"pruned, BatchNorm on {recal['batches']} batches",
            f"{mid['accuracy']:.4f}",
            f"{mid['params']:,}",
            f"{mid['macs']:,}",
        )
    elif mid:
        table.add_row("pruned, no fine-tune", f"{mid['accuracy']:.4f}", f"{mid['params']:,}", f"{mid['macs']:,}")
    table.add_row("after", f"{after['accuracy']:.4f}", f"{after['params']:,}", f"{after['macs']:,}")
    table.add_row(
        "change",
        f"{100 * (after['accuracy'] - before['accuracy']):+.2f} pts",
        f"-{1 - after['params'] / before['params']:.1%}",
        f"-{1 - after['macs'] / before['macs']:.1%}",
    )
    for key, t in report.get("latency", {}).items():
        table.add_row(
            f"latency {key.replace('_', ' ')}",
            f"{t['original_s'] * 1e3:.2f} -> {t['pruned_s'] * 1e3:.2f} ms",
            f"{t['fraction']:.2f} of original",
            "",
        )
    return table


def points_table(result) -> Table:
    from ..measure.result import paper_accuracy

    split = result.config.fields_split
    table = Table(
        title=f"{result.meta['model']} on {result.meta['dataset']} (heads: val and test accuracy; fields on the "
        f"{split} split, clusters as {result.clusters}; seed {result.meta['seed']})"
    )
    table.add_column("point", no_wrap=True)
    for col in ("filters", "val acc", "test acc", "SNR", "noise/f", "clust/f", "clust size", "labels/f", "dead"):
        table.add_column(col, justify="right")
    for p in result.points:
        val = p.get("val_accuracy")
        table.add_row(
            p["name"],
            str(p["n_filters"]),
            "-" if val is None else f"{val:.4f}",
            f"{paper_accuracy(p):.4f}",
            f"{p['snr']:.3f}",
            f"{p['noise_per_filter']:.2f}",
            f"{p['clusters_per_filter']:.2f}",
            f"{p['cluster_size']:.2f}",
            "-" if p.get("clustered_labels_per_filter") is None else f"{p['clustered_labels_per_filter']:.2f}",
            f"{p['dead_fraction']:.2f}",
        )
    return table


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
