"""Peak memory and time of the measurement's heads + fields against the number of cached rows.

Takes the real feature cache of a checkpoint (one hooked pass over its training split, for the
points ``--points``), then builds caches of ``--rows`` rows by repeating those rows, and for each
size runs the streaming heads and the field matrices in a fresh process at one
``--memory-budget``, reporting peak RSS, wall time, time per row, and the heads' time divided by
the time of one sequential read of the cache (the disk limit). RSS should stay flat and time
grow linearly with the rows.

    python benchmarks/measure_scale.py runs/fm/model.pt --points features.conv13 --rows 60000,250000,1000000 \\
        --out benchmarks/results/fmnist_vgg16_w025/measure_scale.json
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BLOCK = 1 << 26  # 64 MiB per read call for the sequential-read baseline


def sequential_read_seconds(folder: Path) -> float:
    """One front-to-back read of every ``.npy`` in ``folder`` (no parsing)."""
    t0 = time.perf_counter()
    buf = bytearray(BLOCK)
    for path in sorted(folder.glob("*.npy")):
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
    return time.perf_counter() - t0


def worker(folder: Path, points: list[str], budget_gib: float, epochs: int, batch_size: int) -> dict:
    from prune_snr.data import validation_split
    from prune_snr.measure.feed import Rows, class_means
    from prune_snr.measure.fields import field_matrices
    from prune_snr.measure.heads import train_heads

    features = {p: np.load(folder / f"{i}.npy", mmap_mode="r") for i, p in enumerate(points)}
    targets = np.load(folder / "targets.npy")
    rest, val = validation_split(targets, 0.1)
    num_classes = int(targets.max()) + 1
    train = Rows(features, rest, torch.from_numpy(targets[rest]))
    held = Rows(features, val, torch.from_numpy(targets[val]))
    t0 = time.perf_counter()
    heads = train_heads(
        train,
        {"val": held},
        num_classes=num_classes,
        epochs=epochs,
        batch_size=batch_size,
        memory_budget=int(budget_gib * 2**30),
    )
    t_heads = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in points:
        field_matrices(class_means(features[p], held.index, held.targets, num_classes), heads[p].weight)
    t_fields = time.perf_counter() - t0
    return {
        "rows": len(targets),
        "heads_s": t_heads,
        "fields_s": t_fields,
        "val_accuracy": {p: h.accuracies["val"] for p, h in heads.items()},
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM). ``ru_maxrss`` would not do: Linux carries it
    over ``execve`` from the parent, whose resident size here includes the cache it just wrote."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tile_cache(source: Path, target: Path, n_points: int, rows: int) -> None:
    """A cache of ``rows`` rows made by repeating the rows of ``source``, written block by block."""
    target.mkdir(parents=True, exist_ok=True)
    y = np.load(source / "targets.npy")
    np.save(target / "targets.npy", np.resize(y, rows))
    for i in range(n_points):
        src = np.load(source / f"{i}.npy", mmap_mode="r")
        dst = np.lib.format.open_memmap(target / f"{i}.npy", mode="w+", dtype=src.dtype, shape=(rows, *src.shape[1:]))
        for start in range(0, rows, len(src)):
            n = min(len(src), rows - start)
            dst[start : start + n] = src[:n]
        dst.flush()
        del dst


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", nargs="?")
    parser.add_argument("--points", default="features.conv13")
    parser.add_argument("--rows", default="60000,250000,1000000")
    parser.add_argument("--memory-budget", type=float, default=0.25, help="GiB for the heads' chunks")
    parser.add_argument("--head-epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--work-dir", help="where the caches go (default: a temporary folder)")
    parser.add_argument("--out")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    points = args.points.split(",")
    if args.worker:
        print(json.dumps(worker(Path(args.worker), points, args.memory_budget, args.head_epochs, args.batch_size)))
        return 0

    import prune_snr
    from prune_snr.checkpoint import load_checkpoint, trained_on
    from prune_snr.data import build_dataset
    from prune_snr.errors import ConfigError
    from prune_snr.measure.features import extract

    if not args.checkpoint:
        raise ConfigError("measure_scale.py needs a CHECKPOINT (e.g. runs/fm/model.pt)")
    model = prune_snr.load(args.checkpoint)
    dataset, data_dir = trained_on(load_checkpoint(args.checkpoint))
    train = build_dataset(dataset, "train", data_dir, augment=False, input_size=model.spec.get("input_size"))
    rows_list = [int(r) for r in args.rows.split(",")]
    results = []
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        real = Path(tmp) / "real"
        extract(model, train, points, pool=2, folder=real, batch_size=256)
        for rows in rows_list:
            folder = real if rows == len(train) else Path(tmp) / f"rows{rows}"
            if folder is not real:
                tile_cache(real, folder, len(points), rows)
            read_s = sequential_read_seconds(folder)
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--worker",
                    str(folder),
                    "--points",
                    args.points,
                    "--memory-budget",
                    str(args.memory_budget),
                    "--head-epochs",
                    str(args.head_epochs),
                    "--batch-size",
                    str(args.batch_size),
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["cache_bytes"] = sum(p.stat().st_size for p in folder.glob("*.npy"))
            r["sequential_read_s"] = read_s
            r["heads_over_read"] = r["heads_s"] / (read_s * args.head_epochs)
            r["us_per_row_per_epoch"] = 1e6 * r["heads_s"] / (rows * args.head_epochs)
            results.append(r)
            print(
                f"{rows:>9,} rows ({r['cache_bytes'] / 2**30:.2f} GiB cache): peak RSS {r['peak_rss_mb']:.0f} MB, "
                f"heads {r['heads_s']:.1f} s ({r['us_per_row_per_epoch']:.2f} µs/row/epoch), fields "
                f"{r['fields_s']:.1f} s, one sequential read {read_s:.2f} s, heads ÷ (epochs × read) "
                f"{r['heads_over_read']:.1f}",
                flush=True,
            )
            if folder is not real:
                for p in folder.glob("*"):
                    p.unlink()
    rss = [r["peak_rss_mb"] for r in results]
    flat = max(rss) / min(rss)
    print(
        f"peak RSS max/min over sizes: {flat:.2f} ({'flat within 20 %' if flat <= 1.2 else 'NOT flat within 20 %'}); "
        f"points {points}, memory budget {args.memory_budget} GiB, {args.head_epochs} head epochs"
    )
    if args.out:
        from prune_snr.atomic import atomic_save_json

        atomic_save_json(
            args.out,
            {
                "checkpoint": args.checkpoint,
                "points": points,
                "memory_budget_gib": args.memory_budget,
                "head_epochs": args.head_epochs,
                "rows": results,
                "rss_max_over_min": flat,
                "note": "caches beyond the real rows repeat them; reads may come from the page cache",
            },
        )
    return 0


if __name__ == "__main__":
    from prune_snr.errors import run_script

    sys.exit(run_script(main))
