"""Phase 3 at the paper's scale: a full-width EfficientNet-B0 ``conv_head``-shaped layer (1280 filters,
p = 2 so K = 4 values per filter) at 1000 labels, the old whole-layer path against the chunked one.

Inputs are random (seeded): class means ``mu = |N(0, 1)|`` (``L x F x K``, positive like pooled
post-activation features) and head weights ``W ~ N(0, 1)``. Each run is a child process, so its
peak RSS (``ru_maxrss``) is its own:

- ``old``: ``filter_stats(field_matrices(mu, W))`` of commit 1a3d684 (whole ``F x L x L`` matrices
  and masks, int64 min-label propagation in chunks of 256 filters), read with ``git show``. It
  needs ~20 GB for 1280 filters at 1000 labels, so it runs on the layer's first ``--old-filters``
  filters and its peak above the bare process is scaled linearly in F (every array it holds is).
- ``new``: :func:`prune_snr.measure.fields.layer_stats` with ``--budget`` GiB, on the same slice
  (to compare results) and on the whole layer.

Usage: ``python benchmarks/fields_scale.py [--labels 1000 --filters 1280 --old-filters 320 --budget 2]``
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OLD_COMMIT = "1a3d684"
KEYS = ("dead", "signal", "noise", "n_noise", "n_clusters", "n_active", "snr", "strength", "component")


def inputs(labels: int, filters: int, used: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    mu = torch.randn(labels, filters, 4, generator=g).abs()
    W = torch.randn(labels, filters, 4, generator=g)
    return mu[:, :used].contiguous(), W[:, :used].contiguous()


def old_module(folder: Path):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{OLD_COMMIT}:prune_snr/measure/fields.py"], check=True,
                            capture_output=True, text=True).stdout
    path = folder / "old_fields.py"
    path.write_text(source.replace("from ..choices import THRESHOLD", "THRESHOLD = 0.3"))
    spec = importlib.util.spec_from_file_location("old_fields", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def child(args) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from prune_snr.measure.fields import chunk_filters, layer_stats

    mu, W = inputs(args.labels, args.filters, args.used)
    base_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    if args.child == "old":
        old = old_module(Path(args.tmp))
        stats = old.filter_stats(old.field_matrices(mu, W), threshold=0.3)
    else:
        stats = layer_stats(mu, W, threshold=0.3, memory_budget=int(args.budget * 2**30))
    wall = time.perf_counter() - t0
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(Path(args.tmp) / f"{args.child}_{args.used}.npz", **{k: getattr(stats, k).numpy() for k in KEYS})
    print(json.dumps({"wall_s": wall, "peak_mb": peak_mb, "base_mb": base_mb,
                      "chunk": chunk_filters(args.labels, int(args.budget * 2**30)) if args.child == "new" else 256}))


def run_child(kind: str, used: int, args, tmp: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--used", str(used), "--labels", str(args.labels), "--filters",
           str(args.filters), "--budget", str(args.budget), "--tmp", tmp]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS",
        "2")})
    if done.returncode:
        return {"error": f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ''}"}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--filters", type=int, default=1280)
    parser.add_argument("--old-filters", type=int, default=320)
    parser.add_argument("--budget", type=float, default=2.0, help="GiB for the chunked path")
    parser.add_argument("--child", choices=("old", "new"))
    parser.add_argument("--used", type=int)
    parser.add_argument("--tmp")
    args = parser.parse_args()
    if args.child:
        return child(args)

    import numpy as np

    L, F, Fo = args.labels, args.filters, args.old_filters
    print(f"phase 3 of one layer: {F} filters x {L} labels, K = 4 (EfficientNet-B0 conv_head, p = 2); random mu = |N(0,1)|, "
          f"W ~ N(0,1), seed 0, θ = 0.3; {os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '2')}")
    print(f"one layer's F x L x L float32 matrices alone: {F * L * L * 4 / 2**30:.2f} GiB")
    with tempfile.TemporaryDirectory() as tmp:
        runs = [("old (1a3d684)", "old", Fo), (f"new, {args.budget:g} GiB budget", "new", Fo), (f"new, {args.budget:g} GiB budget", "new",
            F)]
        results = [(label, used, run_child(kind, used, args, tmp)) for label, kind, used in runs]
        print()
        print("| path | filters | wall | peak RSS | bare process | filters per chunk |")
        print("|---|---|---|---|---|---|")
        for label, used, r in results:
            if "error" in r:
                print(f"| {label} | {used} | failed: {r['error']} | | | |")
                continue
            print(f"| {label} | {used} | {r['wall_s']:.1f} s | {r['peak_mb']:,.0f} MB | {r['base_mb']:,.0f} MB | {r['chunk']} |")
        old, new_part, new_full = (r for _, _, r in results)
        if "error" not in old:
            scale = F / Fo
            print(f"| old, extrapolated (x{scale:g} in F above the bare process) | {F} | ~{old['wall_s'] * scale:.0f} s | "
                  f"~{old['base_mb'] + (old['peak_mb'] - old['base_mb']) * scale:,.0f} MB | | |")
        print()
        if "error" not in old and "error" not in new_part:
            a, b = np.load(Path(tmp) / f"old_{Fo}.npz"), np.load(Path(tmp) / f"new_{Fo}.npz")
            exact = [k for k in KEYS if np.array_equal(a[k].astype(np.int64) if k == "component" else a[k],
                                                       b[k].astype(np.int64) if k == "component" else b[k])]
            worst = max(float(np.max(np.abs(a[k] - b[k]) / np.maximum(np.abs(a[k]), 1e-30))) for k in ("signal", "noise", "snr"))
            print(f"old vs new on the same {Fo} filters: bitwise equal: {', '.join(exact)}; "
                  f"largest relative difference in signal/noise/snr: {worst:.1e}")
        if "error" not in new_full:
            c = np.load(Path(tmp) / f"new_{F}.npz")
            print(f"new, all {F} filters: mean clusters/filter {c['n_clusters'].mean():.3f}, active labels/filter "
                  f"{c['n_active'].mean():.1f}, noise elements/filter {c['n_noise'].mean():,.0f}, median SNR {np.median(c['snr']):.4f}")
            print(f"what fields.npz keeps of it: statistics {sum(c[k].size for k in KEYS if k != 'component') * 4 / 1e6:.2f} MB + "
                  f"component int16 {c['component'].size * 2 / 1e6:.2f} MB + 16 matrices {16 * L * L * 4 / 1e6:.0f} MB "
                  f"(before compression), against {F * L * L * 4 / 1e9:.1f} GB for every matrix")


if __name__ == "__main__":
    main()
