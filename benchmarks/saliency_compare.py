"""Saliency criteria × allocation × depth × budget in fair cells: equal budget, equal training, the same seeds.

Every cell prunes the same trained model with torch-pruning to the same MACs (or params) budget,
fine-tunes it for the same number of epochs on the training split less its validation part, and
records test accuracy before and after fine-tuning with params, MACs and ONNX Runtime latency at
batch 32 kept (whichever metric the budget is on, the others are shown). Decisions (allocation,
cut, SNR) read the validation split only. Arms (``--allocations``):

- ``uniform``, ``global``: torch-pruning's own allocations;
- ``measured``: METHOD's per-layer ratios from the measured validation head accuracy;
  ``gain-per-mac``: from that accuracy gain per MAC of the layer; ``snr``: from the layer SNR;
- ``NAME+truncate``: cut where later layers add < ``--delta`` validation accuracy, then prune
  what remains with allocation NAME;
- ``NAME+depth``: the depth baseline: cut after the deepest point whose cut alone meets the
  budget (reads no accuracy);
- ``NAME+deeper``: the deeper of the measured and the budget-only cut;
- ``NAME+remeasure``: prune in 2 equal steps, measuring the pruned model anew between them
  (its measurement time is in the cell's seconds);
- ``NAME+drop``: drop residual blocks that cost < ``--delta`` validation accuracy first.

A cut model's classifier is the measured linear head of its cut point (``head_epochs`` epochs on
frozen features, part of the measurement every measured arm shares); the depth baseline uses the
same heads, so no cell gets training another does not. Results are appended to a JSON file as
they finish (a rerun skips finished cells), then summarised as a Markdown table (mean ± std over
seeds; a difference is a win only beyond twice the pooled seed std) and a PNG.

    python benchmarks/saliency_compare.py runs/demo/model.pt --measurement runs/demo/measurement \\
        --criteria l1,snr --allocations uniform,measured,uniform+truncate,uniform+depth --budgets 0.5 --seeds 0,1,2 --out runs/fair
"""
from __future__ import annotations

import argparse
import json
import math
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
from prune_snr.measure.plots import save_figure
from prune_snr.prune import prune

from prune_snr.choices import MEASURED_ALLOCATIONS as MEASUREMENT_DRIVEN_ALLOCATIONS

#: arm suffix -> the prune options it adds
ARM_SUFFIXES = {"+truncate": {"truncate": True, "cut": "measured"}, "+depth": {"truncate": True, "cut": "budget"},
                "+deeper": {"truncate": True, "cut": "deeper"},
                "+remeasure": {"iterative_steps": 2, "remeasure": True}, "+drop": {"drop_blocks": True}}


def split_arm(arm: str) -> tuple[str, dict]:
    """``"uniform+depth"`` -> ``("uniform", {"truncate": True, "cut": "budget"})``; ``"measured"`` -> ``("measured", {})``.

    Suffixes combine: ``"measured+truncate+remeasure"``.
    """
    options, found = {}, True
    while found:
        found = False
        for suffix, extra in ARM_SUFFIXES.items():
            if arm.endswith(suffix):
                arm, found = arm.removesuffix(suffix), True
                options.update(extra)
    return arm, options


def measurement_driven(allocation: str, criterion: str) -> bool:
    base, options = split_arm(allocation)
    return base in MEASUREMENT_DRIVEN_ALLOCATIONS or options.get("cut") in ("measured", "deeper") or criterion.startswith("snr")


def baseline(allocation: str, criterion: str) -> bool:
    """torch-pruning alone (a budget-only cut counts: it reads no measurement), random excluded."""
    return not measurement_driven(allocation, criterion) and criterion != "random"


def mean_std(values) -> tuple[float, float]:
    v = np.asarray(values, dtype=float)
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan")


def compare(rows: list[dict], budget: float, key: str = "after") -> dict | None:
    """The best measurement-driven cell against the best baseline cell at ``budget``: the difference
    of their means and whether it exceeds twice the pooled seed std (a win, a loss, or a tie)."""
    cells: dict[tuple, list[float]] = {}
    for r in rows:
        if r["budget"] == budget:
            cells.setdefault((r["allocation"], r["criterion"]), []).append(r[key])
    driven = [(np.mean(v), k) for k, v in cells.items() if measurement_driven(*k)]
    base = [(np.mean(v), k) for k, v in cells.items() if baseline(*k)]
    if not driven or not base:
        return None
    (dm, dk), (bm, bk) = max(driven), max(base)
    sd, sb = mean_std(cells[dk])[1], mean_std(cells[bk])[1]
    pooled = math.sqrt((sd**2 + sb**2) / 2) if not (math.isnan(sd) or math.isnan(sb)) else float("nan")
    diff = float(dm - bm)
    verdict = ("n < 2 seeds: undecided" if math.isnan(pooled) else
               "win" if diff > 2 * pooled else "loss" if diff < -2 * pooled else "no significant difference")
    return {"driven": dk, "driven_mean": float(dm), "baseline": bk, "baseline_mean": float(bm), "diff": diff,
            "two_pooled_std": 2 * pooled, "verdict": verdict, "n": (len(cells[dk]), len(cells[bk]))}


def summarise(rows: list[dict], metric: str) -> str:
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["budget"], r["allocation"], r["criterion"]), []).append(r)
    lines = [f"| {metric} removed | arm | criterion | seeds | params kept | MACs kept | latency b32 kept | cut after | "
             "acc. before fine-tune | acc. after fine-tune |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for budget in sorted({k[0] for k in cells}):
        keys = sorted((k for k in cells if k[0] == budget), key=lambda k: -np.mean([r["after"] for r in cells[k]]))
        for k in keys:
            rs = cells[k]
            pre, post = mean_std([r["before_finetune"] for r in rs]), mean_std([r["after"] for r in rs])
            lat = [r["latency_b32_kept"] for r in rs if r.get("latency_b32_kept") is not None]
            cut = sorted({str(r.get("cut_after") or "-") + (f" -{len(r['dropped'])} blocks" if r.get("dropped") else "") for r in rs})
            after = f"{post[0]:.4f} ± {post[1]:.4f}"
            lines.append(f"| {budget:.0%} | {k[1]} | {k[2]} | {len(rs)} ({','.join(str(r['seed']) for r in rs)}) | "
                         f"{np.mean([r['params_kept'] for r in rs]):.3f} | {np.mean([r['macs_kept'] for r in rs]):.3f} | "
                         f"{(f'{np.median(lat):.2f}' if lat else '-')} | {'/'.join(cut)} | {pre[0]:.4f} ± {pre[1]:.4f} | "
                         + (f"**{after}** |" if k == keys[0] else f"{after} |"))
    return "\n".join(lines)


def verdict_lines(rows: list[dict]) -> list[str]:
    out = []
    for budget in sorted({r["budget"] for r in rows}):
        for key, when in (("after", "after fine-tuning"), ("before_finetune", "before fine-tuning")):
            c = compare(rows, budget, key)
            if c:
                out.append(f"- {budget:.0%} removed, {when}: best measurement-driven {c['driven'][1]}/{c['driven'][0]} "
                           f"{c['driven_mean']:.4f} vs best torch-pruning {c['baseline'][1]}/{c['baseline'][0]} {c['baseline_mean']:.4f}: "
                           f"{100 * c['diff']:+.2f} pts, 2× pooled std {100 * c['two_pooled_std']:.2f} pts -> **{c['verdict']}** "
                           f"(n = {c['n'][0]}, {c['n'][1]})")
    return out


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
    save_figure(fig, path)  # atomic, closes the figure


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--measurement", required=True, help="prune-snr measure --out folder of this checkpoint")
    parser.add_argument("--dataset")
    parser.add_argument("--data-dir")
    parser.add_argument("--criteria", default="snr,l1,taylor,lamp,random")
    parser.add_argument("--allocations", default="uniform",
                        help="uniform, measured, global; NAME+truncate (measured cut) or NAME+depth (budget-only cut)")
    parser.add_argument("--budgets", default="0.3,0.5,0.7")
    parser.add_argument("--metric", default="macs")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--delta", type=float, default=0.005, help="truncation threshold of the +truncate arms")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument("--finetune-fraction", type=float, default=1.0,
                        help="fine-tune on this seeded fraction of the training split (a cheaper, equal budget for every cell)")
    parser.add_argument("--round-to", type=int, default=None, help="channel alignment of every cell (default: prune's; 1 = off)")
    parser.add_argument("--latency-batch", type=int, default=32, help="ONNX Runtime batch of the latency column (0 = no latency)")
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
    original = prune_snr.load(args.checkpoint)
    meter = None
    if args.latency_batch:
        from prune_snr.export import LatencyMeter

        meter = LatencyMeter(original, batch=args.latency_batch)
    try:
        for budget in [float(b) for b in args.budgets.split(",")]:
            for arm in args.allocations.split(","):
                allocation, arm_options = split_arm(arm)
                for criterion in args.criteria.split(","):
                    for seed in [int(s) for s in args.seeds.split(",")]:
                        if (criterion, arm, budget, seed) in done:
                            continue
                        torch.manual_seed(seed)
                        t0 = time.perf_counter()
                        try:
                            pruned, report = prune(prune_snr.load(args.checkpoint), dataset, data_dir=args.data_dir, target=budget,
                                                   metric=args.metric, criterion=criterion, allocation=allocation, delta=args.delta,
                                                   measurement=measurement, **arm_options,
                                                   finetune_epochs=args.finetune_epochs, finetune_lr=args.finetune_lr,
                                                   finetune_fraction=args.finetune_fraction, round_to=args.round_to, seed=seed,
                                                   device=args.device)
                        except PruneSnrError as exc:  # e.g. a budget this allocation cannot reach: say so, go on
                            print(f"{criterion:>12} {arm:>16} {budget:.0%} seed {seed}: skipped ({exc})", flush=True)
                            continue
                        seconds = time.perf_counter() - t0
                        before, after = report["before"], report["after"]
                        row = {"criterion": criterion, "allocation": arm, "budget": budget, "seed": seed,
                               "removed": report["search"]["removed"], "kept": round(1 - budget, 2),
                               "before_finetune": report["pruned_before_finetune"]["accuracy"], "after": after["accuracy"],
                               "val_after": after["val_accuracy"], "baseline": before["accuracy"],
                               "params": after["params"], "macs": after["macs"],
                               "params_kept": after["params"] / before["params"], "macs_kept": after["macs"] / before["macs"],
                               "latency_b32_kept": meter.fraction(pruned) if meter else None,
                               "cut_after": (report.get("truncation") or {}).get("cut_after"),
                               "dropped": (report.get("blocks") or {}).get("dropped"), "seconds": seconds}
                        rows.append(row)
                        atomic_save_json(results_path, {"machine": machine, "args": vars(args), "rows": rows})
                        print(f"{criterion:>12} {arm:>16} {budget:.0%} seed {seed}: before ft {row['before_finetune']:.4f} "
                              f"after ft {row['after']:.4f}, params {row['params_kept']:.3f} MACs {row['macs_kept']:.3f} kept "
                              f"({seconds:.0f} s)", flush=True)
    finally:
        if meter:
            meter.close()
    if not rows:
        print("no cell finished (see the reasons above)", file=sys.stderr)
        return 1
    table = summarise(rows, args.metric)
    fraction = f" on {args.finetune_fraction:.0%} of the training split" if args.finetune_fraction < 1 else ""
    seeds = sorted({r["seed"] for r in rows})
    counts = sorted({sum(1 for r in rows if (r["budget"], r["allocation"], r["criterion"]) == k)
                     for k in {(r["budget"], r["allocation"], r["criterion"]) for r in rows}})
    head_epochs = measurement.meta["options"].get("head_epochs")
    header = (f"Model {args.checkpoint} ({dataset}; test split grades, validation split decides; baseline accuracy "
              f"{rows[0]['baseline']:.4f}); fine-tuning: {args.finetune_epochs} epoch(s){fraction}, SGD lr {args.finetune_lr} "
              f"cosine, batch 128, the same in every cell; seeds per cell: {'/'.join(map(str, counts))} (from {seeds}); cut "
              f"models' classifiers are the measurement's linear heads ({head_epochs} epochs on frozen features, shared by the "
              f"+truncate and +depth arms); latency: ONNX Runtime CPU at batch {args.latency_batch}, fraction of the original's "
              f"(median of paired rounds); machine: {machine}.\n\n")
    verdicts = verdict_lines(rows)
    atomic_save_text(out / "table.md", header + table + "\n\n" + "\n".join(verdicts) + "\n")
    plot(rows, out / "accuracy_vs_kept.png", args.metric)
    print(header + table + "\n\n" + "\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
