"""Does this data show the paper's mechanism? A Markdown report + PNGs, with numbers.

For each trained checkpoint (VGG-16 and EfficientNet-B0 on Fashion-MNIST by default) the
measurement is read from ``--measurement`` folders or made here (label sweep K = 2..10), then
compared with the findings of Meir et al. (Sci. Rep. 2024) as restated in shared/METHOD.md:

1. head accuracy rises with depth;
2. layer SNR rises with depth;
3. noise elements per filter fall with depth;
4. the last layer's error rate grows ~linearly with the number of labels K (slope, R²);
5. the last layer's cluster size and clusters per filter stay ~constant as K grows.

With ``--label-seeds 0,1,2`` the sweep is repeated on K labels drawn at random (one draw per
seed, K = 3..10 by default; at K = 2 every cluster is a singleton by construction, METHOD.md) at
the last measured point only, each draw saved as it finishes (a rerun skips finished draws); the
cluster-size verdicts then read the range over K (max/min of the per-K means, with the spread
over draws) and cluster size as a fraction of K, since with K ≤ 10 a cluster can hold at most K labels.

Each finding gets a plain verdict ("constant" = within ±25 % from the smallest to the largest K). "Rises" is judged by
Spearman's rank correlation with depth (ρ ≥ 0.6: yes, 0.2..0.6: weakly, below: no) and by last-vs-first.

    python benchmarks/reproduce_trends.py runs/vgg/model.pt runs/effnet/model.pt \\
        --measurement runs/vgg/measurement,runs/effnet/measurement --out benchmarks/results/trends
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import prune_snr
import prune_snr.models
from prune_snr.atomic import atomic_save_text
from prune_snr.choices import CLUSTERS
from prune_snr.errors import run_script
from prune_snr.measure import Measurement, measure
from prune_snr.measure.plots import save_figure
from prune_snr.measure.result import paper_accuracy

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, ints, load_results, load_run, machine_line, save_results, script_parser  # noqa: E402

SWEEP = list(range(3, 11))  # K = 2 gives singleton clusters by construction (METHOD.md)


def spearman(values) -> float:
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    if finite.sum() < 3:
        return float("nan")
    ranks = np.argsort(np.argsort(values[finite]))
    depth = np.argsort(np.argsort(np.arange(len(values))[finite]))
    return float(np.corrcoef(ranks, depth)[0, 1])


def trend_verdict(rho: float, rising: bool) -> str:
    rho = rho if rising else -rho
    return "yes" if rho >= 0.6 else "weakly" if rho >= 0.2 else "no"


def linear_fit(x, y) -> tuple[float, float, float]:
    slope, intercept = np.polyfit(x, y, 1)
    pred = slope * np.asarray(x) + intercept
    ss_res = float(((np.asarray(y) - pred) ** 2).sum())
    ss_tot = float(((np.asarray(y) - np.mean(y)) ** 2).sum())
    return float(slope), float(intercept), 1 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def analyse(m: Measurement, label: str) -> dict:
    points = m.points
    acc = [paper_accuracy(p) for p in points]
    snr = [p["snr"] for p in points]
    noise = [p["noise_per_filter"] for p in points]
    row = {
        "model": label,
        "points": len(points),
        "accuracy": {"first": acc[0], "last": acc[-1], "rho": spearman(acc)},
        "snr": {"first": snr[0], "last": snr[-1], "rho": spearman(snr)},
        "noise": {"first": noise[0], "last": noise[-1], "rho": spearman(noise)},
    }
    sweep = m.label_sweep or []
    if len(sweep) >= 3:
        ks = [s["labels"] for s in sweep]
        err = [s["points"][-1]["error_rate"] for s in sweep]
        size = [s["points"][-1]["cluster_size"] for s in sweep]
        per = [s["points"][-1]["clusters_per_filter"] for s in sweep]
        slope, intercept, r2 = linear_fit(ks, err)
        row["sweep"] = {
            "labels": ks,
            "error_rate": err,
            "slope": slope,
            "intercept": intercept,
            "r2": r2,
            "cluster_size": size,
            "clusters_per_filter": per,
            "cluster_size_change": size[-1] / size[0] - 1,
            "clusters_per_filter_change": per[-1] / per[0] - 1,
        }
    return row


def draw_sweeps(
    checkpoint: str,
    ks: list[int],
    seeds: list[int],
    head_epochs: int,
    device: str,
    out: Path,
    clusters: str = CLUSTERS.default,
) -> list[dict]:
    """The label sweep at the last point, once per random label draw; each draw saved as it finishes."""
    run = load_run(checkpoint)
    payload, dataset, data_dir = run.payload, run.dataset, run.data_dir
    model = prune_snr.load(checkpoint)
    last = prune_snr.models.resolve_points(model, "all")[-1]
    draws = []
    for seed in seeds:
        path = out / f"draw_{payload['config']['model']['name']}_{seed}.json"
        if not path.exists():
            m = measure(
                model,
                dataset,
                data_dir=data_dir,
                points=last,
                label_sweep=ks,
                label_seed=seed,
                head_epochs=head_epochs,
                device=device,
                clusters=clusters,
            )
            save_results(path, {"seed": seed, "point": last, "sweep": m.label_sweep})
        draws.append(load_results(path))
    return draws


def analyse_draws(draws: list[dict]) -> dict:
    """Per K: mean and std over draws of the last point's error rate, cluster size (also / K) and clusters per filter;
    the range over K (max/min of the means) of each."""
    ks = [s["labels"] for s in draws[0]["sweep"]]
    figures = {}
    for key in ("error_rate", "cluster_size", "clusters_per_filter"):
        values = np.array([[s["points"][-1][key] for s in d["sweep"]] for d in draws])  # draws x K
        figures[key] = {
            "mean": values.mean(0).tolist(),
            "std": values.std(0, ddof=1).tolist() if len(draws) > 1 else [0.0] * len(ks),
        }
    figures["cluster_size_over_k"] = {"mean": (np.array(figures["cluster_size"]["mean"]) / np.array(ks)).tolist()}
    slope, intercept, r2 = linear_fit(ks, figures["error_rate"]["mean"])
    out = {
        "labels": ks,
        "draws": len(draws),
        "label_ids": [[s["label_ids"] for s in d["sweep"]] for d in draws],
        "slope": slope,
        "intercept": intercept,
        "r2": r2,
        **figures,
    }
    for key in ("cluster_size", "clusters_per_filter"):
        mean, std = np.array(figures[key]["mean"]), np.array(figures[key]["std"])
        out[f"{key}_range"] = float(mean.max() / mean.min()) if mean.min() > 0 else float("inf")
        out[f"{key}_spread"] = float(std.mean())
    return out


def plot(results: list[tuple[str, Measurement]], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 4))
    for label, m in results:
        depth = np.linspace(0, 1, len(m.points))
        axes[0].plot(depth, [paper_accuracy(p) for p in m.points], marker="o", label=label)
        axes[1].plot(depth, [p["snr"] for p in m.points], marker="o", label=label)
        axes[2].plot(depth, [p["noise_per_filter"] for p in m.points], marker="o", label=label)
    for ax, title in zip(axes, ("head accuracy", "layer SNR", "noise elements per filter")):
        ax.set_xlabel("relative depth (first point = 0, last = 1)")
        ax.set_title(title)
        ax.legend()
    axes[1].set_yscale("log")
    depth_png = save_figure(fig, out / "trends_depth.png")
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, m in results:
        sweep = m.label_sweep or []
        if not sweep:
            continue
        ks = [s["labels"] for s in sweep]
        err = [s["points"][-1]["error_rate"] for s in sweep]
        slope, intercept, r2 = linear_fit(ks, err)
        axes[0].plot(ks, err, marker="o", label=f"{label} (slope {slope:.4f}/label, R² {r2:.2f})")
        axes[0].plot(ks, [slope * k + intercept for k in ks], linestyle="--", color=axes[0].lines[-1].get_color())
        axes[1].plot(ks, [s["points"][-1]["cluster_size"] for s in sweep], marker="o", label=f"{label}: cluster size")
        axes[1].plot(
            ks,
            [s["points"][-1]["clusters_per_filter"] for s in sweep],
            marker="s",
            linestyle=":",
            label=f"{label}: clusters / filter",
        )
    axes[0].set(xlabel="number of labels K", ylabel="last-layer error rate", title="error vs labels")
    axes[1].set(xlabel="number of labels K", title="last layer: clusters")
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=8)
    sweep_png = save_figure(fig, out / "trends_label_sweep.png")
    return [depth_png, sweep_png]


def report(rows: list[dict], machine: str, pngs: list[Path]) -> str:
    lines = [
        "# Does Fashion-MNIST show the paper's trends?",
        "",
        f"Machine: {machine}. Test split, θ and pool as recorded in each measurement; label sweep = first "
        "K labels, same backbone.",
        "",
        "| model | points | head accuracy first → last (ρ) | rises? | layer SNR first → last (ρ) | rises? | "
        "noise/filter first → last (ρ) | falls? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        a, s, n = r["accuracy"], r["snr"], r["noise"]
        lines.append(
            f"| {r['model']} | {r['points']} | {a['first']:.4f} → {a['last']:.4f} ({a['rho']:+.2f}) | "
            f"{trend_verdict(a['rho'], True)} | "
            f"{s['first']:.2f} → {s['last']:.2f} ({s['rho']:+.2f}) | {trend_verdict(s['rho'], True)} | "
            f"{n['first']:.2f} → {n['last']:.2f} ({n['rho']:+.2f}) | {trend_verdict(n['rho'], False)} |"
        )
    lines += [
        "",
        "Label sweep at the last measured layer:",
        "",
        "| model | K | error rate | linear fit: slope per label, R² | ~linear? | cluster size | "
        "clusters / filter | constant? |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        w = r.get("sweep")
        if not w:
            lines.append(f"| {r['model']} | – | no label sweep in the measurement | | | | | |")
            continue
        lines.append(
            f"| {r['model']} | {w['labels'][0]}..{w['labels'][-1]} | "
            + ", ".join(f"{e:.3f}" for e in w["error_rate"])
            + f" | {w['slope']:.4f}, R² {w['r2']:.2f} | "
            f"{'yes' if w['r2'] >= 0.8 else 'roughly' if w['r2'] >= 0.5 else 'no'} | "
            + ", ".join(f"{c:.2f}" for c in w["cluster_size"])
            + " | "
            + ", ".join(f"{c:.2f}" for c in w["clusters_per_filter"])
            + f" | size {'yes' if abs(w['cluster_size_change']) <= 0.25 else 'no'} ({w['cluster_size_change']:+.0%}), "
            f"per filter {'yes' if abs(w['clusters_per_filter_change']) <= 0.25 else 'no'} "
            f"({w['clusters_per_filter_change']:+.0%}) |"
        )
    drawn = [r for r in rows if r.get("draws")]
    if drawn:
        lines += [
            "",
            "Label sweep over random label draws at the last measured point (mean ± std over draws per K; range = "
            "max/min over K of the means; 'constant' = range ≤ 1.25):",
            "",
            "| model | draws | K | error rate | slope, R² | cluster size | cluster size / K | clusters / filter | "
            "size range | per-filter range |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in drawn:
            d = r["draws"]
            fmt = lambda key: ", ".join(f"{m:.2f}±{s:.2f}" for m, s in zip(d[key]["mean"], d[key]["std"]))
            lines.append(
                f"| {r['model']} | {d['draws']} | {d['labels'][0]}..{d['labels'][-1]} | "
                + ", ".join(f"{m:.3f}" for m in d["error_rate"]["mean"])
                + f" | {d['slope']:.4f}, R² {d['r2']:.2f} | "
                f"{fmt('cluster_size')} | " + ", ".join(f"{v:.2f}" for v in d["cluster_size_over_k"]["mean"]) + " | "
                f"{fmt('clusters_per_filter')} | "
                f"{d['cluster_size_range']:.2f} (spread {d['cluster_size_spread']:.2f}) | "
                f"{d['clusters_per_filter_range']:.2f} (spread {d['clusters_per_filter_spread']:.2f}) |"
            )
        lines += [
            "",
            "What K ≤ 10 cannot decide: a cluster holds at most K labels, so a cluster size that is constant for "
            "large K (the paper's claim, up to K = 100 or 1000) and one that grows slowly look alike here; a range "
            "within the spread over draws is no evidence either way.",
        ]
    lines += ["", "## Where this data agrees and disagrees with the paper", ""]
    for r in rows:
        a, s, n, w = r["accuracy"], r["snr"], r["noise"], r.get("sweep")
        agree, disagree = [], []
        (agree if trend_verdict(a["rho"], True) != "no" else disagree).append(
            f"head accuracy {'rises' if a['rho'] > 0 else 'does not rise'} with depth ({a['first']:.3f} → "
            f"{a['last']:.3f}, ρ {a['rho']:+.2f})"
        )
        (agree if trend_verdict(s["rho"], True) != "no" else disagree).append(
            f"layer SNR {'rises' if s['rho'] > 0 else 'does not rise'} with depth ({s['first']:.2f} → "
            f"{s['last']:.2f}, ρ {s['rho']:+.2f})"
        )
        (agree if trend_verdict(n["rho"], False) != "no" else disagree).append(
            f"noise per filter {'falls' if n['rho'] < 0 else 'does not fall'} with depth ({n['first']:.2f} → "
            f"{n['last']:.2f}, ρ {n['rho']:+.2f})"
        )
        d = r.get("draws")
        if d:
            for key, name in (
                ("cluster_size", "last-layer cluster size"),
                ("clusters_per_filter", "last-layer clusters per filter"),
            ):
                constant = d[f"{key}_range"] <= 1.25
                (agree if constant else disagree).append(
                    f"{name} over K={d['labels'][0]}..{d['labels'][-1]}, {d['draws']} random label draws: range "
                    f"{d[f'{key}_range']:.2f} (spread over draws {d[f'{key}_spread']:.2f})"
                    + (" — nearly constant" if constant else " — not constant within K ≤ 10")
                )
            w = None  # the first-K sweep is superseded by the draws
        if w:
            (agree if w["r2"] >= 0.5 else disagree).append(
                f"last-layer error vs K: slope {w['slope']:.4f} per label, R² {w['r2']:.2f}"
            )
            for key, name in (
                ("cluster_size", "last-layer cluster size"),
                ("clusters_per_filter", "last-layer clusters per filter"),
            ):
                constant = abs(w[f"{key}_change"]) <= 0.25
                (agree if constant else disagree).append(
                    f"{name} {w[key][0]:.2f} → {w[key][-1]:.2f} from K={w['labels'][0]} to K={w['labels'][-1]}"
                    + (
                        " (nearly constant, within ±25 %)"
                        if constant
                        else " (not constant; the paper reports nearly constant)"
                    )
                )
        disagrees = " **Disagrees:** " + "; ".join(disagree) + "." if disagree else ""
        lines.append(f"- **{r['model']}** agrees: " + "; ".join(agree) + "." + disagrees)
    lines += ["", *[f"![{p.stem}]({p.name})" for p in pngs], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("checkpoints", nargs="+", help="model.pt files written by prune-snr train")
    parser.add_argument(
        "--measurement", help="comma-separated prune-snr measure folders, one per checkpoint ('-' = measure here)"
    )
    parser.add_argument("--labels", default=",".join(map(str, SWEEP)), help="label sweep for measurements made here")
    parser.add_argument(
        "--label-seeds", help="comma-separated seeds: repeat the sweep on K labels drawn at random (last point only)"
    )
    parser.add_argument("--head-epochs", type=int, default=30)
    parser.add_argument(
        "--clusters",
        default=CLUSTERS.default,
        choices=list(CLUSTERS),
        help="what a cluster is (measurements made here)",
    )
    add_standard(parser, "device", "out")
    args = parser.parse_args(argv)

    out = Path(args.out)
    folders = (args.measurement or "").split(",") if args.measurement else ["-"] * len(args.checkpoints)
    if len(folders) != len(args.checkpoints):
        parser.error("--measurement needs one folder (or '-') per checkpoint")
    results = []
    for checkpoint, folder in zip(args.checkpoints, folders):
        run = load_run(checkpoint, folder if folder != "-" else None)
        payload = run.payload
        label = f"{payload['config']['model']['name']}" + (
            f" w×{payload['config']['model'].get('width_mult')}"
            if payload["config"]["model"].get("width_mult") not in (None, 1, 1.0)
            else ""
        )
        if run.measurement is not None:
            m = run.measurement
        else:
            m = measure(
                prune_snr.load(checkpoint),
                run.dataset,
                data_dir=run.data_dir,
                label_sweep=ints(args.labels),
                head_epochs=args.head_epochs,
                device=args.device,
                clusters=args.clusters,
            )
            m.save(out / f"measurement_{payload['config']['model']['name']}")
        results.append((label, m))
    rows = [analyse(m, label) for label, m in results]
    if args.label_seeds:
        ks = ints(args.labels)
        for row, checkpoint in zip(rows, args.checkpoints):
            row["draws"] = analyse_draws(
                draw_sweeps(checkpoint, ks, ints(args.label_seeds), args.head_epochs, args.device, out, args.clusters)
            )
    machine = machine_line()
    pngs = plot(results, out)
    save_results(out / "trends.json", {"machine": machine, "checkpoints": args.checkpoints, "rows": rows})
    text = report(rows, machine, pngs)
    atomic_save_text(out / "trends.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_script(main))
