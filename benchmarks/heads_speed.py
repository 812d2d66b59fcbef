"""Heads before vs after, side by side in one run, on a synthetic feature cache sized like the demo's.

The cache: ``--rows`` rows of 13 points with the widths of VGG-16 width 1/4 at ``p=2`` (16..128 filters x 4
= 4,224 features in all), memory-mapped ``.npy`` files whose features carry the label more strongly with
depth. "before" is ``train_heads`` of git revision ``--before`` (loaded from git, default 1a3d684, before
heads streamed their rows), "after" the working tree's, in its in-memory path, its streaming path, and with early stopping.

    python benchmarks/heads_speed.py --rows 20000 --epochs 10
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from prune_snr import choices
from prune_snr.measure.feed import Rows
from prune_snr.measure.heads import train_heads

VGG_W4_CHANNELS = [16, 16, 32, 32, 64, 64, 64, 128, 128, 128, 128, 128, 128]


def synthetic_cache(folder: Path, rows: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, rows)
    features = {}
    for i, c in enumerate(VGG_W4_CHANNELS):
        x = np.abs(rng.standard_normal((rows, c, 4), dtype=np.float32))
        x[np.arange(rows), y % c, :] += 0.3 + 0.14 * i
        np.save(folder / f"p{i:02d}.npy", x)
        features[f"p{i:02d}"] = np.load(folder / f"p{i:02d}.npy", mmap_mode="r")
    return features, y


def module_at(revision: str):
    """``prune_snr.measure.heads`` as it was at ``revision``."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "-C", str(root), "show", f"{revision}:prune_snr/measure/heads.py"], check=True,
                            capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("prune_snr.measure._heads_before", loader=None)
    module = importlib.util.module_from_spec(spec)
    module.__package__ = "prune_snr.measure"
    sys.modules[spec.name] = module  # dataclasses look their module up
    exec(compile(source, f"{revision}:heads.py", "exec"), module.__dict__)
    return module


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--min-epochs", type=int, default=choices.HEAD_MIN_EPOCHS)
    parser.add_argument("--lr", type=float, default=choices.HEAD_LR, help="Adam's learning rate, the same for every version")
    parser.add_argument("--before", default="1a3d684")
    parser.add_argument("--skip-before", action="store_true")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        features, y = synthetic_cache(Path(tmp), args.rows)
        index = np.arange(args.rows)
        cut, val_cut = int(args.rows * 0.8), int(args.rows * 0.9)
        train = Rows(features, index[:cut], torch.from_numpy(y[:cut]))
        scored = {"val": Rows(features, index[cut:val_cut], torch.from_numpy(y[cut:val_cut])),
                  "test": Rows(features, index[val_cut:], torch.from_numpy(y[val_cut:]))}
        common = dict(num_classes=10, epochs=args.epochs, lr=args.lr, memory_budget=4 << 30)
        runs = {}
        if not args.skip_before:
            runs[f"before ({args.before})"] = lambda: module_at(args.before).train_heads(train, scored, **common)
        runs["after, streaming"] = lambda: train_heads(train, scored, in_memory=False, **common)
        runs["after, in memory"] = lambda: train_heads(train, scored, **common)
        runs[f"after, in memory, patience {args.patience}"] = lambda: train_heads(
            train, scored, patience=args.patience, min_epochs=args.min_epochs, **common)
        print(f"synthetic cache: {len(train.index)} training rows x {sum(4 * c for c in VGG_W4_CHANNELS)} features "
              f"({len(VGG_W4_CHANNELS)} points), cap {args.epochs} epochs, {torch.get_num_threads()} CPU threads")
        results, reference = {}, None
        for name, fn in runs.items():
            t0 = time.perf_counter()
            results[name] = fn()
            seconds = time.perf_counter() - t0
            if reference is None:
                reference, ref_s = name, seconds
            ref = results[reference]
            dw = max((results[name][p].weight - ref[p].weight).abs().max().item() for p in ref)
            dacc = max(abs(results[name][p].accuracies["test"] - ref[p].accuracies["test"]) for p in ref)
            used = [getattr(h, "epochs_used", args.epochs) for h in results[name].values()]
            print(f"{name:36} {seconds:7.1f} s  x{seconds / max(1e-9, ref_s):5.2f}  "
                  f"max|dW| {dw:.1e}  max|d test acc| {dacc:.4f}  epochs used {min(used)}..{max(used)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
