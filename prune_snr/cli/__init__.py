"""The one place that parses flags, prints tables and exits with codes.

Commands only resolve options (defaults -> --recipe -> flags) and call one library function.
A :class:`PruneSnrError` becomes one red line on stderr and exit code 2 (``--debug`` shows the
traceback instead).
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from .choices import (
    ALLOCATIONS,
    CACHE_DTYPES,
    CLUSTERS,
    CRITERIA,
    CUTS,
    DATASETS,
    FIELDS_SPLITS,
    FINETUNE_KEEP,
    GROUP_REDUCTIONS,
    HEAD_DTYPES,
    HEAD_OPTIMIZERS,
    METRICS,
    MODELS,
    PRESET_CHOICES,
    SCHEDULES,
    SPACES,
    VAL_SOURCES,
)
from .errors import ConfigError, PruneSnrError
from .runtime import DIST_TIMEOUT, distributed, is_main

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Measure per-filter label clusters and SNR in a trained CNN, then prune it with that measurement.")
# Not a terminal (CI logs, `| tee`): wide tables instead of rich's 80-column squeeze.
console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)
_state = {"debug": False}
_show_python_warning = warnings.showwarning

# Options shared by several commands, declared once.
Recipe = Annotated[Optional[Path], typer.Option("--recipe", help="YAML recipe; flags given here override its keys.")]
Dataset = Annotated[Optional[str], typer.Option("--dataset", help=DATASETS.help())]
DataDir = Annotated[Optional[str], typer.Option("--data-dir", help="Folder holding the dataset files.")]
Device = Annotated[Optional[str], typer.Option("--device", help="auto, cpu or cuda[:N].")]
Seed = Annotated[Optional[int], typer.Option("--seed", help="Random seed.")]
BnRecalibrate = Annotated[Optional[int], typer.Option("--bn-recalibrate", help="After pruning, re-estimate every BatchNorm's running "
    "statistics on N training batches (no gradients) before grading and fine-tuning; the report gives the accuracy both ways. 0 = off.")]
Amp = Annotated[Optional[bool], typer.Option("--amp/--no-amp", help="bfloat16 autocast.")]
Workers = Annotated[Optional[int], typer.Option("--workers", help="DataLoader worker processes for every pass over images (default: none "
    "where no GPU is visible; on a GPU machine its cores per torchrun rank less one, at most 8).")]
BatchSize = Annotated[Optional[int], typer.Option("--batch-size", help="Batch size.")]
Out = Annotated[Optional[Path], typer.Option("--out", help="Output folder.")]
ModelKwargs = Annotated[Optional[str], typer.Option("--model-kwargs", help="JSON keyword arguments of a MODULE:CALLABLE architecture, "
    "e.g. '{\"width\": 2}'.")]
TrustModelCode = Annotated[bool, typer.Option("--trust-model-code", help="Let a checkpoint of a MODULE:CALLABLE architecture import its "
    "module (that runs its code).")]
ValSource = Annotated[Optional[str], typer.Option("--val-source",
    help=VAL_SOURCES.help("Where the validation split comes from:") + " Default: test for an imported checkpoint, else train.")]
ValFraction = Annotated[Optional[float], typer.Option("--val-fraction", help="Seeded, label-stratified part of the training split held "
    "out for decisions (default 0.1).")]
SplitSeed = Annotated[Optional[int], typer.Option("--split-seed", help="Redraw the validation split with this seed from the images the "
    "checkpoint's training held out (use a --val-fraction below what it held out); varies the split between repeated trials.")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors.")] = False,
          dist_timeout: Annotated[float, typer.Option("--dist-timeout", help="Under torchrun: seconds a rank waits for the others (rank 0 "
              "alone trains the heads and joins the feature cache meanwhile) before the job stops.")] = DIST_TIMEOUT) -> None:
    _state["debug"] = debug
    _state["dist_timeout"] = dist_timeout
    warnings.showwarning = _one_line_warning


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """prune-snr's own warnings as one yellow line (where and why); others as Python prints them."""
    if not str(filename).startswith(str(Path(__file__).parent)) and category is not UserWarning:
        return _show_python_warning(message, category, filename, lineno, file, line)
    err_console.print(f"[yellow]warning:[/] {message}", highlight=False, soft_wrap=True)


def progress_bar():
    """A live rich bar on a terminal; elsewhere one plain line per finished epoch or phase."""
    if not err_console.is_terminal:
        from .progress import PlainProgress

        return PlainProgress(lambda line: err_console.print(line, highlight=False, markup=False) if is_main() else None)
    return Progress(SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=err_console, transient=True, disable=not is_main())


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


def _trust(trust_model_code: bool) -> None:
    if trust_model_code:
        from .models.user_code import TRUST_ENV

        os.environ[TRUST_ENV] = "1"


def _flags(given: dict, *not_options: str) -> dict:
    """A command's parameters (its ``locals()`` on entry) as config overrides: every flag is written
    once, in the signature, under its config key; paths become strings. ``--trust-model-code`` is no option
    of a stage: it holds for the whole process (and the worker processes it starts), so it goes to the environment."""
    _trust(given.get("trust_model_code", False))
    return {k: str(v) if isinstance(v, Path) else v for k, v in given.items() if k not in ("recipe", "trust_model_code", *not_options)}


@app.command()
def train(
    recipe: Recipe = None,
    model: Annotated[Optional[str], typer.Option("--model", help=MODELS.help())] = None,
    model_kwargs: ModelKwargs = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    width_mult: Annotated[Optional[float], typer.Option("--width-mult", help="Scale every conv width (vgg16).")] = None,
    labels: Annotated[Optional[int], typer.Option("--num-labels", help="Keep only the first K labels.")] = None,
    old_labels: Annotated[Optional[str], typer.Option("--labels", hidden=True)] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Image side in pixels (default: 32; ImageNet 224; an image "
        "folder's own size).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs")] = None,
    batch_size: BatchSize = None,
    lr: Annotated[Optional[float], typer.Option("--lr", help="Peak learning rate.")] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", help=SCHEDULES.help("Learning-rate schedule:"))] = None,
    seed: Seed = None,
    device: Device = None,
    amp: Amp = None,
    augment: Annotated[Optional[bool], typer.Option("--augment/--no-augment", help="Random crop + flip on the training set.")] = None,
    workers: Workers = None,
    val_fraction: ValFraction = None,
    out: Out = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
) -> None:
    """Train a model; writes OUT/checkpoint.pt every epoch, then OUT/model.pt and OUT/metrics.json."""
    flags = _flags(locals(), "resume", "old_labels")
    from .config import TrainConfig, resolve
    from .train import train as run_train
    with user_errors():
        if old_labels is not None:  # the spelling before --num-labels (measure --labels is a label sweep)
            raise ConfigError(f"train --labels is now --num-labels {old_labels} (keep the first K labels); "
                              "--labels is measure's label sweep")
        cfg = resolve(TrainConfig, recipe, flags)

        def report(rec: dict) -> None:
            console.print(f"epoch {rec['epoch']}/{cfg.epochs}: train loss {rec['train_loss']:.4f} acc {rec['train_accuracy']:.4f} | "
                          f"test acc {rec['test_accuracy']:.4f} | {rec['seconds']:.1f} s ({rec['images_per_second']:.0f} img/s)")

        with torchrun(cfg.device), progress_bar() as progress:
            metrics = run_train(cfg, resume=resume, progress=progress, on_epoch=report)
        table = Table(title=f"{cfg.model} on {cfg.dataset}")
        for col in ("test accuracy", "params", "MACs", "run folder"):
            table.add_column(col)
        table.add_row(f"{metrics['test_accuracy']:.4f}", f"{metrics['params']:,}", f"{metrics['macs']:,}", str(cfg.out))
        console.print(table)


@app.command("import")
def import_(
    model: Annotated[str, typer.Argument(help="Architecture: " + MODELS.help())],
    num_classes: Annotated[int, typer.Option("--num-classes", help="Output labels of the model.")],
    model_kwargs: ModelKwargs = None,
    pretrained: Annotated[Optional[bool], typer.Option("--pretrained", help="Hub weights (timm/torchvision; their cache when "
        "offline).")] = None,
    weights: Annotated[Optional[Path], typer.Option("--weights", help="A state_dict: .safetensors, or .pt/.pth read with "
        "weights_only=True.")] = None,
    input_size: Annotated[Optional[int], typer.Option("--input-size", help="Image side in pixels (default: 224 for timm:/torchvision:, "
        "else 32).")] = None,
    in_chans: Annotated[Optional[int], typer.Option("--in-chans", help="Input channels (default 3).")] = None,
    reset_classifier: Annotated[Optional[bool], typer.Option("--reset-classifier", help="Start a new classifier when the weights' label "
        "count differs.")] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    device: Device = None,
    out: Annotated[Path, typer.Option("--out", help="Folder for model.pt (+ metrics.json with --dataset).")] = ...,
) -> None:
    """Bring your own model: write a prune-snr checkpoint from hub or state_dict weights, for measure/prune/search/export."""
    flags = _flags(locals())
    from .config import ImportConfig, resolve
    from .train.importing import import_model
    with user_errors():
        cfg = resolve(ImportConfig, None, flags)
        report = import_model(cfg)
        table = Table(title=f"import {cfg.model} ({report['source']})")
        for col in ("params", "MACs", "input", *(["test accuracy"] if "test_accuracy" in report else []), "checkpoint"):
            table.add_column(col)
        table.add_row(f"{report['params']:,}", f"{report['macs']:,}", f"{report['input_size']} px",
                      *([f"{report['test_accuracy']:.4f}"] if "test_accuracy" in report else []), str(out / "model.pt"))
        console.print(table)
        if report["reset_classifier"]:
            console.print(f"note: new classifier ({', '.join(report['reset_classifier'])}): fine-tune or train it before measuring")
        console.print("its training data is unknown: measure and prune carve their validation split from the test split (--val-source "
            "test)")


@app.command()
def measure(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt or pruned.pt written by prune-snr.")],
    trust_model_code: TrustModelCode = False,
    recipe: Recipe = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    points: Annotated[Optional[str], typer.Option("--points", help="all, or comma-separated module names.")] = None,
    pool: Annotated[Optional[int], typer.Option("--pool", help="Adaptive average pooling p (head sees C*p*p features).")] = None,
    threshold: Annotated[Optional[float], typer.Option("--threshold", help="θ for clusters and noise.")] = None,
    clusters: Annotated[Optional[str], typer.Option("--clusters", help=CLUSTERS.help("What a cluster is:"))] = None,
    head_epochs: Annotated[Optional[int], typer.Option("--head-epochs", help="Epochs of each linear head (the cap with early "
        "stopping).")] = None,
    head_lr: Annotated[Optional[float], typer.Option("--head-lr", help="Adam's learning rate for the heads (cosine over "
        "--head-epochs).")] = None,
    head_patience: Annotated[Optional[int], typer.Option("--head-patience", help="Stop a head after this many epochs without a lower "
        "validation loss (0 = always --head-epochs).")] = None,
    head_min_epochs: Annotated[Optional[int], typer.Option("--head-min-epochs", help="Epochs every head trains before it may "
        "stop.")] = None,
    head_optimizer: Annotated[Optional[str], typer.Option("--head-optimizer", help=HEAD_OPTIMIZERS.help("The heads' optimiser:"))] = None,
    preset: Annotated[Optional[str], typer.Option("--preset", help=PRESET_CHOICES.help("Options taken together (flags given beside it "
        "win):"))] = None,
    label_sweep: Annotated[Optional[str], typer.Option("--labels", help="Label sweep: label counts, e.g. 3,5,10.")] = None,
    label_seed: Annotated[Optional[int], typer.Option("--label-seed", help="Draw the K labels at random with this seed.")] = None,
    fields_split: Annotated[Optional[str], typer.Option("--fields-split", help=FIELDS_SPLITS.help("Split for the class means:"))] = None,
    val_fraction: ValFraction = None,
    val_source: ValSource = None,
    split_seed: SplitSeed = None,
    memory_budget: Annotated[Optional[float], typer.Option("--memory-budget", help="GiB the heads and the fields (phase 3, in chunks of "
        "filters) may hold at once (default: a quarter of the RAM).")] = None,
    cache_dtype: Annotated[Optional[str], typer.Option("--cache-dtype", help=CACHE_DTYPES.help("Feature cache:"))] = None,
    head_dtype: Annotated[Optional[str], typer.Option("--head-dtype", help=HEAD_DTYPES.help("The heads' training rows and "
        "matmuls:"))] = None,
    train_per_class: Annotated[Optional[int], typer.Option("--train-per-class", help="Read and train the heads on at most N training "
        "images per label (seeded, label-stratified; the validation images stay the same).")] = None,
    expanded: Annotated[Optional[bool], typer.Option("--expanded/--no-expanded", help="EfficientNet: also measure depthwise "
        "outputs.")] = None,
    save_fields: Annotated[Optional[str], typer.Option("--save-fields", help="Field matrices fields.npz keeps per point: the N "
        "highest-SNR filters' (default 16), or all; every filter's statistics are kept.")] = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    device: Device = None,
    amp: Amp = None,
    workers: Workers = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder (required; a recipe's out is the training run).")] = ...,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write PNG figures.")] = True,
) -> None:
    """Measure layer accuracy, clusters, noise and SNR; writes measurement.json, fields.npz, heads.pt, PNGs."""
    flags = _flags(locals(), "checkpoint", "out", "plots")
    from .config import MeasureConfig, resolve
    from .measure import measure_checkpoint
    with user_errors():
        cfg = resolve(MeasureConfig, recipe, flags)
        with torchrun(cfg.device), progress_bar() as progress:
            result = measure_checkpoint(checkpoint, cfg, out=out, plots=plots, progress=progress)
        console.print(points_table(result))
        t = result.meta["timings"]
        console.print(f"wall {t['total_s']:.1f} s (features {t['features_train_s'] + t['features_test_s']:.1f} s, heads+fields "
                      f"{t['heads_and_fields_s']:.1f} s), peak RSS {t['peak_rss_mb']:.0f} MB -> {out} "
                      f"(fields.npz {_size(out / 'fields.npz')}; feature cache {result.meta['feature_cache_bytes'] / 1e6:.1f} MB)")


@app.command()
def prune(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt written by prune-snr train.")],
    trust_model_code: TrustModelCode = False,
    recipe: Recipe = None,
    target: Annotated[Optional[float], typer.Option("--target", help="Fraction of the prunable metric to remove, in (0, 1).")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help=METRICS.help("What --target counts:"))] = None,
    latency_batch: Annotated[Optional[int], typer.Option("--latency-batch", help="Batch size that --metric latency times (default 32; the "
        "report gives 1 and 32).")] = None,
    criterion: Annotated[Optional[str], typer.Option("--criterion", help=CRITERIA.help("Filter ranking inside a layer:"))] = None,
    allocation: Annotated[Optional[str], typer.Option("--allocation", help=ALLOCATIONS.help("How the budget is spread over "
        "layers:"))] = None,
    global_: Annotated[Optional[bool], typer.Option("--global/--per-layer", help="Shorthand for --allocation global / uniform.")] = None,
    group_reduction: Annotated[Optional[str], typer.Option("--group-reduction", help=GROUP_REDUCTIONS.help("Aggregate coupled layers' "
        "SNR:"))] = None,
    iterative_steps: Annotated[Optional[int], typer.Option("--iterative-steps", help="Prune in this many steps.")] = None,
    remeasure: Annotated[Optional[bool], typer.Option("--remeasure/--no-remeasure", help="With --iterative-steps: measure the pruned "
        "model anew between steps.")] = None,
    round_to: Annotated[Optional[int], typer.Option("--round-to", help="Keep channel counts multiples of this (default: ONNX Runtime's "
        "CPU alignment here, 16 with AVX-512 else 8; 1 = off).")] = None,
    truncate: Annotated[Optional[bool], typer.Option("--truncate/--no-truncate", help="Cut layers that add < delta accuracy.")] = None,
    cut: Annotated[Optional[str], typer.Option("--cut", help=CUTS.help("Where --truncate cuts:"))] = None,
    drop_blocks: Annotated[Optional[bool], typer.Option("--drop-blocks/--no-drop-blocks", help="Drop residual blocks (identity shortcut) "
        "while validation accuracy stays within delta.")] = None,
    delta: Annotated[Optional[float], typer.Option("--delta", help="Truncation threshold δ (accuracy fraction; 0.005 = 0.5 "
        "points).")] = None,
    afcc: Annotated[Optional[bool], typer.Option("--afcc/--no-afcc", help="Keep classifier weights inside filter clusters only.")] = None,
    bn_recalibrate: BnRecalibrate = None,
    refit_epochs: Annotated[Optional[int], typer.Option("--refit-epochs", help="Retrain the classifier on the pruned model's frozen "
        "features for up to N epochs (a measured head's training, early stopping on validation) before fine-tuning; gives width-pruned "
            "and cut models equal training.")] = None,
    finetune_epochs: Annotated[Optional[int], typer.Option("--finetune-epochs")] = None,
    finetune_lr: Annotated[Optional[float], typer.Option("--finetune-lr")] = None,
    distill: Annotated[Optional[bool], typer.Option("--distill/--no-distill", help="Distill from the unpruned model while "
        "fine-tuning.")] = None,
    finetune_keep: Annotated[Optional[str], typer.Option("--finetune-keep", help=FINETUNE_KEEP.help("Which model fine-tuning "
        "leaves:"))] = None,
    measurement: Annotated[Optional[Path], typer.Option("--measurement", help="Folder of a prune-snr measure run of this model.")] = None,
    val_fraction: ValFraction = None,
    val_source: ValSource = None,
    split_seed: SplitSeed = None,
    exact_target: Annotated[Optional[bool], typer.Option("--exact-target/--closest-target", help="An unreachable --target is an error "
        "(default: prune to the closest reachable point, with a warning).")] = None,
    graph_timeout: Annotated[Optional[float], typer.Option("--graph-timeout", help="Seconds torch-pruning may take to trace and group the "
        "model's channels before prune stops with one line (default 300).")] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    batch_size: BatchSize = None,
    seed: Seed = None,
    device: Device = None,
    amp: Amp = None,
    workers: Workers = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder (required; a recipe's out is the training run).")] = ...,
    resume: Annotated[bool, typer.Option("--resume", help="Continue an interrupted fine-tuning in --out.")] = False,
) -> None:
    """Prune filters (torch-pruning) to --target, optionally truncate and apply AFCC, then fine-tune; writes pruned.pt and report.json."""
    if global_ is not None and allocation is None:
        allocation = "global" if global_ else "uniform"
    flags = _flags(locals(), "checkpoint", "out", "resume", "global_")
    from .config import PruneConfig, resolve
    from .prune import prune_checkpoint
    with user_errors():
        cfg = resolve(PruneConfig, recipe, flags)
        with torchrun(cfg.device), progress_bar() as progress:
            _, report = prune_checkpoint(checkpoint, cfg, out=out, resume=resume, progress=progress)
        console.print(prune_table(report))


@app.command()
def export(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt or pruned.pt written by prune-snr.")],
    out: Annotated[Path, typer.Option("--out", help="The .onnx file to write.")],
    opset: Annotated[Optional[int], typer.Option("--opset", help="ONNX opset (default: the exporter's).")] = None,
    batch: Annotated[str, typer.Option("--batch", help="dynamic, or a fixed batch size.")] = "dynamic",
    input_size: Annotated[Optional[tuple[int, int]], typer.Option("--input-size", help="H W (default: the model's).")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="Unpruned checkpoint to compare latency with (default: the one a "
        "pruned.pt came from).")] = None,
    repeats: Annotated[int, typer.Option("--repeats", help="Latency repeats (median reported).")] = 30,
    int8: Annotated[bool, typer.Option("--int8", help="Also write OUT.int8.onnx: static QDQ quantization calibrated on training images; "
        "reports its test accuracy and latency.")] = False,
    calibration_size: Annotated[int, typer.Option("--calibration-size", help="Training images (seeded sample) that calibrate "
        "--int8.")] = 512,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    trust_model_code: TrustModelCode = False,
) -> None:
    """Export to ONNX, check it with onnx.checker and onnxruntime, and time original vs slimmed (and int8)."""
    from .export import export_checkpoint

    _trust(trust_model_code)
    with user_errors():
        report = export_checkpoint(checkpoint, out, opset=opset, batch=batch, input_size=tuple(input_size) if input_size else None,
                                   baseline=baseline, repeats=repeats, int8=int8, calibration_size=calibration_size, dataset=dataset,
                                   data_dir=data_dir)
        path = Path(report["onnx"])
        table = Table(title=f"ONNX export of {checkpoint} (onnxruntime CPU, median of {repeats} paired rounds)")
        for col in ("batch", "slimmed ms", "original ms", "speedup"):
            table.add_column(col, justify="right")
        for key, t in report["latency_s"].items():
            base = report.get("baseline", {}).get("latency_s", {}).get(key)
            speedup = report.get("speedup", {}).get(key)  # the median of paired rounds, as in model.onnx.json, not base / t
            table.add_row(key.removeprefix("batch_"), f"{t * 1e3:.2f}", f"{base * 1e3:.2f}" if base else "-",
                          f"{speedup:.2f}x" if speedup else "-")
        console.print(table)
        if int8:
            q = report["int8"]
            console.print(f"int8 {q['onnx']}: test accuracy {q['accuracy']:.4f} (fp32 {q['fp32_accuracy']:.4f}, "
                          f"{100 * (q['accuracy'] - q['fp32_accuracy']):+.2f} pts); "
                          + ", ".join(f"{k.replace('_', ' ')} {v * 1e3:.2f} ms ({q['speedup_over_fp32'][k]:.2f}x fp32)"
                                      for k, v in q["latency_s"].items()))
        diffs = ", ".join(f"{k}: {v:.1e}" for k, v in report.items() if k.endswith("max_abs_diff"))
        console.print(f"{path} ({report['bytes'] / 1e6:.2f} MB): onnx.checker OK; onnxruntime vs PyTorch max abs diff {diffs}")
        odd = report["unaligned_conv_channels"]
        if odd:
            console.print(f"note: {len(odd)} convolutions have channel counts that are not multiples of 8 (e.g. {odd[0]}); onnxruntime "
                          "runs them on a slower CPU path. Prune with --round-to 8 (the default; 16 on AVX-512 CPUs) for speed.")


@app.command()
def search(
    checkpoint: Annotated[Path, typer.Argument(help="model.pt written by prune-snr train.")],
    out: Annotated[Path, typer.Option("--out", help="Study folder: study.db, trials/, pareto.png.")],
    recipe: Recipe = None,
    trials: Annotated[Optional[int], typer.Option("--trials", help="Finished trials the study should hold (a rerun resumes). Default "
        "20.")] = None,
    storage: Annotated[Optional[str], typer.Option("--storage", help="Optuna storage URL, or a .log JournalStorage file.")] = None,
    study_name: Annotated[Optional[str], typer.Option("--study-name", help="Default prune-snr.")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Stop starting trials after S seconds.")] = None,
    n_jobs: Annotated[Optional[int], typer.Option("--n-jobs", help="Parallel trials in this process.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Start K local worker processes on one journal file (--storage "
        "X.log, default OUT/study.log): K cores.")] = None,
    worker_index: Annotated[Optional[int], typer.Option("--worker-index", help="This process's index when you start several workers on "
        "one --storage yourself: its own random stream.")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help=METRICS.help("Size objective:"))] = None,
    max_finetune_epochs: Annotated[Optional[int], typer.Option("--max-finetune-epochs", help="Upper bound of the fine-tune epochs "
        "searched (cheap proxy). Default 2.")] = None,
    measurement: Annotated[Optional[Path], typer.Option("--measurement", help="Reuse a prune-snr measure folder.")] = None,
    proxy: Annotated[Optional[str], typer.Option("--proxy", help="Grade trials cheaply, then re-run the Pareto trials fully: bn = right "
        "after pruning with BatchNorm recalibrated (no fine-tuning); a fraction F = fine-tuned on F of the training set.")] = None,
    space: Annotated[Optional[str], typer.Option("--space", help=SPACES.help("Search space:"))] = None,
    fix: Annotated[Optional[str], typer.Option("--fix", help='Pin parameters instead of searching them, e.g. '
        '"truncate=false,target=0.5".')] = None,
    round_to: Annotated[Optional[int], typer.Option("--round-to", help="Channel alignment of every trial (default: ONNX Runtime's here; 1 "
        "= off).")] = None,
    bn_recalibrate: BnRecalibrate = None,
    pick: Annotated[Optional[str], typer.Option("--pick", help='Then write the best Pareto trial meeting e.g. "params<=0.5" to '
        'OUT/pruned.pt.')] = None,
    dataset: Dataset = None,
    data_dir: DataDir = None,
    seed: Seed = None,
    device: Device = None,
    trust_model_code: TrustModelCode = False,
) -> None:
    """Multi-objective Optuna search (validation accuracy vs params/MACs/latency) over pruning configurations."""
    flags = _flags(locals(), "checkpoint", "out", "worker_index")
    from .config import SearchConfig, resolve
    from .search import run_search, run_workers
    with user_errors():
        cfg = resolve(SearchConfig, recipe, flags)
        with progress_bar() as progress:
            if cfg.workers > 1:
                study = run_workers(checkpoint, cfg, out=out, workers=cfg.workers, progress=progress)
            else:
                study = run_search(checkpoint, cfg, out=out, progress=progress, worker=worker_index)
        _show_pareto(study, out)
        if cfg.workers > 1 and cfg.storage is None:
            console.print(f"dashboard: optuna-dashboard {(out / 'study.log').resolve()}  (binds 127.0.0.1:8080)")
        elif cfg.storage is None:
            console.print(f"dashboard: optuna-dashboard sqlite:///{(out / 'study.db').resolve()}  (binds 127.0.0.1:8080)")
        if cfg.pick:
            _pick(study, cfg.pick, out)


@app.command("pick")
def pick_cmd(
    out: Annotated[Path, typer.Argument(help="Study folder written by prune-snr search.")],
    rule: Annotated[str, typer.Option("--pick", help='Conditions, e.g. "params<=0.5,accuracy>=0.9".')],
    storage: Annotated[Optional[str], typer.Option("--storage")] = None,
    study_name: Annotated[str, typer.Option("--study-name")] = "prune-snr",
) -> None:
    """Write the most accurate Pareto trial meeting --pick to OUT/pruned.pt."""
    from .search import load_study

    with user_errors():
        _pick(load_study(out, storage, study_name), rule, out)


def _show_pareto(study, out: Path) -> None:
    from .search import pareto_rows, save_pareto_plot

    rows = pareto_rows(study)
    table = Table(title=f"Pareto front of {study.study_name} ({len(study.trials)} trials; val decides, test grades)")
    proxied = any(r["full_accuracy"] is not None for r in rows)
    for col in ("#", "val (proxy)" if proxied else "val", "test (proxy)" if proxied else "test",
                *(["val (full)", "test (full)"] if proxied else []), "kept", "criterion", "alloc", "target", "θ", "ft", "trunc", "afcc"):
        table.add_column(col, justify="right", no_wrap=True)

    def fmt(x):
        return "-" if x is None else f"{x:.4f}"

    for r in rows:
        full = [fmt(r["full_val_accuracy"]), fmt(r["full_accuracy"])] if proxied else []
        table.add_row(str(r["trial"]), fmt(r["val_accuracy"]), fmt(r["accuracy"]), *full, f"{r['kept']:.3f}", r["criterion"],
                      r["allocation"], f"{r['target']:.2f}", str(r.get("threshold", "-")), str(r["finetune_epochs"]),
                      "y" if r.get("truncate") else "n",
                      "y" if r.get("afcc") else "n")
    console.print(table)
    if rows:
        console.print(f"Pareto plot: {save_pareto_plot(study, out / 'pareto.png')}")


def _pick(study, rule: str, out: Path) -> None:
    from .search import write_pick

    trial, chosen, target = write_pick(study, rule, out)
    console.print(f"picked trial {trial.number} (val accuracy {chosen['val_accuracy']:.4f}, test {chosen['accuracy']:.4f}, "
                  f"kept {trial.values[1]:.3f}) -> {target}")


def prune_table(report: dict) -> Table:
    before, after = report["before"], report["after"]
    table = Table(title=f"prune --target {report['target']} ({report['metric']}), criterion {report['criterion']}, "
                        f"allocation {report['allocation']} on {report['dataset']} (test split, seed {report['seed']})")
    for col in ("", "accuracy", "params", "MACs"):
        table.add_column(col, justify="right")
    table.add_row("before", f"{before['accuracy']:.4f}", f"{before['params']:,}", f"{before['macs']:,}")
    cut, blocks = report.get("truncation") or {}, report.get("blocks") or {}
    if cut.get("cut_after"):
        table.add_row(f"cut after {cut['cut_after']}", f"{cut['accuracy_after_cut']:.4f}", "", "")
    if blocks.get("dropped"):
        table.add_row(f"dropped {', '.join(blocks['dropped'])}", f"{blocks['accuracy_after_drop']:.4f}",
                      f"{blocks['params']:,}", f"{blocks['macs']:,}")
    mid, recal = report.get("pruned_before_finetune"), report.get("bn_recalibration")
    if recal:
        table.add_row("pruned, BatchNorm as before", f"{recal['without']['accuracy']:.4f}", "", "")
        table.add_row(f"pruned, BatchNorm on {recal['batches']} batches", f"{mid['accuracy']:.4f}", f"{mid['params']:,}",
            f"{mid['macs']:,}")
    elif mid:
        table.add_row("pruned, no fine-tune", f"{mid['accuracy']:.4f}", f"{mid['params']:,}", f"{mid['macs']:,}")
    table.add_row("after", f"{after['accuracy']:.4f}", f"{after['params']:,}", f"{after['macs']:,}")
    table.add_row("change", f"{100 * (after['accuracy'] - before['accuracy']):+.2f} pts",
                  f"-{1 - after['params'] / before['params']:.1%}", f"-{1 - after['macs'] / before['macs']:.1%}")
    for key, t in report.get("latency", {}).items():
        table.add_row(f"latency {key.replace('_', ' ')}", f"{t['original_s'] * 1e3:.2f} -> {t['pruned_s'] * 1e3:.2f} ms",
                      f"{t['fraction']:.2f} of original", "")
    return table


def points_table(result) -> Table:
    from .measure.result import paper_accuracy

    split = result.config.fields_split
    table = Table(title=f"{result.meta['model']} on {result.meta['dataset']} (heads: val and test accuracy; fields on the {split} "
                        f"split, clusters as {result.clusters}; seed {result.meta['seed']})")
    table.add_column("point", no_wrap=True)
    for col in ("filters", "val acc", "test acc", "SNR", "noise/f", "clust/f", "clust size", "labels/f", "dead"):
        table.add_column(col, justify="right")
    for p in result.points:
        val = p.get("val_accuracy")
        table.add_row(p["name"], str(p["n_filters"]), "-" if val is None else f"{val:.4f}", f"{paper_accuracy(p):.4f}",
                      f"{p['snr']:.3f}", f"{p['noise_per_filter']:.2f}",
                      f"{p['clusters_per_filter']:.2f}", f"{p['cluster_size']:.2f}",
                      "-" if p.get("clustered_labels_per_filter") is None else f"{p['clustered_labels_per_filter']:.2f}",
                      f"{p['dead_fraction']:.2f}")
    return table


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
