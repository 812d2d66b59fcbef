"""ONNX Runtime (CPU) latency of pruned models vs the original, side by side in one run.

Prunes a trained checkpoint to remove ``--target`` of its MACs with each ``--round-to`` value
(channel counts kept multiples of it; ONNX Runtime's blocked NCHWc convolutions want multiples of
8 with AVX2 and 16 with AVX-512), exports every model to ONNX and times them interleaved (median
of repeats) at batch 1 and batch 32. Latency does not depend on fine-tuning, so none is done.

    python benchmarks/onnx_speed.py runs/demo/model.pt --measurement runs/demo/measurement \\
        --round-to none,8,16 --out benchmarks/results/fmnist_vgg16_w025/onnx_speed.json
"""
from __future__ import annotations

import argparse
import platform
import sys
import tempfile
from pathlib import Path

import onnxruntime
import torch

import prune_snr
from prune_snr.errors import ConfigError, run_script
from prune_snr.checkpoint import atomic_save_json, load_checkpoint
from prune_snr.export.onnx import export_onnx, latency
from prune_snr.measure import Measurement
from prune_snr.prune import count, prune


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--measurement", required=True)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--criterion", default="l1")
    parser.add_argument("--allocation", default="measured,uniform")
    parser.add_argument("--round-to", default="none,8,16")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    payload = load_checkpoint(args.checkpoint)
    dataset = payload["config"]["train"]["dataset"]
    measurement = Measurement.load(args.measurement)
    original = prune_snr.load(args.checkpoint)
    size = original.spec.get("input_size") or 32
    shape = (original.spec.get("in_chans", 3), size, size)
    base = count(original)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"original": Path(tmp) / "original.onnx"}
        export_onnx(original, paths["original"])
        for allocation, value in [(a, v) for a in args.allocation.split(",") for v in args.round_to.split(",")]:
            round_to = None if value == "none" else int(value)
            try:
                pruned, report = prune(prune_snr.load(args.checkpoint), dataset, target=args.target, metric="macs",
                                       criterion=args.criterion, allocation=allocation, measurement=measurement, round_to=round_to,
                                       finetune_epochs=0, device="cpu")
            except ConfigError as exc:
                print(f"{allocation}, round_to={value}: skipped ({exc})")
                continue
            key = f"{allocation}, round_to={value}"
            paths[key] = Path(tmp) / f"{value}.onnx"
            export_onnx(pruned, paths[key])
            size_now = count(pruned)
            rows.append({"key": key, "allocation": allocation, "round_to": round_to, "macs_kept": size_now["macs"] / base["macs"], "params_kept": size_now["params"] / base["params"],
                         "accuracy_before_finetune": report["after"]["accuracy"], "channels": report["channels_after"]})
        timings = {b: latency(paths, batch=b, input_shape=shape, repeats=args.repeats) for b in (1, 32)}
    for row in rows:
        key = row["key"]
        row["latency_s"] = {f"batch_{b}": timings[b][key] for b in timings}
        row["speedup"] = {f"batch_{b}": timings[b]["original"] / timings[b][key] for b in timings}
        row["mac_ratio"] = 1 / row["macs_kept"]
        row["speedup_over_mac_ratio_batch_32"] = row["speedup"]["batch_32"] / row["mac_ratio"]
    machine = (f"{platform.node()} ({torch.get_num_threads()} CPU threads, {platform.processor() or platform.machine()}), "
               f"onnxruntime {onnxruntime.__version__} CPUExecutionProvider")
    result = {"checkpoint": args.checkpoint, "target_macs_removed": args.target, "criterion": args.criterion, "machine": machine,
              "original_latency_s": {f"batch_{b}": timings[b]["original"] for b in timings}, "rows": rows}
    atomic_save_json(args.out, result)
    print("| allocation | round_to | MACs kept | speedup b1 | speedup b32 | MAC ratio | speedup / MAC ratio (b32) |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['allocation']} | {r['round_to']} | {r['macs_kept']:.3f} | {r['speedup']['batch_1']:.2f}x | {r['speedup']['batch_32']:.2f}x | "
              f"{r['mac_ratio']:.2f}x | {r['speedup_over_mac_ratio_batch_32']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
