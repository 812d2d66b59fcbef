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

A cut model's classifier is the measured linear head of its cut point (trained on frozen features,
part of the measurement); with ``--refit-epochs N`` every arm's classifier, cut or not, is then refit on
its own frozen pruned features with the heads' trainer, so width arms get the training cut arms' heads
had. Without ``--measurement`` each seed measures the checkpoint anew with its own heads' seed and
validation split (``--split-seed``, drawn from the images the training held out), so a seed varies
everything random: heads, split, fine-tuning. Results are appended to a JSON file as
they finish (a rerun skips finished cells), then summarised as a Markdown table (mean ± std over
seeds; a difference is a win only beyond twice the pooled seed std) and a PNG.

    python benchmarks/saliency_compare.py runs/demo/model.pt --refit-epochs 30 \\
        --criteria l1,snr --allocations uniform,measured,uniform+truncate,uniform+depth --budgets 0.5 \\
        --seeds 0,1,2 --out runs/fair
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import prune_snr
from prune_snr.atomic import atomic_save_text
from prune_snr.choices import CLUSTERS, CRITERIA
from prune_snr.choices import MEASURED_ALLOCATIONS as MEASUREMENT_DRIVEN_ALLOCATIONS
from prune_snr.config import MeasureConfig
from prune_snr.errors import PruneSnrError, run_script
from prune_snr.measure import Measurement, measure_checkpoint
from prune_snr.measure.plots import save_figure
from prune_snr.prune import prune

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, floats, ints, load_results, load_run, machine_line, save_results, script_parser  # noqa: E402
from _rule import both_splits, mean_std, rule  # noqa: E402

#: arm suffix -> the prune options it adds
ARM_SUFFIXES = {
    "+truncate": {"truncate": True, "cut": "measured"},
    "+depth": {"truncate": True, "cut": "budget"},
    "+deeper": {"truncate": True, "cut": "deeper"},
    "+remeasure": {"iterative_steps": 2, "remeasure": True},
    "+drop": {"drop_blocks": True},
}


def split_arm(arm: str) -> tuple[str, dict]:
    """``"uniform+depth"`` -> ``("uniform", {"truncate": True, "cut": "budget"})``; ``"measured"`` ->
    ``("measured", {})``.

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
    return (
        base in MEASUREMENT_DRIVEN_ALLOCATIONS
        or options.get("cut") in ("measured", "deeper")
        or criterion.startswith("snr")
    )


def baseline(allocation: str, criterion: str) -> bool:
    """torch-pruning alone (a budget-only cut counts: it reads no measurement), random excluded."""
    return not measurement_driven(allocation, criterion) and criterion != "random"


#: a more accurate cell that keeps this much more (relative) of the other size metric than its rival is "not comparable"
COMPARABLE = 0.10


def missed(rows: list[dict], budget: float, metric: str) -> float | None:
    """The fraction of ``metric`` a cell keeps where it is more than 10 % above what ``budget`` leaves (an allocation
    that cannot remove that much stops short of it): not a cell at this budget. None where it reached it."""
    key = "latency_b32_kept" if metric == "latency" else f"{metric}_kept"
    values = [r[key] for r in rows if r.get(key) is not None]
    kept = float(np.mean(values)) if values else None
    return kept if kept is not None and kept > (1 - budget) * (1 + COMPARABLE) else None


def binomial_se(rows: list[dict]) -> float:
    """The test split's own sampling noise of an accuracy near the rows' mean: sqrt(p (1 - p) / n)."""
    p = float(np.mean([r["after"] for r in rows]))
    n = rows[0].get("test_size") or 10_000  # Fashion-MNIST's and CIFAR's test split
    return math.sqrt(p * (1 - p) / n)


def cells_at(rows: list[dict], budget: float) -> dict[tuple[str, str], list[dict]]:
    """``(allocation, criterion) -> rows`` at ``budget``, validation-graded rows only."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["budget"] == budget and r.get("val_after") is not None:
            cells.setdefault((r["allocation"], r["criterion"]), []).append(r)
    return cells


def judge(a: list[dict], b: list[dict], metric: str = "macs") -> dict:
    """Cell ``a`` against cell ``b`` on validation and on test over the seeds both have: mean difference, 2 × pooled
    seed std, the paired 95 % t-interval, and a verdict per split and for both.

    A difference is a win (or loss) only when it exceeds twice the pooled seed std *and* the paired interval
    excludes 0; one whose more accurate arm keeps more than 10 % more of the other size metric (MACs for a params
    budget, params for a MACs budget) is "not comparable". The overall verdict needs both splits to agree.
    """
    # paired: both cells over the seeds they share, so a cell with more seeds is not compared on other draws
    shared = {r["seed"] for r in a} & {r["seed"] for r in b}
    if shared:
        a, b = [r for r in a if r["seed"] in shared], [r for r in b if r["seed"] in shared]
    other = "params_kept" if metric == "macs" else "macs_kept"
    a_other, b_other = (float(np.mean([r.get(other, math.nan) for r in x])) for x in (a, b))
    result = {
        "n": (len(a), len(b)),
        "other_metric": other,
        "other_kept": (a_other, b_other),
        "test_binomial_se": binomial_se(a + b),
    }
    for split, key in (("val", "val_after"), ("test", "after")):
        v = rule({r["seed"]: r[key] for r in a}, {r["seed"]: r[key] for r in b})
        direction = v["direction"]
        # the more accurate arm may have bought it with the other metric: then the cells are not comparable
        winner_other, loser_other = (a_other, b_other) if direction == "win" else (b_other, a_other)
        if direction and loser_other > 0 and winner_other > (1 + COMPARABLE) * loser_other:
            more = winner_other / loser_other - 1
            v["verdict"] = f"not comparable (the more accurate arm keeps {more:.0%} more {other.removesuffix('_kept')})"
        result[split] = {"driven_mean": v.pop("a_mean"), "baseline_mean": v.pop("b_mean"), **v}
    val, test = result["val"], result["test"]
    result["verdict"] = both_splits(val, test)  # validation's verdict when both splits agree, "not comparable" included
    if result["verdict"] in ("win", "loss") and test["verdict"].startswith("not comparable"):  # bought, as test shows
        result["verdict"] = test["verdict"]
    return result


def best_on_validation(cells: dict[tuple, list[dict]], keys: list[tuple]) -> tuple:
    """The cell with the highest mean validation accuracy, over the seeds all ``keys`` share (the validation split
    changes with the seed, so means over different seeds are not like for like); over each cell's own if none."""
    common = set.intersection(*({r["seed"] for r in cells[k]} for k in keys))
    return max(keys, key=lambda k: np.mean([r["val_after"] for r in cells[k] if not common or r["seed"] in common]))


def compare(rows: list[dict], budget: float, metric: str = "macs") -> dict | None:
    """The best measurement-driven arm against the best baseline arm at ``budget``, each side's best chosen on
    *validation* accuracy after fine-tuning (METHOD.md), judged on validation and on test (:func:`judge`).

        >>> c = compare(rows, 0.5, "macs")  # doctest: +SKIP
        >>> c["driven"], c["baseline"], c["val"]["verdict"], c["test"]["verdict"], c["verdict"]  # doctest: +SKIP
    """
    cells = cells_at(rows, budget)
    short = {k: kept for k in cells if (kept := missed(cells[k], budget, metric)) is not None}
    cells = {k: v for k, v in cells.items() if k not in short}
    base = [k for k in cells if baseline(*k)]
    inert = {k: twin for k in cells if measurement_driven(*k) for twin in base if same_rows(cells[k], cells[twin])}
    driven = [k for k in cells if measurement_driven(*k) and k not in inert]
    if not driven or not base:
        return None
    best = {side: best_on_validation(cells, keys) for side, keys in (("driven", driven), ("base", base))}
    return {
        "driven": best["driven"],
        "baseline": best["base"],
        "inert": inert,
        "missed": short,
        **judge(cells[best["driven"]], cells[best["base"]], metric),
    }


def same_rows(a: list[dict], b: list[dict]) -> bool:
    """Two cells that gave the same model at every seed (same accuracies and sizes): a measurement-driven arm whose
    measurement did not act (e.g. ``--cut deeper`` taking the budget's own cut), not a contender of its own."""
    fields = ("val_after", "after", "params", "macs", "params_kept", "macs_kept")
    by_seed = {r["seed"]: tuple(r.get(f) for f in fields) for r in b}
    return {r["seed"] for r in a} == set(by_seed) and all(
        tuple(r.get(f) for f in fields) == by_seed[r["seed"]] for r in a
    )


def contrasts(rows: list[dict], budget: float, metric: str = "macs") -> list[dict]:
    """The named questions a study's rows can answer at ``budget``, each a :func:`judge` of two cells:

    - *where to cut*: ``X+truncate`` (the measured cut) against ``X+depth`` (the budget-only cut), same criterion;
    - *which filters*: ``snr``, ``snr-strength`` and ``random`` against ``l1`` under the same allocation.
    """
    cells = cells_at(rows, budget)
    out = []
    for (allocation, criterion), a in sorted(cells.items()):
        if allocation.endswith("+truncate") and (allocation.removesuffix("+truncate") + "+depth", criterion) in cells:
            b = (allocation.removesuffix("+truncate") + "+depth", criterion)
            out.append(
                {
                    "question": "where to cut (measured vs budget-only cut)",
                    "a": (allocation, criterion),
                    "b": b,
                    **judge(a, cells[b], metric),
                }
            )
        if criterion in ("snr", "snr-strength", "random") and (allocation, "l1") in cells:
            out.append(
                {
                    "question": f"which filters ({criterion} vs l1)",
                    "a": (allocation, criterion),
                    "b": (allocation, "l1"),
                    **judge(a, cells[(allocation, "l1")], metric),
                }
            )
    return out


def _splits(v: dict) -> str:
    return "; ".join(
        f"{split} {v[split]['driven_mean']:.4f} vs {v[split]['baseline_mean']:.4f}, {100 * v[split]['diff']:+.2f} pts "
        f"(2× pooled std {100 * v[split]['two_pooled_std']:.2f}, paired 95 % [{100 * v[split]['paired_95'][0]:+.2f}, "
        f"{100 * v[split]['paired_95'][1]:+.2f}], {v[split]['pairs']} seeds) -> **{v[split]['verdict']}**"
        + _margin(v[split])
        for split in ("val", "test")
    )


def _margin(v: dict) -> str:
    """How far a win or loss clears 2 × pooled std: a verdict won by less than a tenth of a point is said to be."""
    if v["verdict"] not in ("win", "loss"):
        return ""
    margin = 100 * (abs(v["diff"]) - v["two_pooled_std"])
    return f" (beyond 2× pooled std by {margin:.2f} pts{': by a hair' if margin < 0.1 else ''})"


def verdict_lines(rows: list[dict], metric: str = "macs") -> list[str]:
    """Per budget: each side's validation-chosen best arm, then every :func:`contrasts` question the rows hold,
    each with its verdict on validation and on test."""
    out = []
    for budget in sorted({r["budget"] for r in rows}):
        c = compare(rows, budget, metric)
        if c:
            other = c["other_metric"].removesuffix("_kept")
            out.append(
                f"- {budget:.0%} removed: best measurement-driven {c['driven'][1]}/{c['driven'][0]} vs best "
                f"torch-pruning {c['baseline'][1]}/{c['baseline'][0]} (each chosen on validation; {other} kept "
                f"{c['other_kept'][0]:.3f} vs {c['other_kept'][1]:.3f}): "
                + _splits(c)
                + f"; test split's binomial SE {100 * c['test_binomial_se']:.2f} pts; verdict (a win needs both "
                f"splits): **{c['verdict']}**"
            )
            for arm, kept in sorted(c["missed"].items()):
                out.append(
                    f"- {budget:.0%} removed: {arm[1]}/{arm[0]} stops at {kept:.3f} of the {metric} kept (the budget "
                    f"leaves {1 - budget:.3f}), so it is not a contender at this budget"
                )
            for arm, twin in sorted(c["inert"].items()):
                out.append(
                    f"- {budget:.0%} removed: {arm[1]}/{arm[0]} is {twin[1]}/{twin[0]} at every seed (the same "
                    "accuracies and sizes: the measurement did not act), so it is not a contender of its own"
                )
        for q in contrasts(rows, budget, metric):
            other = q["other_metric"].removesuffix("_kept")
            out.append(
                f"- {budget:.0%} removed, {q['question']}: {q['a'][1]}/{q['a'][0]} vs {q['b'][1]}/{q['b'][0]} "
                f"({other} kept {q['other_kept'][0]:.3f} vs {q['other_kept'][1]:.3f}): "
                + _splits(q)
                + f"; verdict: **{q['verdict']}**"
            )
    return out


def kept(rows: list[dict], key: str) -> str:
    """Mean of a size fraction over rows, "-" where early studies did not record it."""
    values = [r[key] for r in rows if r.get(key) is not None]
    return f"{np.mean(values):.3f}" if values else "-"


def _mean_std(values: list[float]) -> str:
    if not values:
        return "-"
    mean, std = mean_std(values)
    return f"{mean:.4f}" if len(values) == 1 else f"{mean:.4f} ± {std:.4f}"


def summarise(rows: list[dict], metric: str) -> str:
    """One Markdown row per cell, mean ± std over its seeds; cells ordered by validation accuracy after fine-tuning
    (what decisions read; test where a study has no validation figures), the first one's figure in bold."""
    cells: dict[tuple, list[dict]] = {}
    for r in rows:
        cells.setdefault((r["budget"], r["allocation"], r["criterion"]), []).append(r)
    lines = [
        f"| {metric} removed | arm | criterion | seeds | params kept | MACs kept | latency b32 kept | cut after | "
        "acc. before fine-tune | val. acc. after fine-tune | acc. after fine-tune |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for budget in sorted({k[0] for k in cells}):
        at = [k for k in cells if k[0] == budget]
        by_val = all(r.get("val_after") is not None for k in at for r in cells[k])
        keys = sorted(at, key=lambda k: -np.mean([r["val_after" if by_val else "after"] for r in cells[k]]))
        for k in keys:
            rs = cells[k]
            lat = [r["latency_b32_kept"] for r in rs if r.get("latency_b32_kept") is not None]
            cut = sorted(
                {
                    str(r.get("cut_after") or "-") + (f" -{len(r['dropped'])} blocks" if r.get("dropped") else "")
                    for r in rs
                }
            )
            val = _mean_std([r["val_after"] for r in rs if r.get("val_after") is not None])
            after = _mean_std([r["after"] for r in rs])
            if k == keys[0]:
                val, after = (f"**{val}**", after) if by_val else (val, f"**{after}**")
            lines.append(
                f"| {budget:.0%} | {k[1]} | {k[2]} | {len(rs)} ({','.join(str(r['seed']) for r in rs)}) | "
                f"{kept(rs, 'params_kept')} | {kept(rs, 'macs_kept')} | "
                f"{(f'{np.median(lat):.2f}' if lat else '-')} | {'/'.join(cut)} | "
                f"{_mean_std([r['before_finetune'] for r in rs])} | {val} | {after} |"
            )
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
    save_figure(fig, path)  # atomic, closes the figure


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint")
    parser.add_argument(
        "--measurement",
        help="prune-snr measure --out folder of this checkpoint, shared by every seed "
        "(default: each seed measures anew into OUT/measurements/seed_S with that seed's heads and --split-seed)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=None,
        help="validation split of the per-seed measurements, drawn with --split-seed S from what the checkpoint held "
        "out (default: half of what it held out)",
    )
    parser.add_argument(
        "--refit-epochs",
        type=int,
        default=0,
        help="every arm's classifier is refit on its frozen pruned features for up to N epochs before fine-tuning",
    )
    parser.add_argument("--dataset")
    parser.add_argument("--data-dir")
    parser.add_argument("--criteria", default="snr,l1,taylor,lamp,random")
    parser.add_argument(
        "--allocations",
        default="uniform",
        help="uniform, measured, global; NAME+truncate (measured cut) or NAME+depth (budget-only cut)",
    )
    parser.add_argument("--budgets", default="0.3,0.5,0.7")
    parser.add_argument("--metric", default="macs")
    add_standard(parser, "seeds")
    parser.add_argument("--delta", type=float, default=0.005, help="truncation threshold of the +truncate arms")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--finetune-lr", type=float, default=0.01)
    parser.add_argument(
        "--finetune-fraction",
        type=float,
        default=1.0,
        help="fine-tune on this seeded fraction of the training split (a cheaper, equal budget for every cell)",
    )
    parser.add_argument(
        "--clusters",
        default=CLUSTERS.default,
        choices=list(CLUSTERS),
        help="what a cluster is in each seed's measurement (the SNR criteria read it)",
    )
    parser.add_argument(
        "--points",
        default=None,
        help="points of each seed's measurement (default: a point for every channel group where a criterion "
        "reads the measurement, else the model's default points)",
    )
    parser.add_argument(
        "--round-to", type=int, default=None, help="channel alignment of every cell (default: prune's; 1 = off)"
    )
    parser.add_argument(
        "--latency-batch", type=int, default=32, help="ONNX Runtime batch of the latency column (0 = no latency)"
    )
    add_standard(parser, "device", "out")
    args = parser.parse_args(argv)

    out = Path(args.out)
    results_path = out / "results.json"
    rows = load_results(results_path, {"rows": []})["rows"]
    done = {(r["criterion"], r["allocation"], r["budget"], r["seed"]) for r in rows}
    run = load_run(args.checkpoint, args.measurement)
    dataset = args.dataset or run.dataset
    shared = run.measurement
    held_out = (run.payload["config"].get("train") or {}).get("val_fraction") or 0.1
    val_fraction = args.val_fraction if args.val_fraction is not None else held_out / 2
    measured = any(c in CRITERIA.measured for c in args.criteria.split(","))
    points = args.points or ("groups" if measured else "all")

    def measurement_of(seed: int) -> Measurement:
        """The shared measurement, or this seed's own (its heads' seed and its validation split),
        measured once and kept."""
        if shared is not None:
            return shared
        folder = out / "measurements" / f"seed_{seed}"
        if (folder / "measurement.json").is_file():
            return Measurement.load(folder)
        cfg = MeasureConfig(
            dataset=dataset,
            data_dir=args.data_dir,
            seed=seed,
            split_seed=seed,
            val_fraction=val_fraction,
            device=args.device,
            clusters=args.clusters,
            points=points,
        )
        print(
            f"measuring seed {seed} (heads' seed and --split-seed {seed}, validation "
            f"{val_fraction:g} of the training split)",
            flush=True,
        )
        return measure_checkpoint(args.checkpoint, cfg, out=folder, plots=False)

    machine = machine_line()
    original = prune_snr.load(args.checkpoint)
    meter = None
    if args.latency_batch:
        from prune_snr.latency import LatencyMeter

        meter = LatencyMeter(original, batch=args.latency_batch)
    try:
        # seeds outermost: a run cut short leaves every cell with the same, paired seeds
        for seed in ints(args.seeds):
            for budget in floats(args.budgets):
                for arm in args.allocations.split(","):
                    allocation, arm_options = split_arm(arm)
                    for criterion in args.criteria.split(","):
                        if (criterion, arm, budget, seed) in done:
                            continue
                        measurement = measurement_of(seed)
                        torch.manual_seed(seed)
                        t0 = time.perf_counter()
                        try:
                            pruned, report = prune(
                                prune_snr.load(args.checkpoint),
                                dataset,
                                data_dir=args.data_dir,
                                target=budget,
                                metric=args.metric,
                                criterion=criterion,
                                allocation=allocation,
                                delta=args.delta,
                                measurement=measurement,
                                **arm_options,
                                finetune_epochs=args.finetune_epochs,
                                finetune_lr=args.finetune_lr,
                                finetune_fraction=args.finetune_fraction,
                                round_to=args.round_to,
                                seed=seed,
                                refit_epochs=args.refit_epochs,
                                # "before ft" is the model as pruned (fine-tuning is the same either way)
                                bn_recalibrate=0,
                                device=args.device,
                            )
                        except PruneSnrError as exc:  # e.g. a budget this allocation cannot reach: say so, go on
                            print(f"{criterion:>12} {arm:>16} {budget:.0%} seed {seed}: skipped ({exc})", flush=True)
                            continue
                        seconds = time.perf_counter() - t0
                        before, after = report["before"], report["after"]
                        row = {
                            "criterion": criterion,
                            "allocation": arm,
                            "budget": budget,
                            "seed": seed,
                            "removed": report["search"]["removed"],
                            "kept": round(1 - budget, 2),
                            "before_finetune": report["pruned_before_finetune"]["accuracy"],
                            "after": after["accuracy"],
                            "val_after": after["val_accuracy"],
                            "baseline": before["accuracy"],
                            "params": after["params"],
                            "macs": after["macs"],
                            "params_kept": after["params"] / before["params"],
                            "macs_kept": after["macs"] / before["macs"],
                            "latency_b32_kept": meter.fraction(pruned) if meter else None,
                            "cut_after": (report.get("truncation") or {}).get("cut_after"),
                            "dropped": (report.get("blocks") or {}).get("dropped"),
                            "seconds": seconds,
                            "split_seed": report.get("split_seed"),
                            "val_size": report["split_sizes"]["val"],
                            "test_size": report["split_sizes"]["test"],
                            "refit_epochs_used": (report.get("refit") or {}).get("epochs_used"),
                            # groups a measured criterion could not score (no measured conv in them): ranked by L1
                            "fallback_groups": report["search"].get("fallback_groups") or [],
                        }
                        rows.append(row)
                        save_results(results_path, {"machine": machine, "args": vars(args), "rows": rows})
                        print(
                            f"{criterion:>12} {arm:>16} {budget:.0%} seed {seed}: before ft "
                            f"{row['before_finetune']:.4f} after ft {row['after']:.4f}, params "
                            f"{row['params_kept']:.3f} MACs {row['macs_kept']:.3f} kept ({seconds:.0f} s)",
                            flush=True,
                        )
    finally:
        if meter:
            meter.close()
    if not rows:
        print("no cell finished (see the reasons above)", file=sys.stderr)
        return 1
    table = summarise(rows, args.metric)
    fraction = f" on {args.finetune_fraction:.0%} of the training split" if args.finetune_fraction < 1 else ""
    seeds = sorted({r["seed"] for r in rows})
    counts = sorted(
        {
            sum(1 for r in rows if (r["budget"], r["allocation"], r["criterion"]) == k)
            for k in {(r["budget"], r["allocation"], r["criterion"]) for r in rows}
        }
    )
    head_epochs = measurement_of(seeds[0]).config.head_epochs
    varied = (
        "each seed varies the measurement's heads, the validation split (--split-seed, "
        f"{rows[0].get('val_size')} images drawn from what training held out) and fine-tuning"
        if shared is None
        else "seeds vary fine-tuning only (one shared measurement)"
    )
    classifiers = (
        f"every arm's classifier refit on its frozen pruned features (up to {args.refit_epochs} epochs, early "
        "stopping on validation) before fine-tuning; cut models start from the measurement's heads"
        if args.refit_epochs
        else f"cut models' classifiers are the measurement's linear heads ({head_epochs} epochs on "
        "frozen features); width-pruned models keep their classifier"
    )
    header = (
        f"Model {args.checkpoint} ({dataset}; test split grades, validation split decides; baseline accuracy "
        f"{rows[0]['baseline']:.4f}); fine-tuning: {args.finetune_epochs} epoch(s){fraction}, SGD lr "
        f"{args.finetune_lr} cosine, batch 128, the same in every cell; seeds per cell: {'/'.join(map(str, counts))} "
        f"(from {seeds}; {varied}); {classifiers}; latency: ONNX Runtime CPU at batch {args.latency_batch}, fraction "
        f"of the original's (median of paired rounds); machine: {machine}.\n\n"
    )
    verdicts = verdict_lines(rows, args.metric)
    atomic_save_text(out / "table.md", header + table + "\n\n" + "\n".join(verdicts) + "\n")
    plot(rows, out / "accuracy_vs_kept.png", args.metric)
    print(header + table + "\n\n" + "\n".join(verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
