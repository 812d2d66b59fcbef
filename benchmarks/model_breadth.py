"""Breadth: prune-snr's whole path at default flags on every CNN classifier a user may bring.

For each model: random weights saved to a ``.safetensors`` file -> ``prune-snr import --weights`` at
``--input-size`` (64 px) -> ``measure`` on ``synthetic`` data (the model's default points) ->
``prune --target 0.5 --metric macs`` with that measurement and no fine-tuning -> ``export`` (ONNX,
checked with onnxruntime); then ``prune --criterion snr`` at default flags (the column says whether it
went through and how many channel groups fell back to L1, with the reason). Each model runs in its own processes, as a
user would run the commands; a step that fails records its one-line error. Prints the table (model, measured points,
MACs and params kept, export OK, seconds, what went wrong) and keeps every row in ``--out``, so a
rerun continues where it stopped.

    python benchmarks/model_breadth.py --out benchmarks/results/model_breadth.json          # the default set
    python benchmarks/model_breadth.py --all --out benchmarks/results/model_breadth_all.json  # every torchvision CNN
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, load_results, save_results, script_parser  # noqa: E402

#: One or two models of every torchvision CNN family, and common timm families.
DEFAULT = [
    f"torchvision:{n}"
    for n in (
        "alexnet",
        "convnext_tiny",
        "densenet121",
        "efficientnet_b0",
        "efficientnet_v2_s",
        "googlenet",
        "inception_v3",
        "mnasnet0_5",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "regnet_x_400mf",
        "regnet_y_400mf",
        "resnet18",
        "resnet50",
        "resnext50_32x4d",
        "shufflenet_v2_x0_5",
        "squeezenet1_0",
        "vgg11_bn",
        "vgg16_bn",
        "wide_resnet50_2",
    )
] + [
    f"timm:{n}"
    for n in (
        "resnet18",
        "efficientnet_b0",
        "mobilenetv3_large_100",
        "regnety_002",
        "convnext_atto",
        "densenet121",
        "ghostnet_100",
        "rexnet_100",
    )
]
TRANSFORMERS = ("vit_", "swin_", "maxvit_")


def every_torchvision_cnn() -> list[str]:
    import torchvision

    return [
        f"torchvision:{n}"
        for n in torchvision.models.list_models(module=torchvision.models)
        if not n.startswith(TRANSFORMERS)
    ]


def run(cmd: list[str], timeout: float) -> tuple[bool, str]:
    """Run one prune-snr command; ``(ok, its last error line)``."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout:.0f} s"
    if done.returncode == 0:
        return True, ""
    lines = [line for line in (done.stderr + done.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return False, (errors or lines or [f"exit {done.returncode}"])[-1].strip()[:300]


def breadth_row(model: str, work: Path, *, input_size: int, target: float, timeout: float) -> dict:
    from safetensors.torch import save_file

    from prune_snr.errors import PruneSnrError
    from prune_snr.models import build_model

    row = {"model": model, "ok": False}
    t0 = time.perf_counter()
    try:
        state = build_model(model, num_classes=10, input_size=input_size).state_dict()
    except PruneSnrError as exc:
        if not getattr(exc, "smallest_input_size", None):
            return {**row, "step": "build", "error": str(exc), "seconds": time.perf_counter() - t0}
        input_size = exc.smallest_input_size  # the one-line error named it: run there (inception_v3 needs 75 px)
        row["input_size"] = input_size
        state = build_model(model, num_classes=10, input_size=input_size).state_dict()
    weights = work / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, weights)
    cli = [sys.executable, "-m", "prune_snr.cli"]
    steps = [
        (
            "import",
            [
                *cli,
                "import",
                model,
                "--num-classes",
                "10",
                "--weights",
                str(weights),
                "--input-size",
                str(input_size),
                "--out",
                str(work / "run"),
            ],
        ),
        (
            "measure",
            [
                *cli,
                "measure",
                str(work / "run" / "model.pt"),
                "--dataset",
                "synthetic",
                "--head-epochs",
                "5",
                "--device",
                "cpu",
                "--no-plots",
                "--out",
                str(work / "measurement"),
            ],
        ),
        (
            "prune",
            [
                *cli,
                "prune",
                str(work / "run" / "model.pt"),
                "--dataset",
                "synthetic",
                "--measurement",
                str(work / "measurement"),
                "--target",
                str(target),
                "--metric",
                "macs",
                "--finetune-epochs",
                "0",
                "--device",
                "cpu",
                "--out",
                str(work / "pruned"),
            ],
        ),
        (
            "export",
            [
                *cli,
                "export",
                str(work / "pruned" / "pruned.pt"),
                "--repeats",
                "3",
                "--out",
                str(work / "pruned" / "model.onnx"),
            ],
        ),
    ]
    for step, cmd in steps:
        ok, error = run(cmd, timeout)
        if not ok:
            return {**row, "step": step, "error": error, "seconds": time.perf_counter() - t0}
    measurement = json.loads((work / "measurement" / "measurement.json").read_text())
    report = json.loads((work / "pruned" / "report.json").read_text())
    row["snr"] = snr_column(cli, work, target=target, timeout=timeout)
    onnx = json.loads((work / "pruned" / "model.onnx.json").read_text())
    before, after = report["before"], report["after"]
    return {
        **row,
        "ok": True,
        "points": len(measurement["points"]),
        "first_point": measurement["points"][0]["name"],
        "last_point": measurement["points"][-1]["name"],
        "macs_kept": after["macs"] / before["macs"],
        "params_kept": after["params"] / before["params"],
        "removed": report["search"]["removed"],
        "unreached": report["search"].get("unreached"),
        "onnx_max_abs_diff": onnx.get("batch_8_max_abs_diff"),
        "seconds": time.perf_counter() - t0,
    }


def snr_column(cli: list[str], work: Path, *, target: float, timeout: float) -> dict:
    """``prune --criterion snr`` at default flags (prune measures the points its channel groups need): whether it
    went through, the share of channel groups scored by the L1 fallback, and the one-line reason where it failed."""
    cmd = [
        *cli,
        "prune",
        str(work / "run" / "model.pt"),
        "--dataset",
        "synthetic",
        "--criterion",
        "snr",
        "--target",
        str(target),
        "--metric",
        "macs",
        "--finetune-epochs",
        "0",
        "--device",
        "cpu",
        "--out",
        str(work / "pruned_snr"),
    ]
    ok, error = run(cmd, timeout)
    if not ok:
        return {"ok": False, "error": error}
    import torch
    import torch_pruning as tp

    from prune_snr import load
    from prune_snr.models import classifier_name, example_input

    report = json.loads((work / "pruned_snr" / "report.json").read_text())
    model = load(work / "run" / "model.pt")
    graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input(model))
    head = dict(model.named_modules())[classifier_name(model)]
    groups = len(
        list(graph.get_all_groups(ignored_layers=[head], root_module_types=[torch.nn.Conv2d, torch.nn.Linear]))
    )
    fallback = report["search"]["fallback_groups"]
    reasons = sorted({g[g.rindex("): ") + 3 :] if "): " in g else g for g in fallback})  # "NAME (MODULE): why"
    return {
        "ok": True,
        "groups": groups,
        "fallback": len(fallback),
        "fallback_share": len(fallback) / max(1, groups),
        "macs_kept": report["after"]["macs"] / report["before"]["macs"],
        "reasons": reasons,
    }


def snr_cell(r: dict) -> str:
    snr = r.get("snr")
    if snr is None:
        return "-"
    if not snr["ok"]:
        return f"fails: {snr['error']}"
    why = f" ({'; '.join(snr['reasons'])})" if snr["reasons"] else ""
    return f"OK, fallback {snr['fallback']}/{snr['groups']}{why}"


def table(rows: list[dict]) -> str:
    lines = [
        "| model | points | MACs kept | params kept | export | s | --criterion snr | note |",
        "|---|---:|---:|---:|---|---:|---|---|",
    ]
    for r in rows:
        if r["ok"]:
            note = f"closest reachable ({r['unreached'].split(':', 1)[1].strip()})" if r.get("unreached") else ""
            size = f" ({r['input_size']} px)" if r.get("input_size") else ""
            lines.append(
                f"| {r['model']}{size} | {r['points']} | {r['macs_kept']:.3f} | {r['params_kept']:.3f} | OK "
                f"({r['onnx_max_abs_diff']:.0e}) | {r['seconds']:.0f} | {snr_cell(r)} | {note} |"
            )
        else:
            lines.append(f"| {r['model']} | - | - | - | - | {r['seconds']:.0f} | - | {r['step']}: {r['error']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument("--models", help="comma-separated (default: one or two of every family)")
    parser.add_argument("--all", action="store_true", help="every torchvision CNN classifier (transformers aside)")
    parser.add_argument("--input-size", type=int, default=64)
    parser.add_argument("--target", type=float, default=0.5)
    parser.add_argument("--timeout", type=float, default=1200, help="seconds one command may take")
    add_standard(parser, "out")
    args = parser.parse_args(argv)
    models = args.models.split(",") if args.models else every_torchvision_cnn() if args.all else DEFAULT
    out = Path(args.out)
    done = {r["model"]: r for r in load_results(out, {"rows": []})["rows"]}
    for model in models:
        if model in done:
            continue
        with tempfile.TemporaryDirectory(prefix="breadth-") as work:
            row = breadth_row(model, Path(work), input_size=args.input_size, target=args.target, timeout=args.timeout)
        done[model] = row
        kept = [done[m] for m in models if m in done] + [
            r for m, r in done.items() if m not in models
        ]  # other runs' rows stay
        save_results(
            out,
            {"input_size": args.input_size, "target_macs_removed": args.target, "dataset": "synthetic", "rows": kept},
        )
        print(
            f"{model}: {'OK' if row['ok'] else row['step'] + ' failed: ' + row['error']} ({row['seconds']:.0f} s)",
            flush=True,
        )
    rows = [done[m] for m in models if m in done]
    print(table(rows))
    print(f"{sum(r['ok'] for r in rows)} of {len(rows)} models went through import -> measure -> prune -> export")
    return 0


if __name__ == "__main__":
    sys.exit(main())
