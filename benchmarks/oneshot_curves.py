"""One-shot curves: accuracy right after pruning, BatchNorm recalibrated, no fine-tuning, per criterion and MACs kept.

Without recalibration a pruned network keeps the unpruned one's BatchNorm statistics and scores near
chance whatever it kept; re-estimated on ``--batches`` training batches (``prune --bn-recalibrate``) its
accuracy ranks the prunings, where fine-tuned arms sit within tenths of a point. Every cell is
``prune_snr.prune(model, dataset, data_dir=data_dir, target=1 - kept, metric="macs", finetune_epochs=0,
bn_recalibrate=N)`` on one arm, one MACs level and one seed; it records validation and test accuracy with and without
the recalibration (``--without seed0``: on seed 0 only), params and MACs kept, and (seed 0) the ONNX Runtime
latency at batch 32 kept.

Arms: every criterion with uniform allocation; ``l1`` and ``snr`` with the measured allocation
(``+measured``); ``l1`` after the measured cut (``l1+cut``). Per arm and seed the area under the curve
(trapezoid over MACs kept, normalised by its span) on validation and on test; every arm against ``l1``
and against ``random`` by METHOD.md's rule (paired over seeds, > 2 x pooled seed std and a 95 % interval
excluding 0, on both splits). With ``--measurement`` every seed reads that measurement and its
validation split (a seed varies the recalibration batches, random draws and torch-pruning's ties);
rows accumulate in ``--out``/rows.json, so a rerun continues where it stopped.

    python benchmarks/oneshot_curves.py runs/demo/model.pt --measurement runs/demo/measurement \\
        --seeds 0,1,2,3,4 --out benchmarks/results/oneshot/vgg16_w025
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, floats, ints, load_results, load_run, machine_line, save_results, script_parser  # noqa: E402
from _rule import both_splits, mean_std, rule  # noqa: E402

CRITERIA = ("l1", "l2", "fpgm", "taylor", "lamp", "bn", "random", "snr", "snr-strength")
ARMS = {
    **{c: {"criterion": c} for c in CRITERIA},
    "l1+measured": {"criterion": "l1", "allocation": "measured"},
    "snr+measured": {"criterion": "snr", "allocation": "measured"},
    "l1+cut": {"criterion": "l1", "truncate": True, "cut": "measured"},
}
KEPT = (0.8, 0.6, 0.4, 0.2, 0.9, 0.7, 0.5, 0.3)  # coarse levels first: a stopped run still spans the range


def cell(
    model,
    measurement,
    dataset: str,
    data_dir: str | None,
    arm: str,
    kept: float,
    seed: int,
    batches: int,
    timed: bool,
    without: bool = True,
) -> dict:
    import prune_snr
    from prune_snr.errors import PruneSnrError
    from prune_snr.latency import LatencyMeter

    started = time.perf_counter()
    options = {"allocation": "uniform", "round_to": 1, **ARMS[arm]}
    try:
        with contextlib.nullcontext() if without else no_grade_without():
            pruned, report = prune_snr.prune(
                model,
                dataset,
                data_dir=data_dir,
                target=round(1 - kept, 4),
                metric="macs",
                finetune_epochs=0,
                bn_recalibrate=batches,
                seed=seed,
                measurement=measurement,
                **options,
            )
    except PruneSnrError as exc:
        return {"arm": arm, "kept": kept, "seed": seed, "error": str(exc)}
    before, mid, grade = report["before"], report["pruned_before_finetune"], report["bn_recalibration"]["without"]
    row = {
        "arm": arm,
        "kept": kept,
        "seed": seed,
        "val": mid["val_accuracy"],
        "test": mid["accuracy"],
        **({"val_without": grade["val_accuracy"], "test_without": grade["accuracy"]} if grade else {}),
        "macs_kept": mid["macs"] / before["macs"],
        "params_kept": mid["params"] / before["params"],
        "seconds": time.perf_counter() - started,
    }
    if timed:
        meter = LatencyMeter(model, batch=32)
        row["latency_kept"] = meter.fraction(pruned)
        meter.close()
    return row


@contextlib.contextmanager
def no_grade_without():
    """Within the block, prune skips the grade before the recalibration (a quarter of an EfficientNet-B0 cell on CPU):
    it shows what the recalibration changes, which seed 0 shows well enough (``--without seed0``)."""
    from prune_snr.prune import recalibrate

    graded = recalibrate.grade
    recalibrate.grade = lambda *args, **kwargs: {}
    try:
        yield
    finally:
        recalibrate.grade = graded


@contextlib.contextmanager
def grade_original_once(checkpoint: str):
    """Within the block, prune grades the unpruned ``checkpoint`` once per set of validation and test rows rather
    than in every cell (about 40 % of an EfficientNet-B0 cell on CPU): its grade and size repeat from cell to cell."""
    import copy

    from prune_snr.prune import pipeline
    from prune_snr.prune.report import grade_original

    parts: dict = {}

    def key(dataset) -> tuple:
        if dataset is None:
            return ()
        return type(dataset).__name__, len(dataset), hash(tuple(np.asarray(getattr(dataset, "indices", [])).tolist()))

    def once(ctx, model):
        rows = (checkpoint, key(ctx.splits.val), key(ctx.splits.test), ctx.cfg.device)
        if rows not in parts:
            parts[rows] = grade_original(ctx, model)[1]
        return model, copy.deepcopy(parts[rows])

    stages = pipeline.BEFORE_FINETUNE
    pipeline.BEFORE_FINETUNE = tuple(once if stage is grade_original else stage for stage in stages)
    try:
        yield
    finally:
        pipeline.BEFORE_FINETUNE = stages


def auc(rows: list[dict], key: str, levels: list[float]) -> float:
    """Trapezoid area under accuracy(MACs kept) over ``levels``, divided by their span: a mean accuracy."""
    by_kept = {r["kept"]: r[key] for r in rows}
    xs = sorted(levels)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 names it trapz
    return float(trapezoid([by_kept[x] for x in xs], xs) / (xs[-1] - xs[0]))


def areas(rows: list[dict]) -> tuple[dict, list[float]]:
    """``{arm: {seed: {"val": auc, "test": auc}}}`` over the MACs levels every arm and seed has."""
    ok = [r for r in rows if "error" not in r]
    arms, seeds = {r["arm"] for r in ok}, {r["seed"] for r in ok}
    levels = sorted({r["kept"] for r in ok})
    have = {(r["arm"], r["seed"], r["kept"]) for r in ok}
    pairs = [(a, s) for a in arms for s in seeds]
    levels = [k for k in levels if all((a, s, k) in have for a, s in pairs if any((a, s, kk) in have for kk in levels))]
    out: dict = {}
    for a, s in pairs:
        mine = [r for r in ok if r["arm"] == a and r["seed"] == s and r["kept"] in levels]
        if len(levels) >= 2 and len(mine) == len(levels):
            out.setdefault(a, {})[s] = {split: auc(mine, split, levels) for split in ("val", "test")}
    return out, levels


def verdicts(area: dict, baseline: str) -> dict:
    result = {}
    for arm, by_seed in area.items():
        if arm == baseline or baseline not in area:
            continue
        v = {
            split: rule({s: x[split] for s, x in by_seed.items()}, {s: x[split] for s, x in area[baseline].items()})
            for split in ("val", "test")
        }
        result[arm] = {**v, "verdict": both_splits(v["val"], v["test"])}
    return result


def mean_of(rows: list[dict], key: str) -> float:
    """The mean of ``key`` over the rows that hold it (not every seed grades without recalibration or times
    latency); nan when none does."""
    have = [r[key] for r in rows if key in r]
    return float(np.mean(have)) if have else float("nan")


def cells(rows: list[dict]) -> str:
    """Every cell: the mean over its seeds, with and without the recalibration, and its size."""
    ok = [r for r in rows if "error" not in r]
    lines = [
        "| MACs kept (target) | arm | seeds | val | test | val, BatchNorm as before | test, as before | MACs kept | "
        "params kept | latency kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for kept in sorted({r["kept"] for r in ok}, reverse=True):
        here = [r for r in ok if r["kept"] == kept]
        for arm in sorted({r["arm"] for r in here}, key=lambda a: -np.mean([r["val"] for r in here if r["arm"] == a])):
            mine = [r for r in here if r["arm"] == arm]
            mean = {
                k: mean_of(mine, k)
                for k in ("val", "test", "val_without", "test_without", "macs_kept", "params_kept", "latency_kept")
            }
            lines.append(
                f"| {kept:g} | {arm} | {len(mine)} | {mean['val']:.4f} | {mean['test']:.4f} | "
                f"{mean['val_without']:.4f} | {mean['test_without']:.4f} | {mean['macs_kept']:.3f} | "
                f"{mean['params_kept']:.3f} | {mean['latency_kept']:.3f} |"
            )
    return "\n".join(lines)


def complete(rows: list[dict]) -> tuple[list[dict], list[int], int]:
    """The rows of the seeds that hold every (arm, MACs kept) any seed holds, those seeds, and how many rows are left
    out: a seed still running would otherwise cut every arm's area down to the levels it has reached."""
    want = {(r["arm"], r["kept"]) for r in rows}
    seeds = sorted(
        s for s in {r["seed"] for r in rows} if {(r["arm"], r["kept"]) for r in rows if r["seed"] == s} >= want
    )
    kept = [r for r in rows if r["seed"] in seeds]
    return kept, seeds, len(rows) - len(kept)


def summary(rows: list[dict]) -> str:
    rows, seeds, left = complete(rows)
    head = f"Seeds {', '.join(map(str, seeds)) or '(none)'} complete (every arm at every MACs level)"
    head += f"; rows.json also holds {left} row(s) of seeds not yet complete, left out here." if left else "."
    graded = sorted({r["seed"] for r in rows if "val_without" in r})
    if graded != seeds:
        head += f" The BatchNorm-as-before columns are of seed(s) {', '.join(map(str, graded)) or '(none)'} only."
    head += (
        " Latency kept: seed 0's ONNX Runtime time at batch 32 over the unpruned model's, channel counts not rounded"
        " (unaligned counts can take a slower path), so it is no figure of speed."
    )
    below = sorted({r["arm"] for r in rows if "error" not in r and r["macs_kept"] < r["kept"] - 0.05})
    if below:  # e.g. a measured cut that alone removes more than a level asks: not a curve at its levels
        head += f" More than 0.05 below their target MACs kept at some level: {', '.join(below)}."
    head += "\n\n"
    area, levels = areas(rows)
    if not area:
        return (
            head
            + "No arm has two MACs levels on every seed yet: no area under the curve, no verdict.\n\n"
            + cells(rows)
        )
    vs_l1, vs_random = verdicts(area, "l1"), verdicts(area, "random")
    ok = [r for r in rows if "error" not in r]
    size = {
        a: {k: mean_of([r for r in ok if r["arm"] == a], k) for k in ("macs_kept", "params_kept", "latency_kept")}
        for a in area
    }
    lines = [
        head + f"Area under the one-shot curve over MACs kept {levels[0]:g}–{levels[-1]:g} ({len(levels)} levels), "
        "mean ± seed std; paired differences with 95 % intervals; a win needs > 2 × pooled std and the interval "
        "excluding 0 on validation and test.",
        "",
        "| arm | seeds | val AUC | test AUC | MACs kept | params kept | latency kept | "
        "vs l1 (test diff, 95 %) | vs random |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arm in sorted(area, key=lambda a: -np.mean([x["val"] for x in area[a].values()])):
        (vm, vs), (tm, ts) = (mean_std([x[s] for x in area[arm].values()]) for s in ("val", "test"))

        def against(v):
            if v is None:
                return "—"
            t = v["test"]
            return f"{v['verdict']} ({t['diff']:+.4f}, [{t['paired_95'][0]:+.4f}, {t['paired_95'][1]:+.4f}])"

        lines.append(
            f"| {arm} | {len(area[arm])} | {vm:.4f} ± {vs:.4f} | {tm:.4f} ± {ts:.4f} | {size[arm]['macs_kept']:.3f} | "
            f"{size[arm]['params_kept']:.3f} | {size[arm]['latency_kept']:.3f} | {against(vs_l1.get(arm))} | "
            f"{against(vs_random.get(arm))} |"
        )
    return "\n".join(lines) + "\n\n" + cells(rows)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    ok = [r for r in complete(rows)[0] if "error" not in r]
    for i, arm in enumerate(sorted({r["arm"] for r in ok})):
        for ax, split in zip(axes, ("val", "test")):
            levels = sorted({r["kept"] for r in ok if r["arm"] == arm})
            means = [np.mean([r[split] for r in ok if r["arm"] == arm and r["kept"] == k]) for k in levels]
            ax.plot(
                levels,
                means,
                marker="os^"[i // 10],
                ms=3,
                label=arm,
                lw=2 if arm in ("l1", "snr", "random") else 1,
                ls="-" if i < 10 else "--",
                color=f"C{i % 10}",
            )  # ten colours: the arms past ten dashed
    for ax, split in zip(axes, ("validation", "test")):
        ax.set_xlabel("MACs kept")
        ax.set_title(f"{split} accuracy after pruning, BatchNorm recalibrated")
        ax.invert_xaxis()
    axes[0].set_ylabel("accuracy (no fine-tuning)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    from prune_snr.measure.plots import save_figure

    save_figure(fig, path)


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint")
    parser.add_argument(
        "--measurement", help="a prune-snr measure folder of the checkpoint (needed by snr arms, +measured, +cut)"
    )
    parser.add_argument("--dataset", default=None, help="default: the checkpoint's")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--kept", default=",".join(map(str, KEPT)), help="MACs kept, in the order they run")
    parser.add_argument("--batches", type=int, default=50, help="BatchNorm recalibration batches")
    parser.add_argument(
        "--without",
        choices=("all", "seed0"),
        default="all",
        help="grade without the recalibration on every seed, or on seed 0 only (cheaper; seed 0 also times latency)",
    )
    add_standard(parser, "seeds", "out")
    args = parser.parse_args(argv)
    import prune_snr

    out = Path(args.out)
    results = load_results(out / "rows.json", {"rows": []})
    done = {(r["arm"], r["kept"], r["seed"]) for r in results["rows"]}
    run = load_run(args.checkpoint, args.measurement)
    model, dataset = prune_snr.load(args.checkpoint), args.dataset or run.dataset
    command = "python benchmarks/oneshot_curves.py " + " ".join(argv if argv is not None else sys.argv[1:])
    with grade_original_once(args.checkpoint):
        for seed in ints(args.seeds):
            for kept in floats(args.kept):
                for arm in args.arms.split(","):
                    if (arm, kept, seed) in done:
                        continue
                    row = cell(
                        model,
                        run.measurement,
                        dataset,
                        run.data_dir,
                        arm,
                        kept,
                        seed,
                        args.batches,
                        timed=seed == 0,
                        without=args.without == "all" or seed == 0,
                    )
                    results["rows"].append(row)
                    results.update(machine=machine_line(), command=command, batches=args.batches)
                    save_results(out / "rows.json", results)
                    shown = row.get("error") or f"val {row['val']:.4f} test {row['test']:.4f}"
                    if "val_without" in row:
                        shown += f" (val without {row['val_without']:.4f})"
                    print(f"seed {seed} kept {kept} {arm}: {shown}", flush=True)
    (out / "summary.md").write_text(
        f"{summary(results['rows'])}\n\nMachine: {results.get('machine')}\nCommand: {command}\n"
    )
    plot(results["rows"], out / "oneshot.png")
    print(summary(results["rows"]))
    return 0


if __name__ == "__main__":
    from prune_snr.errors import run_script

    sys.exit(run_script(main))
