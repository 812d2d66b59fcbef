"""``prune-snr export``: a checkpoint to a verified ONNX file (and its int8 twin), with latency beside the original.

Example:
    >>> report = export_checkpoint("runs/fm/pruned/pruned.pt", "runs/fm/pruned/model.onnx", int8=True)  # doctest: +SKIP
    >>> report["speedup"]["batch_32"], report["int8"]["accuracy"]  # doctest: +SKIP
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from torch import nn

from ..atomic import atomic_save_json
from ..checkpoint import build_from_checkpoint, load_checkpoint, trained_on
from ..errors import ConfigError
from ..latency import latency_rounds, ratio
from ..onnx_io import export_onnx, is_batch
from .onnx import verify_onnx


def export_checkpoint(
    checkpoint: str | Path,
    out: str | Path,
    *,
    opset: int | None = None,
    batch: str = "dynamic",
    input_size: tuple[int, int] | None = None,
    baseline: str | Path | None = None,
    repeats: int = 30,
    int8: bool = False,
    calibration_size: int = 512,
    dataset: str | None = None,
    data_dir: str | None = None,
) -> dict:
    """Export ``checkpoint`` to ``out`` and write ``out.json``: checks, ORT-vs-PyTorch differences, latency, int8.

    Returns:
        The report written to ``OUT.json``.

    Raises:
        ConfigError / ExportError / QuantizationError: bad ``batch``, a failed check, an unusable calibration set.
    """
    if not is_batch(batch):
        raise ConfigError(f"--batch {batch!r}: use dynamic or a positive integer")
    if baseline is not None and not Path(baseline).is_file():
        raise ConfigError(f"--baseline {baseline}: no such checkpoint; pass the unpruned model.pt or leave it out")
    payload = load_checkpoint(checkpoint)
    model = build_from_checkpoint(payload)
    batches = (1, 8) if batch == "dynamic" else (int(batch),)
    diffs = {}

    def checked(written: Path) -> None:  # before the file replaces ``out``: a failed check leaves it as it was
        diffs.update(verify_onnx(model, written, batch_sizes=batches, input_size=input_size))

    path = export_onnx(model, out, input_size=input_size, batch=batch, opset=opset, check=checked)
    report = {"onnx": str(path), "bytes": path.stat().st_size, **diffs}
    source = baseline or payload.get("config", {}).get("source")
    shape = (model.spec.get("in_chans", 3), *(input_size or (model.spec["input_size"],) * 2))
    timing_batches = (1, 32) if batch == "dynamic" else (int(batch),)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"slimmed": path}
        if int8:
            report["int8"] = _quantize(path, payload, source, dataset, data_dir, calibration_size, input_size)
            paths["int8"] = Path(report["int8"]["onnx"])
        if source and Path(source).is_file():
            original = build_from_checkpoint(load_checkpoint(source))
            paths["original"] = export_onnx(
                original, Path(tmp) / "baseline.onnx", input_size=input_size, batch=batch, opset=opset
            )
            report["baseline"] = {"checkpoint": str(source)}
        rounds = {n: latency_rounds(paths, batch=n, input_shape=shape, repeats=repeats) for n in timing_batches}
    timed = {n: {k: statistics.median(v) for k, v in r.items()} for n, r in rounds.items()}
    report["latency_s"] = {f"batch_{n}": t["slimmed"] for n, t in timed.items()}
    if int8:
        report["int8"]["latency_s"] = {f"batch_{n}": t["int8"] for n, t in timed.items()}
        report["int8"]["speedup_over_fp32"] = {f"batch_{n}": 1 / ratio(r, "int8", "slimmed") for n, r in rounds.items()}
    if "baseline" in report:
        report["baseline"]["latency_s"] = {f"batch_{n}": t["original"] for n, t in timed.items()}
        report["speedup"] = {f"batch_{n}": 1 / ratio(r, "slimmed", "original") for n, r in rounds.items()}
    report["unaligned_conv_channels"] = (
        [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups == 1 and m.out_channels % 8]
        if payload.get("kind") == "pruned"
        else []
    )
    atomic_save_json(Path(str(path) + ".json"), report)
    return report


def _quantize(
    path: Path, payload: dict, source, dataset: str | None, data_dir: str | None, calibration_size: int, size
) -> dict:
    """int8 twin of ``path``, calibrated on the training split, graded on the test split."""
    from ..data import build_dataset
    from .int8 import calibration_images, onnx_accuracy, quantize_int8

    recorded, recorded_dir = trained_on(payload)
    if not recorded and source and Path(source).is_file():
        recorded, recorded_dir = trained_on(load_checkpoint(source))
    dataset = dataset or recorded
    if not dataset:
        raise ConfigError("--int8 needs calibration images: pass --dataset (the checkpoint does not record one)")
    side = size[0] if size else payload["config"]["model"].get("input_size")
    train = build_dataset(dataset, "train", data_dir or recorded_dir, augment=False, input_size=side)
    test = build_dataset(dataset, "test", data_dir or recorded_dir, augment=False, input_size=side)
    quantized = quantize_int8(path, path.with_suffix(".int8.onnx"), calibration_images(train, size=calibration_size))
    return {
        "onnx": str(quantized),
        "bytes": quantized.stat().st_size,
        "calibration": {"split": "train", "images": calibration_size, "seed": 0},
        "accuracy": onnx_accuracy(quantized, test),
        "fp32_accuracy": onnx_accuracy(path, test),
        "split": "test",
    }
