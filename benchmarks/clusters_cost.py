"""Phase 3's cost under each cluster definition: time and peak memory, side by side, in one run.

The per-filter statistics (clusters, signal, noise, SNR) of every point of a full-width VGG-16
(13 convs, 64 to 512 filters, p = 2) at ``--labels`` labels (default 1000), from class means and
head weights drawn at random (a random-weight model's fields: dense and diffuse, the worst case for
the clusters' walk). Each definition runs ``--repeats`` times in a fresh process of its own, in
alternation, so each peak resident memory is that definition's alone; the table gives the median
time and the peak, and the ratio blocks / components.

    python benchmarks/clusters_cost.py --labels 1000 --out benchmarks/results/clusters_cost.json
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import machine_line, save_results, script_parser  # noqa: E402

#: Filters of the full-width VGG-16's 13 convs.
VGG16 = (64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512)


def one_run(clusters: str, labels: int, budget_gib: float) -> dict:
    """Phase 3 over every point in this process: seconds and peak resident MB."""
    import torch

    from prune_snr.measure.fields import layer_stats

    torch.set_num_threads(max(1, torch.get_num_threads()))
    g = torch.Generator().manual_seed(0)
    seconds = 0.0
    for filters in VGG16:
        mu = torch.rand(labels, filters, 4, generator=g)
        weight = torch.randn(labels, filters, 4, generator=g)
        t0 = time.perf_counter()
        layer_stats(mu, weight, memory_budget=int(budget_gib * 2**30), clusters=clusters)
        seconds += time.perf_counter() - t0
    return {
        "clusters": clusters,
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = script_parser(__doc__)
    parser.add_argument("--labels", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--memory-budget", type=float, default=2.0, help="GiB phase 3 may hold (the chunk size follows)"
    )
    parser.add_argument("--one", help=argparse_hidden())
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one, args.labels, args.memory_budget)))
        return
    rows = []
    for _ in range(args.repeats):
        for clusters in ("components", "blocks"):
            cmd = [
                sys.executable,
                __file__,
                "--one",
                clusters,
                "--labels",
                str(args.labels),
                "--memory-budget",
                str(args.memory_budget),
                "--out",
                args.out,
            ]
            rows.append(
                json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            )
            print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for clusters in ("components", "blocks"):
        mine = [r for r in rows if r["clusters"] == clusters]
        summary[clusters] = {
            "seconds_median": statistics.median(r["seconds"] for r in mine),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in mine),
        }
    ratio = {key: summary["blocks"][key] / summary["components"][key] for key in ("seconds_median", "peak_rss_mb")}
    print(f"{'clusters':<12}{'phase 3 s (median)':>20}{'peak RSS MB':>14}")
    for clusters, s in summary.items():
        print(f"{clusters:<12}{s['seconds_median']:>20.1f}{s['peak_rss_mb']:>14.0f}")
    print(f"blocks / components: time {ratio['seconds_median']:.2f}x, peak memory {ratio['peak_rss_mb']:.2f}x")
    command = (
        f"python benchmarks/clusters_cost.py --labels {args.labels} --repeats {args.repeats} "
        f"--memory-budget {args.memory_budget}"
    )
    save_results(
        args.out, {"machine": machine_line(), "command": command, "rows": rows, "summary": summary, "ratio": ratio}
    )


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
