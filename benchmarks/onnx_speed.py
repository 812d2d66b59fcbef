"""ONNX Runtime (CPU) latency of pruned models vs the original, side by side in one run.

Prunes a trained checkpoint to remove ``--target`` of its MACs with each ``--round-to`` value
(``default`` = prune's default alignment, 8; ``1`` = none), optionally to ``--latency-target`` of
its latency (``prune --metric latency``), adds already pruned (e.g. fine-tuned) checkpoints given
with ``--pruned``, exports every model to ONNX, quantizes each to int8 (``--int8``: static QDQ,
calibrated on training images; test accuracy of fp32 vs int8), and times each beside the original
(and its int8 twin), interleaved, at batch 1 and 32. Every figure is a ratio to the original measured in the
same run (median over rounds of the ratio within a round, so a drift of the machine speed cancels). Latency does not
depend on fine-tuning, so the pruned-here models get none.

    python benchmarks/onnx_speed.py runs/fm/model.pt --measurement runs/fm/measurement \\
        --round-to 1,default,16 --latency-target 0.5 --int8 \\
        --out benchmarks/results/fmnist_vgg16_w025/onnx_speed.json
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import onnxruntime

import prune_snr
from prune_snr.checkpoint import load_checkpoint
from prune_snr.data import build_dataset
from prune_snr.errors import ConfigError, run_script
from prune_snr.export import (
    calibration_images,
    export_onnx,
    onnx_accuracy,
    quantize_int8,
)
from prune_snr.latency import latency_rounds, ratio
from prune_snr.models import count
from prune_snr.prune import prune
from prune_snr.prune.target import default_round_to

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, load_run, machine_line, save_results, script_parser  # noqa: E402


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint", "measurement", "target")
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--allocation", default="measured")
    parser.add_argument("--round-to", default="1,default")
    parser.add_argument("--latency-target", type=float, help="also prune with --metric latency to this target")
    parser.add_argument("--latency-batch", type=int, default=32, help="the batch --metric latency times")
    parser.add_argument(
        "--pruned", action="append", default=[], help="NAME=PRUNED.pt: time an already pruned model too"
    )
    parser.add_argument("--int8", action="store_true", help="quantize every model to int8 and time and grade it too")
    parser.add_argument("--repeats", type=int, default=50)
    add_standard(parser, "out")
    args = parser.parse_args(argv)

    run = load_run(args.checkpoint, args.measurement)
    dataset, data_dir, measurement = run.dataset, run.data_dir, run.measurement
    original = prune_snr.load(args.checkpoint)
    size = original.spec.get("input_size") or 32
    shape = (original.spec.get("in_chans", 3), size, size)
    base = count(original)
    test = build_dataset(dataset, "test", data_dir, augment=False, input_size=size)
    calibration = (
        calibration_images(build_dataset(dataset, "train", data_dir, augment=False, input_size=size))
        if args.int8
        else None
    )
    models = {}
    for allocation, value in [(a, v) for a in args.allocation.split(",") for v in args.round_to.split(",")]:
        round_to = default_round_to() if value == "default" else int(value)
        try:
            models[f"{allocation}, macs {args.target}, round_to={round_to}"] = prune(
                prune_snr.load(args.checkpoint),
                dataset,
                data_dir=data_dir,
                target=args.target,
                metric="macs",
                criterion=args.criterion,
                allocation=allocation,
                measurement=measurement,
                round_to=round_to,
                finetune_epochs=0,
                device="cpu",
            )
        except ConfigError as exc:
            print(f"{allocation}, round_to={value}: skipped ({exc})")
    if args.latency_target:
        key = (
            f"{args.allocation.split(',')[0]}, latency {args.latency_target} at batch {args.latency_batch}, "
            f"round_to={default_round_to()}"
        )
        try:
            models[key] = prune(
                prune_snr.load(args.checkpoint),
                dataset,
                data_dir=data_dir,
                target=args.latency_target,
                metric="latency",
                latency_batch=args.latency_batch,
                criterion=args.criterion,
                allocation=args.allocation.split(",")[0],
                measurement=measurement,
                finetune_epochs=0,
                device="cpu",
            )
        except ConfigError as exc:
            print(f"{key}: skipped ({exc})")
    for item in args.pruned:
        name, _, path = item.partition("=")
        report_file = Path(path).with_name("report.json")
        models[name] = (
            prune_snr.load(path),
            json.loads(report_file.read_text()) if report_file.is_file() else load_checkpoint(path)["config"]["report"],
        )
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"original": export_onnx(original, Path(tmp) / "original.onnx")}
        original_accuracy = onnx_accuracy(paths["original"], test)
        for i, (key, (model, report)) in enumerate(models.items()):
            paths[key] = export_onnx(model, Path(tmp) / f"m{i}.onnx")
            now = count(model)
            row = {
                "key": key,
                "round_to": report.get("round_to"),
                "metric": report["metric"],
                "target": report["target"],
                "macs_kept": now["macs"] / base["macs"],
                "params_kept": now["params"] / base["params"],
                "fp32_accuracy": onnx_accuracy(paths[key], test),
                "finetune_epochs": report.get("finetune_epochs", 0),
                "channels": report["channels_after"],
                "prune_latency_report": report.get("latency"),
            }
            if args.int8:
                paths[f"{key} int8"] = quantize_int8(paths[key], Path(tmp) / f"m{i}.int8.onnx", calibration)
                row["int8_accuracy"] = onnx_accuracy(paths[f"{key} int8"], test)
            rows.append(row)
        # Each model is timed in its own run beside the original (and its int8 twin): sessions of many models
        # alive at once crowd the caches and slow the widest most, which is not what a deployment sees.
        rounds: dict[int, dict[str, list[float]]] = {1: {}, 32: {}}
        for row in rows:
            group = {k: paths[k] for k in ("original", row["key"], f"{row['key']} int8") if k in paths}
            for b in rounds:
                timed = latency_rounds(group, batch=b, input_shape=shape, repeats=args.repeats)
                rounds[b][f"original|{row['key']}"] = timed.pop("original")
                rounds[b].update(timed)
        for b in rounds:
            rounds[b]["original"] = [t for k, v in rounds[b].items() if k.startswith("original|") for t in v]
        timings = {b: {k: statistics.median(v) for k, v in r.items()} for b, r in rounds.items()}
    for row in rows:
        key = row["key"]
        row["latency_s"] = {f"batch_{b}": timings[b][key] for b in timings}
        row["speedup"] = {f"batch_{b}": 1 / ratio(rounds[b], key, f"original|{key}") for b in timings}
        row["mac_ratio"] = 1 / row["macs_kept"]
        row["speedup_over_mac_ratio"] = {k: v / row["mac_ratio"] for k, v in row["speedup"].items()}
        row["latency_fraction"] = {k: 1 / v for k, v in row["speedup"].items()}
        if args.int8:
            row["int8_speedup_over_fp32"] = {f"batch_{b}": 1 / ratio(rounds[b], f"{key} int8", key) for b in timings}
    machine = (
        f"{machine_line(platform.processor() or platform.machine())}, onnxruntime "
        f"{onnxruntime.__version__} CPUExecutionProvider"
    )
    result = {
        "checkpoint": args.checkpoint,
        "criterion": args.criterion,
        "machine": machine,
        "split": "test",
        "original_latency_s": {f"batch_{b}": timings[b]["original"] for b in timings},
        "original_fp32_accuracy": original_accuracy,
        "rows": rows,
    }
    save_results(args.out, result)
    print(
        "| model | MACs kept | speedup b1 | speedup b32 | MAC ratio | speedup/MAC b1 | "
        "speedup/MAC b32 | latency kept b1 |"
        + (" int8 vs fp32 b1 | int8 vs fp32 b32 | fp32 acc | int8 acc |" if args.int8 else "")
        + "\n|---|---|---|---|---|---|---|---|"
        + ("---|---|---|---|" if args.int8 else "")
    )
    for r in rows:
        line = (
            f"| {r['key']} | {r['macs_kept']:.3f} | {r['speedup']['batch_1']:.2f}x | "
            f"{r['speedup']['batch_32']:.2f}x | {r['mac_ratio']:.2f}x | "
            f"{r['speedup_over_mac_ratio']['batch_1']:.2f} | {r['speedup_over_mac_ratio']['batch_32']:.2f} | "
            f"{r['latency_fraction']['batch_1']:.3f} |"
        )
        if args.int8:
            line += (
                f" {r['int8_speedup_over_fp32']['batch_1']:.2f}x | {r['int8_speedup_over_fp32']['batch_32']:.2f}x | "
                f"{r['fp32_accuracy']:.4f} | {r['int8_accuracy']:.4f} |"
            )
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
