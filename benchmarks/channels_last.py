"""The CPU's channels-last passes against the model's own layout, side by side in one run: grading and recalibration.

On the CPU, ``evaluate`` (every grade), BatchNorm recalibration and the measurement's feature pass run a model
channels-last where it gives the same outputs so (``prune_snr.runtime.cpu_channels_last``). Each round times, in
turns (so load from elsewhere hits both alike), a grade of the checkpoint's test split and a recalibration on
``--batches`` training batches, once in the model's own layout and once channels-last; the ratios are medians over
rounds. The grades must be the same image for image (the same count correct) and the recalibrated statistics
within float rounding.

    python benchmarks/channels_last.py runs/vgg16_w025/model.pt runs/efficientnet_b0/model.pt --threads 1 \\
        --out benchmarks/results/channels_last.json
"""

from __future__ import annotations

import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import load_run, machine_line, save_results, script_parser  # noqa: E402


@contextlib.contextmanager
def own_layout():
    """Within the block the passes run the model in its own layout (as before channels-last on the CPU)."""
    from prune_snr.prune import recalibrate
    from prune_snr.train import loop

    kept = loop.cpu_channels_last, recalibrate.cpu_channels_last
    loop.cpu_channels_last = recalibrate.cpu_channels_last = lambda model, image: contextlib.nullcontext()
    try:
        yield
    finally:
        loop.cpu_channels_last, recalibrate.cpu_channels_last = kept


def timed_passes(model, test_set, train_set, batches: int) -> dict:
    from prune_snr.prune.recalibrate import recalibrate_batchnorm
    from prune_snr.runtime import make_loader
    from prune_snr.train.loop import evaluate

    t0 = time.perf_counter()
    graded = evaluate(model, test_set, batch_size=256)
    t1 = time.perf_counter()
    calibrated = copy.deepcopy(model)
    with torch.random.fork_rng(devices=[]):  # the same augmented batches for both layouts
        torch.manual_seed(0)
        loader = make_loader(train_set, batch_size=128, shuffle=True, seed=0, drop_last=True)
        recalibrate_batchnorm(calibrated, loader, batches=batches)
    t2 = time.perf_counter()
    stats = torch.cat([m.running_mean for m in calibrated.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    return {"grade_s": t1 - t0, "recalibrate_s": t2 - t1, "accuracy": graded["accuracy"], "stats": stats}


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("checkpoints", nargs="+")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batches", type=int, default=50, help="recalibration batches of 128 training images")
    parser.add_argument("--threads", type=int, help="CPU threads (default: PyTorch's)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    import prune_snr
    from prune_snr.data import build_dataset

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for checkpoint in args.checkpoints:
        run = load_run(checkpoint)
        model = prune_snr.load(checkpoint).eval()
        size = model.spec["input_size"]
        test_set = build_dataset(run.dataset, "test", run.data_dir, augment=False, input_size=size)
        train_set = build_dataset(run.dataset, "train", run.data_dir, augment=True, input_size=size)
        times = {"own": [], "channels_last": []}
        for _ in range(args.rounds):
            for layout in times:
                with own_layout() if layout == "own" else contextlib.nullcontext():
                    times[layout].append(timed_passes(model, test_set, train_set, args.batches))
        own, last = times["own"][-1], times["channels_last"][-1]
        row = {
            "checkpoint": Path(checkpoint).parent.name,
            "model": model.spec["name"],
            "test_images": len(test_set),
            "accuracy_own": own["accuracy"],
            "accuracy_channels_last": last["accuracy"],
            "stats_max_abs_diff": float((own["stats"] - last["stats"]).abs().max()),
        }
        for part in ("grade_s", "recalibrate_s"):
            row[f"{part}_own"] = statistics.median(t[part] for t in times["own"])
            row[f"{part}_channels_last"] = statistics.median(t[part] for t in times["channels_last"])
            row[f"{part[:-2]}_speedup"] = row[f"{part}_own"] / row[f"{part}_channels_last"]
        rows.append(row)
        print(
            f"{row['model']}: grade {row['grade_s_own']:.1f} s -> {row['grade_s_channels_last']:.1f} s "
            f"({row['grade_speedup']:.2f}x), recalibration {row['recalibrate_s_own']:.1f} s -> "
            f"{row['recalibrate_s_channels_last']:.1f} s ({row['recalibrate_speedup']:.2f}x); accuracy "
            f"{row['accuracy_own']:.4f} / {row['accuracy_channels_last']:.4f}, statistics within "
            f"{row['stats_max_abs_diff']:.1e}"
        )
    command = "python benchmarks/channels_last.py " + " ".join(sys.argv[1:] if argv is None else argv)
    save_results(args.out, {"machine": machine_line(), "command": command, "rows": rows})
    return 0


if __name__ == "__main__":
    from prune_snr.errors import run_script

    sys.exit(run_script(main))
