"""Regenerate the generated part of docs/results.md from benchmark outputs (never typed by hand).

    python benchmarks/readme_results.py benchmarks/results/fmnist_vgg16_w025 [docs/results.md] [--check]

It rewrites what lies between ``<!-- results:start -->`` and ``<!-- results:end -->`` in the target
file (appending the block when the markers are missing); links are relative to the target's folder.
With ``--check`` it writes nothing and exits 1 when the target's block differs from what the results give.

The folder holds what the benchmarks and commands wrote: ``metrics.json`` (train),
``measurement.json`` + PNGs (measure), ``prune_*.json`` (prune reports), ``saliency/``
(saliency_compare.py), ``measure_speed.json``, ``export_*.json``, and ``machine.txt``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py, saliency_compare's verdict rule
from _common import load_results  # noqa: E402

from prune_snr.measure.result import recorded_config  # noqa: E402

START, END = "<!-- results:start -->", "<!-- results:end -->"


def section(folder: Path, target: Path) -> str:
    """The generated Markdown for ``folder``'s outputs; image and file links relative to ``target``'s folder."""
    rel = Path(os.path.relpath(folder, target.parent))
    machine = (folder / "machine.txt").read_text().strip() if (folder / "machine.txt").exists() else "unknown machine"
    out = [f"All figures below: {machine}. Raw outputs: `{rel}/`.", ""]
    metrics = load_results(folder / "metrics.json")
    if metrics:
        epochs = ", ".join(f"{e['test_accuracy']:.4f} ({e['seconds']:.0f} s)" for e in metrics["epochs"])
        out += [
            "### Training",
            f"`prune-snr train --recipe recipes/fashion_mnist_vgg16_w025.yaml`: {metrics['model']} (width 1/4) on "
            f"{metrics['dataset']}, seed {metrics['seed']}: test accuracy {metrics['test_accuracy']:.4f}, "
            f"{metrics['params']:,} params, {metrics['macs']:,} MACs. Test accuracy (seconds) per epoch: {epochs}.",
            "",
        ]
    m = load_results(folder / "measurement.json")
    if m:
        t = m["timings"]
        sizes = m["split_sizes"]
        o = recorded_config(m["options"])
        out += [
            "### Measurement (`prune-snr measure`)",
            f"{m['model']} on {m['dataset']} (heads trained on {sizes['train']:,} images"
            + (f", validation {sizes['val']:,} (decides)" if sizes.get("val") else "")
            + f", test {sizes['test']:,} (grades); seed {m['seed']}, p={o.pool}, θ={o.threshold}, {o.head_epochs} "
            f"head epochs; field figures on the {o.fields_split} split): heads+fields {t['heads_and_fields_s']:.0f} "
            f"s, peak RSS {t['peak_rss_mb']:.0f} MB.",
            "",
            "| point | filters | val accuracy | test accuracy | layer SNR | noise / filter | "
            "clusters / filter | cluster size | dead |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for p in m["points"]:
            val = p.get("val_accuracy")
            out.append(
                f"| {p['name']} | {p['n_filters']} | {'-' if val is None else f'{val:.4f}'} | "
                f"{p.get('test_accuracy', p.get('accuracy')):.4f} | {p['snr']:.3f} | {p['noise_per_filter']:.2f} | "
                f"{p['clusters_per_filter']:.2f} | {p['cluster_size']:.2f} | {p['dead_fraction']:.2f} |"
            )
        if m.get("label_sweep"):
            out += [
                "",
                "Label sweep (first K labels, same backbone): last-point error rate "
                + ", ".join(f"K={s['labels']}: {s['points'][-1]['error_rate']:.3f}" for s in m["label_sweep"])
                + "; last-point cluster "
                "size " + ", ".join(f"{s['points'][-1]['cluster_size']:.2f}" for s in m["label_sweep"]) + ".",
            ]
        out += ["", f"![accuracy and SNR by layer]({rel}/layers.png) ![noise and cluster size]({rel}/noise.png)", ""]
    speed = load_results(folder / "measure_speed.json")
    if speed:
        diff = max(abs(r["diff_points"]) for r in speed["rows"])
        a = speed["args"]
        out += [
            "### Measurement speed (`benchmarks/measure_speed.py`)",
            f"Naive (backbone re-run every head epoch and every filter) {speed['naive_s']:.0f} s vs prune-snr "
            f"{speed['fast_s']:.1f} s on {a['train_size']}/{a['test_size']} images, {len(speed['rows'])} points, "
            f"{a['head_epochs']} head epochs: **{speed['ratio']:.0f}× faster**, max head-accuracy difference "
            f"{diff:.2f} points, max relative field difference {max(r['field_rel_diff'] for r in speed['rows']):.1e}.",
            "",
        ]
    scale = load_results(folder / "measure_scale.json")
    if scale:
        out += [
            "### Measurement at scale: streaming heads (`benchmarks/measure_scale.py`)",
            f"Heads ({scale['head_epochs']} epochs) + fields for points {', '.join(scale['points'])} at a memory "
            f"budget of {scale['memory_budget_gib']} GiB, each size in a fresh process; caches beyond the real rows "
            f"repeat them. Peak RSS max/min over sizes: {scale['rss_max_over_min']:.2f}.",
            "",
            "| rows | cache | peak RSS | heads | µs / row / epoch | fields | one sequential read | "
            "heads ÷ (epochs × read) |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in scale["rows"]:
            out.append(
                f"| {r['rows']:,} | {r['cache_bytes'] / 2**30:.2f} GiB | {r['peak_rss_mb']:.0f} MB | "
                f"{r['heads_s']:.1f} s | {r['us_per_row_per_epoch']:.2f} | {r['fields_s']:.1f} s | "
                f"{r['sequential_read_s']:.2f} s | {r['heads_over_read']:.1f} |"
            )
        out.append("")
    for path in sorted(
        folder.glob("measure_run_*.json")
    ):  # a whole measurement's own figures: wall time, peak RSS vs budget
        r = load_results(path)
        t, o, sizes = r["timings"], recorded_config(r["options"]), r["split_sizes"]
        budget = r["options"].get("memory_budget_gib")  # the budget in use, not an option
        value_bytes = 2 if o.cache_dtype == "float16" else 4
        images = sum(sizes.values())
        cache_gib = sum(p["n_filters"] for p in r["points"]) * o.pool**2 * value_bytes * images / 2**30
        out += [
            f"### Measurement run: {path.stem.removeprefix('measure_run_')} (`prune-snr measure`, fresh feature cache)",
            f"{r['model']} on {r['dataset']}, {len(r['points'])} points, p = {o.pool}, {o.head_epochs} head epoch(s), "
            f"{images:,} images: wall {t['total_s']:.0f} s (features "
            f"{t['features_train_s'] + t['features_test_s']:.0f} s, heads + fields {t['heads_and_fields_s']:.0f} s), "
            f"**peak RSS {t['peak_rss_mb']:,.0f} MB** against a memory budget of "
            + (f"{budget} GiB" if budget else "a quarter of the RAM (default)")
            + f"; feature cache {cache_gib:.1f} GiB.",
            "",
        ]
    reports = sorted(folder.glob("prune_*.json"))
    if reports:
        out += [
            "### Pruning to 50 % of the parameters (`prune-snr prune --target 0.5"
            + ("`)" if any("bn_recalibrate" in load_results(p) for p in reports) else " --bn-recalibrate 0`)"),
            "| run | criterion | allocation | accuracy before → after | pruned, before fine-tune | "
            "params | MACs | fine-tune |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for path in reports:
            r = load_results(path)
            out.append(
                f"| {path.stem.removeprefix('prune_')} | {r['criterion']} | {r['allocation']} | "
                f"{r['before']['accuracy']:.4f} → {r['after']['accuracy']:.4f} "
                f"({100 * (r['after']['accuracy'] - r['before']['accuracy']):+.2f} pts) | "
                f"{r['pruned_before_finetune']['accuracy']:.4f} | "
                f"{r['before']['params']:,} → {r['after']['params']:,} | "
                f"{r['before']['macs']:,} → {r['after']['macs']:,} | {r['finetune_epochs']} epochs |"
            )
        out.append("")
    for name, title in (
        (
            "fair_seeds",
            "50 % of MACs removed, seeds that vary the heads, the validation split and fine-tuning, VGG-16 w/4",
        ),
        (
            "saliency_eff_seeds",
            "50 % of MACs removed, the paper's saliency on EfficientNet-B0, seeds that vary "
            "the heads, the validation split and fine-tuning",
        ),
        (
            "fair_macs",
            '50 % of MACs removed, eleven arms (the measurement\'s "best chances"), seeds that vary the heads, '
            "the validation split and fine-tuning, VGG-16 w/4",
        ),
        (
            "fair_macs_3070",
            "30 % and 70 % of MACs removed, seeds that vary the heads, the validation split and "
            "fine-tuning, VGG-16 w/4",
        ),
        (
            "fair_params",
            "30 %, 50 % and 70 % of parameters removed, seeds that vary the heads, the validation split "
            "and fine-tuning, VGG-16 w/4",
        ),
        (
            "saliency_params",
            "70 % of parameters removed, six arms (torch-pruning's global ranking and the measured "
            "allocation after the measured cut added), seeds that vary the heads, the validation "
            "split and fine-tuning, VGG-16 w/4",
        ),
        (
            "fair_macs_5ep",
            "50 % of MACs removed with 5 fine-tuning epochs, seeds that vary the heads, the validation "
            "split and fine-tuning, VGG-16 w/4",
        ),
        (
            "fair_macs_8090",
            "80 % and 90 % of MACs removed with 3 fine-tuning epochs (high compression), seeds that vary the heads, "
            "the validation split and fine-tuning, VGG-16 w/4",
        ),
        (
            "fair_macs_eff",
            "50 % of MACs removed, EfficientNet-B0 (8-epoch recipe), seeds that vary the heads, "
            "the validation split and fine-tuning",
        ),
    ):
        out += saliency_section(folder / name, rel, title)
    out += truncation_section(folder)
    out += blocks_section(folder)
    out += trends_section(folder / "trends_draws", rel)
    out += search_section(folder / "search", rel)
    for name, objective in (("search_compare", "MACs"), ("search_compare_params", "params")):
        if (folder / name / "table.md").exists():
            out += [
                f"### Front against front, studies optimising {objective}: the full search space vs torch-pruning's "
                "own (`benchmarks/search_compare.py`)",
                (folder / name / "table.md").read_text().strip(),
                "",
                f"![both fronts]({rel}/{name}/fronts.png)",
                "",
            ]
    speed = load_results(folder / "onnx_speed.json")
    if speed and "key" in (speed["rows"] or [{}])[0]:
        int8 = "int8_accuracy" in speed["rows"][0]
        out += [
            "### ONNX Runtime latency: channel alignment, a latency target, int8 (`benchmarks/onnx_speed.py`)",
            f"{speed['machine']}; criterion {speed['criterion']}; each model timed beside the original (and its int8 "
            "twin), taking turns (one untimed run, then 3 timed), speedups the median over rounds of the within-round "
            f"ratio; original: {speed['original_latency_s']['batch_1'] * 1e3:.2f} ms at batch 1, "
            f"{speed['original_latency_s']['batch_32'] * 1e3:.2f} ms at batch 32, test accuracy "
            f"{speed['original_fp32_accuracy']:.4f}. Models pruned here are not fine-tuned (latency does not depend "
            "on it); accuracies are on the test split. Targets: speedup ≥ 0.8 × MAC ratio at batch 32 and ≥ 0.6 × at "
            "batch 1 with default flags; a latency target met within ±5 %; int8 ≥ 1.5× faster than fp32 at batch 32 "
            "with ≤ 0.5 points lost.",
            "",
            "| model | MACs kept | speedup b1 | speedup b32 | MAC ratio | speedup / MAC ratio b1 | "
            "b32 | latency kept b1 |" + (" int8 / fp32 speed b1 | b32 | fp32 acc | int8 acc |" if int8 else ""),
            "| --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- | --- | --- |" if int8 else ""),
        ]
        for r in speed["rows"]:
            line = (
                f"| {r['key']} | {r['macs_kept']:.3f} | {r['speedup']['batch_1']:.2f}× | "
                f"{r['speedup']['batch_32']:.2f}× | {r['mac_ratio']:.2f}× | "
                f"{r['speedup_over_mac_ratio']['batch_1']:.2f} | {r['speedup_over_mac_ratio']['batch_32']:.2f} | "
                f"{r['latency_fraction']['batch_1']:.3f} |"
            )
            if int8:
                line += (
                    f" {r['int8_speedup_over_fp32']['batch_1']:.2f}× | "
                    f"{r['int8_speedup_over_fp32']['batch_32']:.2f}× | {r['fp32_accuracy']:.4f} | "
                    f"{r['int8_accuracy']:.4f} |"
                )
            out.append(line)
        for r in speed["rows"]:
            own = r.get("prune_latency_report")
            if own:
                out += [
                    "",
                    f"`{r['key']}`: prune's own final timing (original and pruned taking turns, as in its target "
                    "search): latency fraction "
                    + ", ".join(f"{v['fraction']:.3f} at batch {k.removeprefix('batch_')}" for k, v in own.items())
                    + f" (target {1 - r['target']:.2f} of the original); the benchmark's separate timing above: "
                    f"{r['latency_fraction']['batch_32'] if 'batch_32' in r['latency_fraction'] else float('nan'):.3f} "
                    "at batch 32.",
                ]
        out.append("")
    out += round_to_section(load_results(folder / "round_to_cost.json"))
    for path in sorted(folder.glob("export_*.json")):
        x = load_results(path)
        if "speedup" in x:
            out += [
                f"### ONNX export ({path.stem.removeprefix('export_')})",
                f"onnxruntime CPU vs PyTorch max abs diff {x['batch_8_max_abs_diff']:.1e}; latency slimmed/original: "
                + ", ".join(
                    f"batch {k.removeprefix('batch_')}: {x['latency_s'][k] * 1e3:.2f} / "
                    f"{x['baseline']['latency_s'][k] * 1e3:.2f} ms "
                    f"({x['speedup'][k]:.2f}×)"
                    for k in x["speedup"]
                )
                + ".",
                "",
            ]
    return "\n".join(out).rstrip() + "\n"


def round_to_section(cost: dict | None) -> list[str]:
    """The accuracy each ``--round-to`` costs against 1 (no alignment), by the rule on validation and on test."""
    from _rule import both_splits, mean_std, rule

    if not cost:
        return []
    groups: dict = {}
    for key, cell in cost["cells"].items():
        value, seed = (part.split("=")[1] for part in key.split("|"))
        groups.setdefault(value, {})[int(seed)] = cell
    out = [
        "### Accuracy cost of the default channel alignment (`benchmarks/round_to_cost.py`)",
        f"{cost['target_macs_removed']:.0%} of MACs removed with prune's defaults, {cost['finetune_epochs']} "
        "fine-tuning epoch(s); accuracy mean ± std over the seeds of each row (the same seeds in every row).",
        "",
        "| --round-to | seeds | val accuracy | test accuracy | params | MACs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for value, cells in groups.items():
        first = next(iter(cells.values()))["after"]
        val, test = (mean_std([c["after"][k] for c in cells.values()]) for k in ("val_accuracy", "accuracy"))
        out.append(
            f"| {value} | {len(cells)} | {val[0]:.4f} ± {val[1]:.4f} | {test[0]:.4f} ± {test[1]:.4f} | "
            f"{first['params']:,} | {first['macs']:,} |"
        )
    for value, cells in groups.items():
        if value == "1" or "1" not in groups:
            continue
        v = {
            split: rule(
                {s: c["after"][k] for s, c in cells.items()}, {s: c["after"][k] for s, c in groups["1"].items()}
            )
            for split, k in (("val", "val_accuracy"), ("test", "accuracy"))
        }
        parts = "; ".join(
            f"{split} {100 * x['diff']:+.2f} points (2× pooled std {100 * x['two_pooled_std']:.2f}, paired 95 % "
            f"[{100 * x['paired_95'][0]:+.2f}, {100 * x['paired_95'][1]:+.2f}]) -> {x['verdict']}"
            for split, x in v.items()
        )
        out += [
            "",
            f"--round-to {value} vs 1: {parts}; by the rule (both splits): **{both_splits(v['val'], v['test'])}**.",
        ]
    return out + [""]


def saliency_section(folder: Path, rel: Path, title: str) -> list[str]:
    """The study's table plus, per budget, the best measurement-driven cell vs the best torch-pruning
    baseline, judged by the 2 × pooled seed std rule (saliency_compare.compare)."""
    from saliency_compare import summarise, verdict_lines

    results = load_results(folder / "results.json")
    if not results:
        return []
    metric = results["args"].get("metric", "macs")
    # the script's header says how the cells were trained; the table and the verdicts are recomputed from the rows
    header = (folder / "table.md").read_text().strip().split("\n\n")[0] if (folder / "table.md").exists() else ""
    table = (header + "\n\n" if header else "") + summarise(results["rows"], metric)
    verdicts = verdict_lines(results["rows"], metric)
    rule = (
        "Computed from the rows: each side's best arm chosen on validation accuracy after fine-tuning; a win or a "
        "loss only beyond twice the pooled seed std *and* with a paired 95 % t-interval excluding 0, on validation "
        "and on test; a more accurate arm that keeps > 10 % more of the other size metric is not comparable, and "
        "an arm that keeps > 10 % more of the budget's metric than the budget leaves is no contender:"
        if verdicts
        else "No verdicts: the rows have no validation figures to choose each side's best arm by (made before the "
        "validation split, their decisions read test)."
    )
    return [
        f"### Saliency × allocation study: {title} (`benchmarks/saliency_compare.py`)",
        rule,
        *verdicts,
        "",
        table,
        "",
        f"![accuracy vs kept]({rel}/{folder.name}/accuracy_vs_kept.png)",
        "",
    ]


def truncation_section(folder: Path) -> list[str]:
    """Every candidate cut of ``truncation_*.json`` (prune reports made with --truncate), with the chosen
    cut's accuracy right after the cut, after channel pruning and after fine-tuning."""
    out = []
    for path in sorted(folder.glob("truncation_*.json")):
        r = load_results(path)
        t = r["truncation"]
        out += [
            f"### Truncation candidates: {path.stem.removeprefix('truncation_')} (`prune-snr prune --truncate --cut "
            f"{t.get('cut', 'measured')} "
            f"--target {r['target']} --metric {r['metric']}`)",
            f"Full model: test {r['before']['accuracy']:.4f}, validation {r['before']['val_accuracy']:.4f}, "
            f"{r['before']['params']:,} params, {r['before']['macs']:,} MACs; δ = {t['delta']}. Cut after "
            f"**{t['cut_after']}**: test accuracy right after the cut "
            f"{t.get('accuracy_after_cut', float('nan')):.4f}, after pruning the rest's channels "
            f"{r['pruned_before_finetune']['accuracy']:.4f}, after {r['finetune_epochs']} fine-tuning epoch(s) "
            f"**{r['after']['accuracy']:.4f}** ({r['after']['params']:,} params, {r['after']['macs']:,} MACs).",
            "",
            "| cut after | head val acc | head test acc | adds after (val) | within δ | cuttable | params | MACs |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in t["candidates"]:
            out.append(
                f"| {c['point']} | {c['val_accuracy']:.4f} | {c['test_accuracy']:.4f} | "
                f"{100 * c['adds_after']:+.2f} pts | {'yes' if c['eligible'] else 'no'} | "
                f"{'yes' if c['cuttable'] else 'no'} | {c['params']:,} | {c['macs']:,} |"
                if c.get("cuttable")
                else f"| {c['point']} | {c['val_accuracy']:.4f} | {c['test_accuracy']:.4f} | "
                f"{100 * c['adds_after']:+.2f} pts | {'yes' if c['eligible'] else 'no'} | no | - | - |"
            )
        out.append("")
    return out


def blocks_section(folder: Path) -> list[str]:
    """Every droppable residual block of ``blocks_*.json`` (prune reports made with --drop-blocks), graded alone,
    and the dropped set's accuracy right after dropping, after pruning the channels and after fine-tuning."""
    out = []
    for path in sorted(folder.glob("blocks_*.json")):
        r = load_results(path)
        b, before = r["blocks"], r["before"]
        dropped = ", ".join(b["dropped"]) or "none"
        after_drop = (
            f"test accuracy right after dropping {b['accuracy_after_drop']:.4f} ({b['params']:,} "
            f"params, {b['macs']:,} MACs), "
            if b["dropped"]
            else ""
        )
        out += [
            f"### Dropping residual blocks: {path.stem.removeprefix('blocks_')} (`prune-snr prune "
            f"--drop-blocks --target {r['target']} --metric {r['metric']} --criterion {r['criterion']} "
            f"--allocation {r['allocation']}`)",
            f"Full model: test {before['accuracy']:.4f}, validation {before['val_accuracy']:.4f}, "
            f"{before['params']:,} params, {before['macs']:,} MACs; δ = {b['delta']}. Dropped: **{dropped}**; "
            f"{after_drop}after pruning the channels {r['pruned_before_finetune']['accuracy']:.4f}, after "
            f"{r['finetune_epochs']} fine-tuning epoch(s) **{r['after']['accuracy']:.4f}** ({r['after']['params']:,} "
            f"params, {r['after']['macs']:,} MACs).",
            "",
            "| block dropped alone | val acc | test acc | costs (val) | params | MACs | dropped |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for c in b["candidates"]:
            out.append(
                f"| {c['block']} | {c['val_accuracy']:.4f} | {c['accuracy']:.4f} | "
                f"{100 * (before['val_accuracy'] - c['val_accuracy']):+.2f} pts | "
                f"{c['params']:,} | {c['macs']:,} | {'yes' if c['block'] in b['dropped'] else 'no'} |"
            )
        out.append("")
    return out


def trends_section(folder: Path, rel: Path) -> list[str]:
    if not (folder / "trends.md").exists():
        return []
    body = (folder / "trends.md").read_text().strip().splitlines()[1:]  # drop its own title
    body = [line.replace("](trends_", f"]({rel}/{folder.name}/trends_") for line in drop_empty_tables(body)]
    return ["### The paper's trends on this data (`benchmarks/reproduce_trends.py`)", *body, ""]


def drop_empty_tables(lines: list[str]) -> list[str]:
    """Leave out a table (with the line introducing it) whose every row says the measurement has no label sweep."""
    out, i = [], 0
    while i < len(lines):
        if lines[i].startswith("|"):
            j = i
            while j < len(lines) and lines[j].startswith("|"):
                j += 1
            rows = lines[i + 2 : j]
            if rows and all("no label sweep in the measurement" in r for r in rows):
                while out and not out[-1].strip():
                    out.pop()
                if out and not out[-1].startswith("|"):
                    out.pop()  # the table's lead-in line ("Label sweep at the last measured layer:")
                while j < len(lines) and not lines[j].strip():
                    j += 1
                i = j
                continue
            out += lines[i:j]
            i = j
            continue
        out.append(lines[i])
        i += 1
    return out


def search_section(folder: Path, rel: Path) -> list[str]:
    if not (folder / "study.db").exists():
        return []
    import optuna

    from prune_snr.search import pareto_rows

    study = optuna.load_study(study_name="prune-snr", storage=f"sqlite:///{folder / 'study.db'}")
    done = [t for t in study.trials if t.datetime_complete]
    wall = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
    total = load_results(folder / "wall_time.json")
    failed = sum(t.state.name == "FAIL" for t in study.trials)
    metric = (study.metric_names or ["", "kept"])[1]
    lines = [
        "### Optuna search (`prune-snr search --trials 20 --proxy 0.25`)",
        f"{len(study.trials)} trials ({failed} failed and recorded as such) in {wall / 60:.1f} min"
        + (f"; with the full re-evaluation of the Pareto trials {total['seconds'] / 60:.1f} min wall" if total else "")
        + f". Objectives: accuracy (proxy: fine-tuning on 25 % of the training set) and {metric}.",
        "",
        "| trial | proxy acc. | full acc. | "
        + metric
        + " | criterion | allocation | target | θ | ft epochs | truncate | AFCC |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in pareto_rows(study):
        full = f"{r['full_accuracy']:.4f}" if r["full_accuracy"] is not None else "-"
        lines.append(
            f"| {r['trial']} | {r['accuracy']:.4f} | {full} | {r['kept']:.3f} | {r['criterion']} | {r['allocation']} | "
            f"{r['target']:.2f} | {r['threshold']} | {r['finetune_epochs']} | {'y' if r.get('truncate') else 'n'} | "
            f"{'y' if r['afcc'] else 'n'} |"
        )
    lines += ["", f"![Pareto front]({rel}/search/pareto.png)", ""]
    return lines


def main(argv=None) -> int:
    args = list(argv if argv is not None else sys.argv[1:])
    check = "--check" in args
    args = [a for a in args if a != "--check"]
    folder = Path(args[0]).resolve()
    target = (
        Path(args[1]).resolve() if len(args) > 1 else Path(__file__).resolve().parent.parent / "docs" / "results.md"
    )
    text = target.read_text() if target.exists() else "# Results\n"
    body = f"{START}\n{section(folder, target)}{END}"
    if START in text:
        new = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: body, text, flags=re.S)
    else:
        new = text.rstrip() + "\n\n" + body + "\n"
    if check:
        if new != text:
            print(
                f"{target} differs from what {folder} gives: python benchmarks/readme_results.py {args[0]} {target}",
                file=sys.stderr,
            )
            return 1
        return 0
    target.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
