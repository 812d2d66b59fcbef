"""The default measurement of one checkpoint under one or two versions of prune-snr, side by side in one run.

Each version (``--ref``: a git commit, checked out into a temporary worktree; and this working tree)
runs in its own process on a fresh feature cache: a plain inference pass over train + test with the
measurement's loader, then ``measure`` with its defaults and the label sweep ``--labels``, then a second
plain pass; the plain pass is the mean of the two, which brackets the measurement (a single pass before it
drifted by 20 % between processes, more than the goal's margin). Prints each phase as seconds and as a
multiple of that version's plain pass, and the per-point head accuracies' largest difference between the
versions (validation and test), the measured cut and allocation inputs (validation head accuracies) and the
SNR ranking agreement of the last point. Without ``--ref`` only this tree runs.

    python benchmarks/measure_versions.py runs/demo/model.pt --ref 1a3d684 --labels 3,5,10 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SNIPPET = r'''
import json, sys, time, torch, numpy as np
import prune_snr
from prune_snr.data import build_dataset
from prune_snr.measure import measure
from prune_snr.runtime import make_loader
checkpoint, labels, cache, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
payload = torch.load(checkpoint, weights_only=True)
dataset = payload["config"]["train"]["dataset"]
model = prune_snr.load(checkpoint).eval()
size = model.spec.get("input_size")
def plain_pass():
    seconds = 0.0
    for split in ("train", "test"):
        ds = build_dataset(dataset, split, augment=False, input_size=size)
        t0 = time.perf_counter()
        with torch.no_grad():
            for x, _ in make_loader(ds, batch_size=256, shuffle=False):
                model(x)
        seconds += time.perf_counter() - t0
    return seconds
before = plain_pass()
sweep = [int(k) for k in labels.split(",")] if labels else None
t0 = time.perf_counter()
m = measure(model, dataset, label_sweep=sweep, val_fraction=payload["config"]["train"].get("val_fraction") or None,
            device="cpu", cache_dir=cache)
total = time.perf_counter() - t0
after = plain_pass()
name = m.points[-1]["name"]
json.dump({"plain_s": (before + after) / 2, "plain_before_s": before, "plain_after_s": after, "total_s": total,
           "timings": m.meta["timings"],
           "points": [{k: p.get(k) for k in ("name", "val_accuracy", "test_accuracy", "snr", "head_epochs_used")} for p in m.points],
           "last_snr": m.stats(name).snr.tolist() if hasattr(m, "stats") else None}, open(out, "w"))
'''


def run_version(label: str, source: Path, checkpoint: str, labels: str, work: Path) -> dict:
    out = work / f"{label}.json"
    env = {**os.environ, "PYTHONPATH": str(source)}
    subprocess.run([sys.executable, "-c", SNIPPET, checkpoint, labels, str(work / f"cache-{label}"), str(out)], env=env, check=True,
                   cwd=source)
    return json.loads(out.read_text())


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--ref", help="the earlier commit (default: only this tree)")
    parser.add_argument("--labels", default="3,5,10")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    checkpoint = str(Path(args.checkpoint).resolve())
    with tempfile.TemporaryDirectory(prefix="measure-versions-") as tmp:
        work = Path(tmp)
        results = {}
        if args.ref:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(work / "ref"), args.ref], check=True)
            try:
                results[args.ref] = run_version("ref", work / "ref", checkpoint, args.labels, work)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(work / "ref")], check=False)
        results["this tree"] = run_version("now", ROOT, checkpoint, args.labels, work)
    print(f"{Path(checkpoint).name}: default measurement with label sweep {args.labels}, fresh feature cache, this machine")
    print(f"{'version':<12}{'plain pass s':>14}{'features':>12}{'heads+fields':>14}{'sweep':>10}{'total':>10}{'total/plain':>13}")
    for version, r in results.items():
        t = r["timings"]
        features = t["features_train_s"] + t["features_test_s"]
        sweep = r["total_s"] - features - t["heads_and_fields_s"]
        print(f"{version:<12}{r['plain_s']:>14.1f}{features:>12.1f}{t['heads_and_fields_s']:>14.1f}{sweep:>10.1f}{r['total_s']:>10.1f}"
              f"{r['total_s'] / r['plain_s']:>12.2f}x   (without the sweep {(r['total_s'] - sweep) / r['plain_s']:.2f}x: features "
              f"{features / r['plain_s']:.2f}x, heads + fields {t['heads_and_fields_s'] / r['plain_s']:.2f}x)")
        print(f"{'':<12}plain pass before / after the measurement: {r['plain_before_s']:.1f} / {r['plain_after_s']:.1f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    new = results["this tree"]
    print("head epochs used now:", [p.get("head_epochs_used") for p in new["points"]])
    if not args.ref:
        return 0
    old = results[args.ref]
    for key in ("val_accuracy", "test_accuracy"):
        diff = max(abs(p[key] - q[key]) for p, q in zip(old["points"], new["points"]))
        print(f"largest per-point head {key} difference: {diff:.4f}")
    if old.get("last_snr") and new.get("last_snr"):
        import numpy as np

        a, b = np.argsort(old["last_snr"]), np.argsort(new["last_snr"])
        top = max(1, len(a) // 4)
        print(f"last point's top-quarter SNR filters shared: {len(set(a[-top:]) & set(b[-top:]))} of {top}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
