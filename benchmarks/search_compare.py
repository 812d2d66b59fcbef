"""Front against front: ``prune-snr search`` over the full space vs torch-pruning's own options.

Both arms run the same number of trials with the same proxy, fine-tuning bound, size metric and
sampler seeds; trial objectives are validation accuracy and the kept fraction; every Pareto
trial is graded on validation and on the test split (its full re-evaluation when the study used a
proxy). Per study, the hypervolume of (accuracy, MACs kept) and of (accuracy, params kept) against
a fixed reference point, on each split; per arm, mean ± std over sampler seeds; per plane, full
against torch-pruning by METHOD.md's rule (beyond 2 × pooled std with a paired 95 % interval, the
studies paired by sampler seed; a win needs both splits); one PNG with both arms' fronts. The
baseline arm may cut layers where the cut reads no accuracy (``--cut budget``), so the fronts
differ by the measurement only. The full arm's measurement time is part of its cost and is
stated beside it. Run once per size objective (``--metric macs``, ``--metric params``) and read
each plane from the study that optimised it. Every study is resumable (a rerun continues where
it stopped).

    python benchmarks/search_compare.py runs/fmv/model.pt --measurement runs/fmv/measurement \\
        --trials 12 --proxy 0.1 --seeds 0,1,2 --out benchmarks/results/fmnist_vgg16_w025/search_compare
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from optuna._hypervolume import compute_hypervolume  # Optuna's own (used by its hypervolume plots)

from prune_snr.atomic import atomic_save_text
from prune_snr.choices import SPACES
from prune_snr.errors import run_script
from prune_snr.measure import Measurement
from prune_snr.measure.plots import save_figure
from prune_snr.search import full_result, run_search

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, ints, save_results, script_parser  # noqa: E402
from _rule import both_splits, mean_std, rule  # noqa: E402

ARMS = SPACES.names  # the full space against torch-pruning's own


def front(study) -> list[dict]:
    """The study's Pareto trials (decided on validation) with their test accuracy and kept fractions."""
    base = study.user_attrs["base"]
    rows = []
    for t in study.best_trials:
        graded = full_result(study, t)
        rows.append(
            {
                "trial": t.number,
                "accuracy": graded["accuracy"],
                "val_accuracy": graded["val_accuracy"],
                "macs_kept": t.user_attrs["macs"] / base["macs"],
                "params_kept": t.user_attrs["params"] / base["params"],
            }
        )
    return rows


def hypervolume(rows: list[dict], size: str, reference: tuple[float, float], accuracy: str = "accuracy") -> float:
    """Area dominated by (``accuracy`` up: test by default, ``"val_accuracy"`` for validation; ``size`` kept down)
    above the reference (accuracy, kept)."""
    points = np.array([[-r[accuracy], r[size]] for r in rows if r[accuracy] > reference[0] and r[size] < reference[1]])
    if not len(points):
        return 0.0
    return float(compute_hypervolume(points, np.array([-reference[0], reference[1]])))


def plot(fronts: dict[str, list[list[dict]]], path: Path, floor: float = 0.0) -> None:
    """Both arms' fronts (one line per sampler seed), against MACs and against params kept; the
    accuracy axis starts at ``floor`` (the reference point: trials below it add no hypervolume)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, size in zip(axes, ("macs_kept", "params_kept")):
        for (arm, studies), color in zip(fronts.items(), ("tab:red", "tab:blue")):
            for i, rows in enumerate(studies):
                rows = sorted(rows, key=lambda r: r[size])
                ax.step(
                    [r[size] for r in rows],
                    [r["accuracy"] for r in rows],
                    where="post",
                    color=color,
                    alpha=0.7,
                    marker="o",
                    label=arm if i == 0 else None,
                )
        ax.set_xlabel(f"fraction of {size.removesuffix('_kept')} kept")
        ax.set_ylim(bottom=floor)
    axes[0].set_ylabel(f"test accuracy (Pareto trials, decided on validation; axis from {floor})")
    axes[0].legend()
    save_figure(fig, path)  # atomic, closes the figure


def table(rows: list[dict], args, reference: tuple[float, float]) -> list[str]:
    """Per arm: hypervolumes on validation and on test in both planes (mean ± std over sampler seeds) and the
    trials' wall time; then, per plane, full against torch-pruning by METHOD.md's rule on both splits (the
    studies are paired by sampler seed)."""
    cell = {k: "HV (val / test acc, {} kept)".format(k) for k in ("MACs", "params")}
    lines = [
        f"Reference point: accuracy {reference[0]}, kept fraction {reference[1]}; {args.trials} trials per study, "
        f"proxy {args.proxy}, ≤ {args.max_finetune_epochs} fine-tuning epoch(s), size objective **{args.metric}** "
        f"(the plane to read from this study; the other plane's figures are from fronts optimised for {args.metric}); "
        f"sampler seeds {args.seeds}.",
        "",
        f"| arm | studies | {cell['MACs']} | {cell['params']} | trial time per study | measurement time |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    for arm in arms:
        mine = [r for r in rows if r["arm"] == arm]

        def hv(key: str) -> str:
            mean, std = mean_std([r[key] for r in mine])
            return f"{mean:.4f}" if len(mine) == 1 else f"{mean:.4f} ± {std:.4f}"

        lines.append(
            f"| {arm} | {len(mine)} | {hv('val_hv_macs')} / {hv('hv_macs')} | "
            f"{hv('val_hv_params')} / {hv('hv_params')} | {np.mean([r['trial_seconds'] for r in mine]):.0f} s | "
            f"{np.mean([r['measurement_seconds'] for r in mine]):.0f} s |"
        )
    if set(ARMS) <= set(arms):
        for size, name in (("macs", "MACs"), ("params", "params")):
            split = {}
            for prefix, label in (("val_", "val"), ("", "test")):
                by_seed = {arm: {r["seed"]: r[f"{prefix}hv_{size}"] for r in rows if r["arm"] == arm} for arm in ARMS}
                split[label] = rule(by_seed["full"], by_seed["torch-pruning"])
            parts = "; ".join(
                f"{label} {v['diff']:+.4f} (2× pooled std {v['two_pooled_std']:.4f}, paired 95 % "
                f"[{v['paired_95'][0]:+.4f}, {v['paired_95'][1]:+.4f}]) -> {v['verdict']}"
                for label, v in split.items()
            )
            own = " (this study's objective)" if size == args.metric else ""
            lines.append(
                f"\n- HV ({name} kept){own}: full − torch-pruning: {parts}; verdict (a win needs both splits): "
                f"**{both_splits(split['val'], split['test'])}**"
            )
    return lines


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    add_standard(parser, "checkpoint")
    parser.add_argument(
        "--measurement", help="prune-snr measure folder of this checkpoint (the full arm; else measured once)"
    )
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--proxy", type=float, default=0.1)
    parser.add_argument("--max-finetune-epochs", type=int, default=1)
    parser.add_argument("--metric", default="macs")
    add_standard(parser, "seeds")
    parser.add_argument("--arms", default=",".join(ARMS))
    parser.add_argument("--reference", default="0.8,1.0", help="reference point: test accuracy, kept fraction")
    parser.add_argument("--round-to", type=int, default=None)
    add_standard(parser, "device", "out")
    args = parser.parse_args(argv)

    out = Path(args.out)
    reference = tuple(float(v) for v in args.reference.split(","))
    measurement = Measurement.load(args.measurement) if args.measurement else None
    fronts: dict[str, list[list[dict]]] = {}
    rows = []
    for arm in args.arms.split(","):
        for seed in ints(args.seeds):
            study = run_search(
                args.checkpoint,
                out=out / arm / f"seed{seed}",
                space=arm,
                trials=args.trials,
                proxy=args.proxy,
                max_finetune_epochs=args.max_finetune_epochs,
                metric=args.metric,
                seed=seed,
                round_to=args.round_to,
                device=args.device,
                measurement=measurement if arm == "full" else None,
            )
            pareto = front(study)
            fronts.setdefault(arm, []).append(pareto)
            seconds = sum(
                (t.datetime_complete - t.datetime_start).total_seconds() for t in study.trials if t.datetime_complete
            )
            rows.append(
                {
                    "arm": arm,
                    "seed": seed,
                    "trials": len(study.trials),
                    "pareto": pareto,
                    "trial_seconds": seconds,
                    "measurement_seconds": study.user_attrs.get("measurement_seconds", 0.0),
                    **{
                        f"{prefix}hv_{size}": hypervolume(pareto, f"{size}_kept", reference, accuracy)
                        for prefix, accuracy in (("", "accuracy"), ("val_", "val_accuracy"))
                        for size in ("macs", "params")
                    },
                }
            )
            print(
                f"{arm:>14} seed {seed}: {len(pareto)} Pareto trials, HV(acc, MACs) {rows[-1]['hv_macs']:.4f}, "
                f"HV(acc, params) {rows[-1]['hv_params']:.4f}",
                flush=True,
            )
    lines = table(rows, args, reference)
    out.mkdir(parents=True, exist_ok=True)
    save_results(out / "results.json", {"args": vars(args), "rows": rows})
    atomic_save_text(out / "table.md", "\n".join(lines) + "\n")
    plot(fronts, out / "fronts.png", floor=reference[0])
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
