"""The tables ``prune`` and ``measure`` print."""

from __future__ import annotations

from rich.table import Table


def prune_table(report: dict) -> Table:
    before, after = report["before"], report["after"]
    table = Table(
        title=f"prune --target {report['target']} ({report['metric']}), criterion {report['criterion']}, "
        f"allocation {report['allocation']} on {report['dataset']} (test split, seed {report['seed']})"
    )
    for col in ("", "accuracy", "params", "MACs"):
        table.add_column(col, justify="right")
    table.add_row("before", f"{before['accuracy']:.4f}", f"{before['params']:,}", f"{before['macs']:,}")
    cut, blocks = report.get("truncation") or {}, report.get("blocks") or {}
    if cut.get("cut_after"):
        table.add_row(f"cut after {cut['cut_after']}", f"{cut['accuracy_after_cut']:.4f}", "", "")
    if blocks.get("dropped"):
        table.add_row(
            f"dropped {', '.join(blocks['dropped'])}",
            f"{blocks['accuracy_after_drop']:.4f}",
            f"{blocks['params']:,}",
            f"{blocks['macs']:,}",
        )
    mid, recal = report.get("pruned_before_finetune"), report.get("bn_recalibration")
    if recal:
        table.add_row("pruned, BatchNorm as before", f"{recal['without']['accuracy']:.4f}", "", "")
        table.add_row(
            f"pruned, BatchNorm on {recal['batches']} batches",
            f"{mid['accuracy']:.4f}",
            f"{mid['params']:,}",
            f"{mid['macs']:,}",
        )
    elif mid:
        table.add_row("pruned, no fine-tune", f"{mid['accuracy']:.4f}", f"{mid['params']:,}", f"{mid['macs']:,}")
    table.add_row("after", f"{after['accuracy']:.4f}", f"{after['params']:,}", f"{after['macs']:,}")
    table.add_row(
        "change",
        f"{100 * (after['accuracy'] - before['accuracy']):+.2f} pts",
        f"-{1 - after['params'] / before['params']:.1%}",
        f"-{1 - after['macs'] / before['macs']:.1%}",
    )
    for key, t in report.get("latency", {}).items():
        table.add_row(
            f"latency {key.replace('_', ' ')}",
            f"{t['original_s'] * 1e3:.2f} -> {t['pruned_s'] * 1e3:.2f} ms",
            f"{t['fraction']:.2f} of original",
            "",
        )
    return table


def points_table(result) -> Table:
    from ..measure.result import paper_accuracy

    split = result.config.fields_split
    table = Table(
        title=f"{result.meta['model']} on {result.meta['dataset']} (heads: val and test accuracy; fields on the "
        f"{split} split, clusters as {result.clusters}; seed {result.meta['seed']})"
    )
    table.add_column("point", no_wrap=True)
    for col in ("filters", "val acc", "test acc", "SNR", "noise/f", "clust/f", "clust size", "labels/f", "dead"):
        table.add_column(col, justify="right")
    for p in result.points:
        val = p.get("val_accuracy")
        table.add_row(
            p["name"],
            str(p["n_filters"]),
            "-" if val is None else f"{val:.4f}",
            f"{paper_accuracy(p):.4f}",
            f"{p['snr']:.3f}",
            f"{p['noise_per_filter']:.2f}",
            f"{p['clusters_per_filter']:.2f}",
            f"{p['cluster_size']:.2f}",
            "-" if p.get("clustered_labels_per_filter") is None else f"{p['clustered_labels_per_filter']:.2f}",
            f"{p['dead_fraction']:.2f}",
        )
    return table
