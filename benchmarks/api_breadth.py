"""API breadth: one model of every timm family that is a CNN classifier, and every torchvision CNN, as instances.

For each model, in its own process under ``--timeout`` seconds, as a user's script would: the instance
(random weights, 10 classes) -> ``prune_snr.measure(model, train=, test=)`` on synthetic ``TensorDataset``s
-> ``prune_snr.prune(..., target=0.5, metric="macs", measurement=...)`` at default flags, no fine-tuning
-> ``prune_snr.export``. A row is ``ok``, ``refused`` (prune-snr's one-line error, kept whole), ``crash``
(any other exception: a bug to fix) or ``hang`` (killed at the time limit). A timm family's model is its
smallest (parameters counted on the meta device) with convolutions beyond a patch embedding and no
attention or recurrent module; ``model_breadth.py``'s timm models (run there by name) are added. Rows accumulate in
``--out``, so a rerun continues where it stopped.

    python benchmarks/api_breadth.py --out benchmarks/results/api_breadth/rows.json
    python benchmarks/api_breadth.py --models timm:rexnet_100,torchvision:resnet18 --out runs/breadth/rows.json
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import add_standard, load_results, machine_line, save_results, script_parser  # noqa: E402

NOT_CNN = re.compile(
    r"Attention|Attn|LiteMLA|LSTM|GRU|Transformer", re.I
)  # module class names of attention or recurrence
TORCHVISION_NOT_CNN = ("vit_", "swin_", "maxvit_")
BREADTH_TIMM = [
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
SIZES = (32, 64, 128, 224)  # the first at which the model's forward runs (Inception wants 75 px and more)


def is_cnn(model) -> bool:
    """Convolutions beyond a patch embedding (ViT and MLP-Mixer have one) and no attention or recurrence."""
    from torch import nn

    modules = list(model.modules())
    return (
        sum(isinstance(m, nn.Conv2d) for m in modules) >= 3
        and not any(hasattr(m, "qkv") for m in modules)
        and not any(NOT_CNN.search(type(m).__name__) for m in modules)
    )


def timm_families() -> list[str]:
    """``timm:NAME`` for the smallest CNN classifier of every timm module that has one (timm's
    ``test_`` models aside)."""
    import timm
    import torch

    chosen = []
    for module in sorted(timm.list_modules()):
        sized = []
        for name in timm.list_models(module=module, exclude_filters=["test_*"]):
            try:
                with torch.device("meta"):
                    model = timm.create_model(name, num_classes=10)
            except Exception:  # a model that needs arguments or weights to build is not one a user brings this way
                continue
            if is_cnn(model):
                sized.append((sum(p.numel() for p in model.parameters()), name))
        if sized:
            chosen.append(f"timm:{min(sized)[1]}")
    return chosen


def torchvision_cnns() -> list[str]:
    import torchvision

    return [
        f"torchvision:{n}"
        for n in torchvision.models.list_models(module=torchvision.models)
        if not n.startswith(TORCHVISION_NOT_CNN)
    ]


#: What each model's process runs (argv: name, size list, json path): the API path, as a user script would.
CHILD = r"""
import json, sys, time, traceback
import torch
from torch.utils.data import TensorDataset
import prune_snr
from prune_snr.errors import PruneSnrError

name, sizes, out = sys.argv[1], [int(s) for s in sys.argv[2].split(",")], sys.argv[3]
row, started = {"model": name}, time.perf_counter()

def save():
    row["seconds"] = round(time.perf_counter() - started, 1)
    json.dump(row, open(out, "w"))

library, arch = name.split(":", 1)
torch.manual_seed(0)
if library == "timm":
    import timm
    model = timm.create_model(arch, num_classes=10)
else:
    import torchvision
    extra = {"aux_logits": False, "init_weights": False} if arch in ("googlenet", "inception_v3") else {}
    model = torchvision.models.get_model(arch, num_classes=10, **extra)
model.eval()
for size in sizes:
    try:
        with torch.no_grad():
            model(torch.randn(2, 3, size, size))
        break
    except Exception:
        continue
row["input_size"] = size
g = torch.Generator().manual_seed(0)
y = torch.arange(180) % 10
x = torch.randn(180, 3, size, size, generator=g) * 0.5 + y[:, None, None, None] / 5.0
train, test = TensorDataset(x[:120], y[:120]), TensorDataset(x[120:], y[120:])
stage = "measure"
try:
    m = prune_snr.measure(model, train=train, test=test, head_epochs=1, device="cpu")
    row["points"] = len(m.points)
    stage = "prune"
    slim, report = prune_snr.prune(model, train=train, test=test, target=0.5, metric="macs", measurement=m,
                                   finetune_epochs=0, device="cpu")
    row["macs_kept"] = round(report["after"]["macs"] / report["before"]["macs"], 3)
    row["params_kept"] = round(report["after"]["params"] / report["before"]["params"], 3)
    stage = "export"
    exported = prune_snr.export(slim, out + ".onnx", example_input=x[:1])
    row["onnx_max_abs_diff"] = exported["batch_8_max_abs_diff"]
    with torch.no_grad():  # random weights can give logits in the thousands: the difference relative to them
        row["logit_scale"] = float(slim.eval()(x[:8]).abs().max())
    row["status"] = "ok"
except PruneSnrError as exc:
    row.update(status="refused", stage=stage, error=str(exc))
except Exception as exc:
    row.update(status="crash", stage=stage, error=f"{type(exc).__name__}: {exc}".splitlines()[0][:300],
               where=traceback.format_exc().strip().splitlines()[-3].strip()[:200])
save()
"""


def run_one(model: str, timeout: float, work: Path) -> dict:
    out = work / f"{model.replace(':', '_')}.json"
    out.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD, model, ",".join(map(str, SIZES)), str(out)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return {
            "model": model,
            "status": "hang",
            "error": f"killed after {timeout:.0f} s",
            "seconds": round(timeout, 1),
        }
    if out.exists():
        return json.loads(out.read_text())
    tail = [line for line in (done.stderr or done.stdout).splitlines() if line.strip()][-1:] or [
        f"exit {done.returncode}"
    ]
    return {
        "model": model,
        "status": "crash",
        "error": tail[0][:300],
        "seconds": round(time.perf_counter() - started, 1),
    }


def landed(row: dict) -> bool:
    """Within prune's landing rule for the asked 0.5 of the MACs (:func:`prune_snr.prune.target.tolerance`)."""
    from prune_snr.prune.target import tolerance  # torch and torch-pruning: imported only for the table

    return row["status"] == "ok" and abs(row["macs_kept"] - 0.5) <= tolerance("macs", 0.5)


def relative_diff(row: dict) -> float:
    """The ONNX check's largest logit difference over the largest logit (random weights give
    logits from 1e-15 to 1e7)."""
    return row["onnx_max_abs_diff"] / max(row.get("logit_scale") or 0.0, 1e-30)


def table(rows: list[dict]) -> str:
    lines = [
        "| model | status | landed | px | points | MACs kept | params kept | s | what |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        what = (
            r.get("error", "")
            if r["status"] != "ok"
            else f"ONNX diff {r['onnx_max_abs_diff']:.1e} of logits up to {r.get('logit_scale', float('nan')):.1e} "
            f"({relative_diff(r):.0e})"
        )
        mark = ("yes" if landed(r) else "no") if r["status"] == "ok" else ""
        lines.append(
            f"| {r['model']} | {r['status']} | {mark} | {r.get('input_size', '')} | {r.get('points', '')} | "
            f"{r.get('macs_kept', '')} | {r.get('params_kept', '')} | {r['seconds']:.0f} | {what} |"
        )
    return "\n".join(lines)


def summary(rows: list[dict], results: dict) -> str:
    """The table's header: counts, the landing rule, the time per model."""
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "refused", "crash", "hang")}
    ok = [r for r in rows if r["status"] == "ok"]
    seconds = sorted(r["seconds"] for r in rows) or [0.0]
    worst = f"{max(map(relative_diff, ok)):.0e}" if ok else "none exported"
    command = results.get("command", "python benchmarks/api_breadth.py")
    return (
        f"`{command}` on {results['machine']}, {results['dataset']}, at most {results['timeout_s']:.0f} s a model: "
        f"{len(rows)} models (one per timm family that is a CNN classifier, torchvision's CNNs, "
        "model_breadth.py's timm models) as instances through `prune_snr.measure` -> "
        '`prune(target=0.5, metric="macs")` at default flags -> '
        f"`export`. **{count['ok']} go through, {sum(map(landed, ok))} of them within the landing rule** (MACs kept "
        "0.5 ± 0.02; the others stop where the channel alignment or the architecture's coupled groups let them); "
        f"**{count['refused']} refused in one line**, {count['crash']} crash, {count['hang']} killed at the time "
        f"limit. Largest ONNX difference relative to the logits: {worst}. Time per model: median "
        f"{seconds[len(seconds) // 2]:.0f} s, {seconds[0]:.0f}-{seconds[-1]:.0f} s. {results.get('note', '')}\n\n"
    )


def main(argv=None) -> int:
    parser = script_parser(__doc__)
    parser.add_argument(
        "--models", help="comma-separated library:name (default: every timm CNN family, every torchvision CNN)"
    )
    parser.add_argument("--timeout", type=float, default=420, help="seconds one model's process may take")
    parser.add_argument("--table-only", action="store_true", help="rewrite table.md from the rows, run nothing")
    parser.add_argument("--note", help="what the table's reader should know of the run (kept in the rows file)")
    add_standard(parser, "out")
    args = parser.parse_args(argv)
    out = Path(args.out)
    earlier = load_results(out, {"rows": []})
    done = {r["model"]: r for r in earlier["rows"]}
    models = args.models.split(",") if args.models else earlier.get("models") or timm_families() + torchvision_cnns()
    if not args.models:  # model_breadth.py's models, by name there, as instances here
        models += [m for m in BREADTH_TIMM if m not in models]
    for i, model in enumerate(models):
        if model in done or args.table_only:
            continue
        with tempfile.TemporaryDirectory(prefix="api-breadth-") as work:
            row = done[model] = run_one(model, args.timeout, Path(work))
        kept = [done[m] for m in models if m in done] + [r for m, r in done.items() if m not in models]
        command = "python benchmarks/api_breadth.py " + " ".join(argv or sys.argv[1:])
        save_results(
            out,
            {
                "machine": machine_line(),
                "timeout_s": args.timeout,
                "dataset": "synthetic, 120 train / 60 test",
                # a run of a few --models adds rows to the whole list's run: its list and command stay
                "command": earlier.get("command", command) if args.models else command,
                "models": earlier.get("models") if args.models else models,
                "rows": kept,
            },
        )
        print(
            f"[{i + 1}/{len(models)}] {model}: {row['status']} ({row['seconds']:.0f} s) {row.get('error', '')}",
            flush=True,
        )
    rows = [done[m] for m in models if m in done]
    results = load_results(out, {})
    if args.note is not None:
        save_results(out, {**results, "note": args.note})
        results["note"] = args.note
    text = summary(rows, results) + table(rows) + "\n"
    out.with_name("table.md").write_text(text)
    print(text)
    for status in ("ok", "refused", "crash", "hang"):
        print(f"{status}: {sum(r['status'] == status for r in rows)} of {len(rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
