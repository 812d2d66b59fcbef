"""Saliency criteria × allocation × budget, at an equal fine-tuning budget, over seeds.

Every cell prunes the same trained model with torch-pruning to the same MACs (or params)
budget, fine-tunes it for the same number of epochs, and records test accuracy before and after
fine-tuning. Results are appended to a JSON file as they finish (a rerun skips finished cells),
then summarised as a Markdown table (mean ± std over seeds) and a PNG.

    python benchmarks/saliency_compare.py runs/demo/model.pt --measurement runs/demo/measurement \\
        --criteria snr,l1,taylor,lamp,random --budgets 0.3,0.5,0.7 --seeds 0,1,2 --out runs/saliency
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

import prune_snr
from prune_snr.atomic import atomic_save_json, atomic_save_text
from prune_snr.checkpoint import load_checkpoint
from prune_snr.errors import PruneSnrError, run_script
from prune_snr.measure import Measurement
from prune_snr.prune import prune


def summarise(rows: list[dict], metric: str) -> str:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["budget"], r["allocation"], r["criterion"]), []).append(r)
    budgets = sorted({k[0] for k in cells})
    lines = [f"| {metric} removed | allocation | criterion | seeds | acc. before fine-tune | acc. after fine-tune |",
             "| --- | --- | --- | --- | --- | --- |"]
    for budget in budgets:
        keys = sorted((k for k in cells if k[0] == budget), key=lambda k: -np.mean([r["after"] for r in cells[k]]))
        for k in keys:
            rs = cells[k]
            pre = np.array([r["before_finetune"] for r in rs])
            post = np.array([r["after"] for r in rs])
            lines.append(f"| {budget:.0%} | {k[1]} | {k[2]} | {len(rs)} | {pre.mean():.4f} ± {pre.std():.4f} | "
                         f"**{post.mean():.4f} ± {post.std():.4f}** |" if k == keys[0] else
                         f"| {budget:.0%} | {k[1]} | {k[2]} | {len(rs)} | {pre.mean():.4f} ± {pre.std():.4f} | {post.mean():.4f} ± {post.std():.4f} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, metric: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    series: dict[tuple, dict[float, list]] = {}
    for r in rows:
        series.setdefault((r["allocation"], r["criterion"]), {}).setdefault(r["kept"], []).append(r)
    for (alloc, crit), points in sorted(series.items()):
        xs = sorted(points)
        for ax, key in zip(axes, ("before_finetune", "after")):
            ys = [np.mean([r[key] for r in points[x]]) for x in xs]
            es = [np.std([r[key] for r in points[x]]) for x in xs]
            ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=f"{crit} / {alloc}")
    for ax, title in zip(axes, ("before fine-tuning", "after fine-tuning")):
        ax.set_xlabel(f"fraction of {metric} kept")
        ax.set_ylabel("test accuracy")
        ax.set_title(title)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--measurement", required=True, help="prune-snr measure --out folder of this checkpoint")
    parser.add_argument("--dataset")
    parser.add_argument("--data-dir")
    parser.add_argument("--criteria", default="snr,l1,taylor,lamp,random")
    parser.add_argument("--allocations", default="uniform",
                        help="uniform, measured, global; NAME+truncate also cuts the layers that add < 0.5 points (VGG)")
    parser.add_argument("--budgets", default="0.3,0.5,0.7")
    parser.add_argument("--metric", default="macs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--finetune-fraction", type=float, default=1.0,
                        help="fine-tune on this seeded fraction of the training split (a cheaper, equal budget for every cell)")
    parser.add_argument("--round-to", type=int, default=None, help="channel alignment of every cell (default: prune's; 1 = off)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)

    out = Path(args.out)
    results_path = out / "results.json"
    rows = json.loads(results_path.read_text())["rows"] if results_path.exists() else []
    done = {(r["criterion"], r["allocation"], r["budget"], r["seed"]) for r in rows}
    payload = load_checkpoint(args.checkpoint)
    dataset = args.dataset or payload["config"]["train"]["dataset"]
    measurement = Measurement.load(args.measurement)
    machine = f"{platform.node()} ({torch.get_num_threads()} CPU threads, {'CUDA ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'})"
    for budget in [float(b) for b in args.budgets.split(",")]:
        for allocation in args.allocations.split(","):
            for criterion in args.criteria.split(","):
                for seed in [int(s) for s in args.seeds.split(",")]:
                    if (criterion, allocation, budget, seed) in done:
                        continue
                    torch.manual_seed(seed)
                    t0 = time.perf_counter()
                    model = prune_snr.load(args.checkpoint)
                    try:
                        _, report = prune(model, dataset, data_dir=args.data_dir, target=budget, metric=args.metric, criterion=criterion,
                                          allocation=allocation.removesuffix("+truncate"), truncate_layers=allocation.endswith("+truncate"),
                                          measurement=measurement, finetune_epochs=args.finetune_epochs,
                                          finetune_lr=args.finetune_lr, finetune_fraction=args.finetune_fraction,
                                          round_to=args.round_to, seed=seed, device=args.device)
                    except PruneSnrError as exc:  # e.g. a budget this allocation cannot reach: say so, go on
                        print(f"{criterion:>12} {allocation:>8} {budget:.0%} seed {seed}: skipped ({exc})", flush=True)
                        continue
                    row = {"criterion": criterion, "allocation": allocation, "budget": budget, "seed": seed,
                           "removed": report["search"]["removed"], "kept": round(1 - budget, 2),
                           "before_finetune": report["pruned_before_finetune"]["accuracy"], "after": report["after"]["accuracy"],
                           "baseline": report["before"]["accuracy"], "params": report["after"]["params"], "macs": report["after"]["macs"],
                           "seconds": time.perf_counter() - t0}
                    rows.append(row)
                    atomic_save_json(results_path, {"machine": machine, "args": vars(args), "rows": rows})
                    print(f"{criterion:>12} {allocation:>8} {budget:.0%} seed {seed}: before ft {row['before_finetune']:.4f} "
                          f"after ft {row['after']:.4f} ({row['seconds']:.0f} s)", flush=True)
    table = summarise(rows, args.metric)
    fraction = f" on {args.finetune_fraction:.0%} of the training split" if args.finetune_fraction < 1 else ""
    header = (f"Model {args.checkpoint} ({dataset}, test split, baseline accuracy {rows[0]['baseline']:.4f}); "
              f"fine-tuning: {args.finetune_epochs} epoch(s){fraction}, SGD lr {args.finetune_lr} cosine, batch 128; seeds {args.seeds}; "
              f"machine: {machine}.\n\n")
    atomic_save_text(out / "table.md", header + table + "\n")
    plot(rows, out / "accuracy_vs_kept.png", args.metric)
    print(header + table)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
