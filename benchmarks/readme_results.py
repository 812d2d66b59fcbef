"""Regenerate the README "Results" section from benchmark outputs (never typed by hand).

    python benchmarks/readme_results.py benchmarks/results/fmnist_vgg16_w025

The folder holds what the benchmarks and commands wrote: ``metrics.json`` (train),
``measurement.json`` + PNGs (measure), ``prune_*.json`` (prune reports), ``saliency/``
(saliency_compare.py), ``measure_speed.json``, ``export_*.json``, and ``machine.txt``.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"


def load(path: Path):
    return json.loads(path.read_text()) if path.exists() else None


def section(folder: Path, readme: Path) -> str:
    rel = folder.relative_to(readme.parent)
    machine = (folder / "machine.txt").read_text().strip() if (folder / "machine.txt").exists() else "unknown machine"
    out = [f"All figures below: {machine}. Raw outputs: `{rel}/`.", ""]
    metrics = load(folder / "metrics.json")
    if metrics:
        epochs = ", ".join(f"{e['test_accuracy']:.4f} ({e['seconds']:.0f} s)" for e in metrics["epochs"])
        out += ["### Training", f"`prune-snr train --recipe recipes/fashion_mnist_vgg16_w025.yaml`: {metrics['model']} (width 1/4) on "
                f"{metrics['dataset']}, seed {metrics['seed']}: test accuracy {metrics['test_accuracy']:.4f}, {metrics['params']:,} params, "
                f"{metrics['macs']:,} MACs. Test accuracy (seconds) per epoch: {epochs}.", ""]
    m = load(folder / "measurement.json")
    if m:
        t = m["timings"]
        out += ["### Measurement (`prune-snr measure`)",
                f"{m['model']} on {m['dataset']} (train {m['split_sizes']['train']:,} / test {m['split_sizes']['test']:,} images, seed {m['seed']}, "
                f"p={m['options']['pool']}, θ={m['options']['threshold']}, {m['options']['head_epochs']} head epochs): "
                f"heads+fields {t['heads_and_fields_s']:.0f} s, peak RSS {t['peak_rss_mb']:.0f} MB.", "",
                "| point | filters | head accuracy | layer SNR | noise / filter | clusters / filter | cluster size | dead |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for p in m["points"]:
            out.append(f"| {p['name']} | {p['n_filters']} | {p['accuracy']:.4f} | {p['snr']:.3f} | {p['noise_per_filter']:.2f} | "
                       f"{p['clusters_per_filter']:.2f} | {p['cluster_size']:.2f} | {p['dead_fraction']:.2f} |")
        if m.get("label_sweep"):
            out += ["", "Label sweep (first K labels, same backbone): last-point error rate " +
                    ", ".join(f"K={s['labels']}: {s['points'][-1]['error_rate']:.3f}" for s in m["label_sweep"]) + "; last-point cluster size " +
                    ", ".join(f"{s['points'][-1]['cluster_size']:.2f}" for s in m["label_sweep"]) + "."]
        out += ["", f"![accuracy and SNR by layer]({rel}/layers.png) ![noise and cluster size]({rel}/noise.png)", ""]
    speed = load(folder / "measure_speed.json")
    if speed:
        diff = max(abs(r["diff_points"]) for r in speed["rows"])
        a = speed["args"]
        out += ["### Measurement speed (`benchmarks/measure_speed.py`)",
                f"Naive (backbone re-run every head epoch and every filter) {speed['naive_s']:.0f} s vs prune-snr {speed['fast_s']:.1f} s on "
                f"{a['train_size']}/{a['test_size']} images, {len(speed['rows'])} points, {a['head_epochs']} head epochs: "
                f"**{speed['ratio']:.0f}× faster**, max head-accuracy difference {diff:.2f} points, max relative field difference "
                f"{max(r['field_rel_diff'] for r in speed['rows']):.1e}.", ""]
    reports = sorted(folder.glob("prune_*.json"))
    if reports:
        out += ["### Pruning to 50 % of the parameters (`prune-snr prune --target 0.5`)",
                "| run | criterion | allocation | accuracy before → after | pruned, before fine-tune | params | MACs | fine-tune |",
                "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for path in reports:
            r = load(path)
            out.append(f"| {path.stem.removeprefix('prune_')} | {r['criterion']} | {r['allocation']} | {r['before']['accuracy']:.4f} → "
                       f"{r['after']['accuracy']:.4f} ({100 * (r['after']['accuracy'] - r['before']['accuracy']):+.2f} pts) | "
                       f"{r['pruned_before_finetune']['accuracy']:.4f} | {r['before']['params']:,} → {r['after']['params']:,} | "
                       f"{r['before']['macs']:,} → {r['after']['macs']:,} | {r['finetune_epochs']} epochs |")
        out.append("")
    table = folder / "saliency" / "table.md"
    if table.exists():
        rows = load(folder / "saliency" / "results.json")["rows"]
        summary = []
        for budget in sorted({r["budget"] for r in rows}):
            cells = {}
            for r in rows:
                if r["budget"] == budget:
                    cells.setdefault((r["allocation"], r["criterion"]), []).append(r["after"])
            mean = {k: sum(v) / len(v) for k, v in cells.items()}
            best = max(mean, key=mean.get)
            snr = max((v, k) for k, v in mean.items() if k[1].startswith("snr"))
            base = max((v, k) for k, v in mean.items() if not k[1].startswith("snr") and k[1] != "random" and k[0] != "measured")
            summary.append(f"at {budget:.0%} MACs removed the best cell is {best[1]}/{best[0]} ({mean[best]:.4f}); best SNR variant "
                           f"{snr[1][1]}/{snr[1][0]} {snr[0]:.4f} vs best torch-pruning baseline (uniform) {base[1][1]} {base[0]:.4f} "
                           f"({100 * (snr[0] - base[0]):+.2f} pts)")
        out += ["### Saliency criteria and allocation (`benchmarks/saliency_compare.py`)", "Computed from the rows: " + "; ".join(summary) + ".", "",
                table.read_text().strip(), "",
                f"![accuracy vs MACs kept]({rel}/saliency/accuracy_vs_kept.png)", ""]
    for path in sorted(folder.glob("export_*.json")):
        x = load(path)
        if "speedup" in x:
            out += [f"### ONNX export ({path.stem.removeprefix('export_')})",
                    f"onnxruntime CPU vs PyTorch max abs diff {x['batch_8_max_abs_diff']:.1e}; latency slimmed/original: " +
                    ", ".join(f"batch {k.removeprefix('batch_')}: {x['latency_s'][k] * 1e3:.2f} / {x['baseline']['latency_s'][k] * 1e3:.2f} ms "
                              f"({x['speedup'][k]:.2f}×)" for k in x["speedup"]) + ".", ""]
    return "\n".join(out).rstrip() + "\n"


def main(argv=None) -> int:
    args = argv or sys.argv[1:]
    folder = Path(args[0]).resolve()
    readme = Path(args[1]).resolve() if len(args) > 1 else Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text()
    body = f"{START}\n{section(folder, readme)}{END}"
    if START in text:
        text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: body, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    readme.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
