"""Models in and out: the ``import`` and ``export`` commands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from ..choices import DATASETS
from ..config import ImportConfig, resolve
from ..config.texts import DATA_DIR
from .base import console, user_errors
from .flags import TrustModelCode, apply_trust, takes


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
            help="Also write an int8 model beside OUT (model.onnx: model.int8.onnx): static QDQ quantization "
            "calibrated on training images; "
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
        _show_export(report, checkpoint, repeats=repeats, int8=int8)


def _show_export(report: dict, checkpoint: Path, *, repeats: int, int8: bool) -> None:
    """Print an export's latency table, its int8 line (with ``int8``), the ONNX file's checks and a channel note."""
    path = Path(report["onnx"])
    console.print(_latency_table(report, checkpoint, repeats))
    if int8:
        console.print(_int8_line(report["int8"]))
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


def _latency_table(report: dict, checkpoint: Path, repeats: int) -> Table:
    """The slimmed vs original ONNX latency per batch size, with the paired speedup."""
    table = Table(title=f"ONNX export of {checkpoint} (onnxruntime CPU, median of {repeats} paired rounds)")
    for col in ("batch", "slimmed ms", "original ms", "speedup"):
        table.add_column(col, justify="right")
    for key, t in report["latency_s"].items():
        base = report.get("baseline", {}).get("latency_s", {}).get(key)
        # the median of paired rounds, as in model.onnx.json, not base / t
        speedup = report.get("speedup", {}).get(key)
        table.add_row(
            key.removeprefix("batch_"),
            f"{t * 1e3:.2f}",
            f"{base * 1e3:.2f}" if base else "-",
            f"{speedup:.2f}x" if speedup else "-",
        )
    return table


def _int8_line(q: dict) -> str:
    """The int8 model's test accuracy against fp32's, and its latency and speedup per batch size."""
    return (
        f"int8 {q['onnx']}: test accuracy {q['accuracy']:.4f} (fp32 {q['fp32_accuracy']:.4f}, "
        f"{100 * (q['accuracy'] - q['fp32_accuracy']):+.2f} pts); "
        + ", ".join(
            f"{k.replace('_', ' ')} {v * 1e3:.2f} ms ({q['speedup_over_fp32'][k]:.2f}x fp32)"
            for k, v in q["latency_s"].items()
        )
    )
