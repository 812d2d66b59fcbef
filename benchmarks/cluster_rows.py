"""Per-layer cluster figures of one model under both cluster definitions, side by side.

Reads two measurement folders of the same checkpoint (``prune-snr measure --clusters blocks`` and
``--clusters components``) and writes, per definition, every point's validation and test head accuracy,
clusters per filter, cluster size, clustered labels per filter, noise per filter and SNR (the fields split's),
with a Markdown table of the first and last point:

    python benchmarks/cluster_rows.py RUN/m_blocks RUN/m_components --model "EfficientNet-B0 ..." \
        --out benchmarks/results/clusters/efficientnet_b0.json
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, machine_line, save_results, script_parser  # noqa: E402

KEYS = (
    "val_accuracy",
    "test_accuracy",
    "clusters_per_filter",
    "cluster_size",
    "clustered_labels_per_filter",
    "noise_per_filter",
    "snr",
)


def rows(folder: Path) -> list[dict]:
    from prune_snr.measure import Measurement

    return [{"name": p["name"], **{k: p.get(k) for k in KEYS}} for p in Measurement.load(folder).points]


def markdown(points: dict) -> str:
    lines = [
        "| point | definition | clusters / filter | cluster size | clustered labels / filter | noise / filter | SNR |",
        "|---|---|---|---|---|---|---|",
    ]
    for which in (0, -1):
        for definition, found in points.items():
            p = found[which]
            lines.append(
                f"| {p['name']} | {definition} | {p['clusters_per_filter']:.2f} | {p['cluster_size']:.2f} | "
                f"{p['clustered_labels_per_filter']:.2f} | {p['noise_per_filter']:.1f} | {p['snr']:.3f} |"
            )
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("blocks", type=Path, help="measurement folder made with --clusters blocks")
    parser.add_argument("components", type=Path, help="measurement folder made with --clusters components")
    parser.add_argument(
        "--model", required=True, help="what the checkpoint is (name, data, accuracy, how it was trained)"
    )
    add_standard(parser, "out")
    args = parser.parse_args(argv)
    points = {"blocks": rows(args.blocks), "components": rows(args.components)}
    save_results(
        args.out,
        {
            "machine": machine_line(),
            "model": args.model,
            "points": points,
            "commands": {k: f"prune-snr measure RUN/model.pt --clusters {k} --out RUN/m_{k}" for k in points},
        },
    )
    table = markdown(points)
    Path(args.out).with_suffix(".md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
