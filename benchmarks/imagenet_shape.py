"""ImageNet-shaped, on this CPU: 1000 labels at 224 px through import -> measure -> prune -> export,
as a user runs them.

Generates an ImageFolder (``train/`` and ``val/`` class folders of JPEGs: a smooth per-class pattern, shifted, plus
noise), saves random weights of full-width ``timm:efficientnet_b0`` and ``torchvision:vgg16_bn`` to ``.safetensors``,
and runs ``prune-snr import``, ``measure`` (every point, ``--expanded`` for EfficientNet, a label sweep up to the class
count), ``prune --target 0.5 --metric macs --finetune-epochs 0`` and ``export`` as subprocesses. Beside them, one
plain inference pass over the same images (warm; same loader) is the unit the measurement's time is divided by.

Per phase it prints wall time, peak RSS of that child (``wait4``'s ``ru_maxrss``) against the memory budget, disk
(feature cache, fields.npz), and from the per-image costs measured here an ESTIMATE of the real ImageNet run
(1,281,167 + 50,000 images) on one H100; the CPU -> H100 ratio is this CPU's measured FLOP/s against an assumed
400 TFLOP/s (bf16, dense, realistic), printed with the result. A rerun skips finished phases (``OUT/results.json``).

    OMP_NUM_THREADS=1 python benchmarks/imagenet_shape.py --out runs/imagenet_shape  # 1000 x (20 + 5)
    OMP_NUM_THREADS=1 python benchmarks/imagenet_shape.py --out runs/in_small --classes 100 --train-per-class 4 \\
        --test-per-class 2 --size 112
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # benchmarks/_common.py
from _common import load_results, save_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MODELS = {"efficientnet_b0": ("timm:efficientnet_b0", ["--expanded"]), "vgg16_bn": ("torchvision:vgg16_bn", [])}
IMAGENET = {"train": 1_281_167, "test": 50_000}
H100_FLOPS = 400e12  # assumed realistic bf16 dense throughput of one H100 (peak ~990 TFLOP/s)
LOADER_WORKERS = 16  # assumed decode workers beside the H100
DISK_BPS = 2e9  # assumed sequential read of the feature cache (NVMe)

WEIGHTS = r"""
import sys, timm, torchvision
from safetensors.torch import save_file
arch, classes, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family, _, name = arch.partition(":")
model = timm.create_model(name, num_classes=classes) if family == "timm" else torchvision.models.get_model(name, num_classes=classes)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, path)
"""  # noqa: E501 (a line of the child's script above: the string must stay as it is)

INFERENCE = r"""
import json, sys, time, torch
import prune_snr
from prune_snr.data import build_dataset
from prune_snr.runtime import make_loader
model_pt, data, batch, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
model = prune_snr.load(model_pt).eval()
size = model.spec.get("input_size")
sets = [build_dataset(data, split, augment=False, input_size=size) for split in ("train", "test")]
with torch.no_grad():
    x = torch.stack([sets[1][i][0] for i in range(min(batch, len(sets[1])))])
    model(x)  # warm-up, not timed
    t0 = time.perf_counter()
    n = 0
    for ds in sets:  # the plain pass: decode + forward over the images the measurement reads, its loader and batch
        for xb, _ in make_loader(ds, batch_size=batch, shuffle=False):
            model(xb)
            n += len(xb)
    pass_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    reps = 0
    while reps < 2 or time.perf_counter() - t0 < 5:  # forward only, on one decoded batch
        model(x)
        reps += 1
    compute_img_s = (time.perf_counter() - t0) / (reps * len(x))
json.dump({"images": n, "pass_s": pass_s, "compute_img_s": compute_img_s}, open(out, "w"))
"""


def run_child(argv: list[str], log: Path, env: dict | None = None) -> dict:
    """Run one phase as a child process; its wall time and peak RSS (its own ru_maxrss); stop on failure."""
    t0 = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        sys.exit(
            f"{' '.join(map(str, argv[:4]))} ... failed (exit {code}); see {log}:\n"
            + "".join(log.read_text().splitlines(True)[-15:])
        )
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}


def generate(root: Path, *, classes: int, per_split: dict, size: int, fmt: str, seed: int = 0) -> None:
    """An ImageFolder of ``classes`` labels: each a smooth random colour pattern, each image shifted and noised."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    coarse = rng.random((classes, 4, 4, 3)).astype(np.float32)
    grid = np.linspace(0, 3, size)
    i0 = np.minimum(grid.astype(int), 2)
    frac = (grid - i0)[:, None]
    for split, n in per_split.items():
        for c in range(classes):
            folder = root / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            rows = coarse[c][i0] * (1 - frac[..., None]) + coarse[c][i0 + 1] * frac[..., None]  # size x 4 x 3
            proto = rows[:, i0] * (1 - frac.T[..., None]) + rows[:, i0 + 1] * frac.T[..., None]  # size x size x 3
            for k in range(n):
                img = np.roll(proto, tuple(rng.integers(-size // 8, size // 8 + 1, 2)), axis=(0, 1))
                img = np.clip(img + 0.15 * rng.standard_normal(img.shape, dtype=np.float32), 0, 1)
                Image.fromarray((img * 255).astype(np.uint8)).save(folder / f"{k}.{fmt}", quality=90)


def folder_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) if Path(path).exists() else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("runs/imagenet_shape"))
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--train-per-class", type=int, default=20)
    ap.add_argument("--test-per-class", type=int, default=5)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--format", choices=("jpg", "png"), default="jpg")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--labels", default="3,10,100,1000", help="Label sweep; counts above --classes are dropped.")
    ap.add_argument("--pool", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--head-epochs", type=int, default=None)
    ap.add_argument(
        "--memory-budget", type=float, default=None, help="GiB for measure (default: its own, a quarter of the RAM)."
    )
    ap.add_argument("--repeats", type=int, default=3, help="export latency repeats.")
    args = ap.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.json"
    results = load_results(results_path, {})
    setting = {
        k: getattr(args, k)
        for k in ("classes", "train_per_class", "test_per_class", "size", "format", "pool", "batch_size")
    }
    if results.get("setting", setting) != setting:
        sys.exit(f"{out} holds a run of another setting {results['setting']}; choose another --out")
    results["setting"] = setting
    results["threads"] = int(os.environ.get("OMP_NUM_THREADS", os.cpu_count()))
    phases = results.setdefault("phases", {})

    def phase(name: str, work) -> dict:
        if name in phases:
            print(f"{name}: done in an earlier run, skipped")
            return phases[name]
        phases[name] = work()
        save_results(results_path, results)
        print(f"{name}: {phases[name]['wall_s']:.1f} s, peak RSS {phases[name].get('peak_rss_mb', 0):.0f} MB")
        return phases[name]

    data = out / "data"

    def gen():
        t0 = time.perf_counter()
        shutil.rmtree(data, ignore_errors=True)
        generate(
            data,
            classes=args.classes,
            per_split={"train": args.train_per_class, "val": args.test_per_class},
            size=args.size,
            fmt=args.format,
        )
        return {"wall_s": time.perf_counter() - t0, "disk_bytes": folder_bytes(data)}

    phase("generate", gen)
    dataset = f"imagefolder:{data}"
    labels = [k for k in (int(v) for v in args.labels.split(",")) if 2 <= k <= args.classes]
    budget = args.memory_budget or (os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 4 / 2**30)
    cli = [sys.executable, "-m", "prune_snr.cli"]
    for name in args.models.split(","):
        arch, extra = MODELS[name]
        d = out / name
        d.mkdir(exist_ok=True)
        weights = d / "random.safetensors"

        def import_():
            rec = run_child([sys.executable, "-c", WEIGHTS, arch, str(args.classes), str(weights)], d / "weights.log")
            shutil.rmtree(d / "model", ignore_errors=True)
            imp = run_child(
                cli
                + [
                    "import",
                    arch,
                    "--num-classes",
                    str(args.classes),
                    "--weights",
                    str(weights),
                    "--input-size",
                    str(args.size),
                    "--dataset",
                    dataset,
                    "--device",
                    "cpu",
                    "--out",
                    str(d / "model"),
                ],
                d / "import.log",
            )
            metrics = json.loads((d / "model" / "metrics.json").read_text())
            return {
                **imp,
                "weights_s": rec["wall_s"],
                "weights_bytes": weights.stat().st_size,
                "macs": metrics["macs"],
                "params": metrics["params"],
            }

        imp = phase(f"{name}/import", import_)

        def inference():
            rec = run_child(
                [
                    sys.executable,
                    "-c",
                    INFERENCE,
                    str(d / "model" / "model.pt"),
                    dataset,
                    str(args.batch_size),
                    str(d / "inference.json"),
                ],
                d / "inference.log",
            )
            return {**rec, **json.loads((d / "inference.json").read_text())}

        inf = phase(f"{name}/inference_pass", inference)

        def measure():
            shutil.rmtree(d / "measurement", ignore_errors=True)
            argv = cli + [
                "measure",
                str(d / "model" / "model.pt"),
                "--points",
                "all",
                *extra,
                "--pool",
                str(args.pool),
                "--labels",
                ",".join(map(str, labels)),
                "--batch-size",
                str(args.batch_size),
                "--device",
                "cpu",
                "--no-plots",
                "--memory-budget",
                f"{budget:.3f}",
                "--out",
                str(d / "measurement"),
            ]
            if args.head_epochs:
                argv += ["--head-epochs", str(args.head_epochs)]
            rec = run_child(argv, d / "measure.log", env={"PRUNE_SNR_CACHE": str(out / "cache")})
            meas = json.loads((d / "measurement" / "measurement.json").read_text())
            cache = Path(meas["feature_cache"])
            shutil.rmtree(
                cache, ignore_errors=True
            )  # measured, reported, removed: the next model's cache needs the disk
            return {
                **rec,
                "timings": meas["timings"],
                "feature_cache_bytes": meas["feature_cache_bytes"],
                "feature_rows": meas["feature_rows"],
                "split_sizes": meas["split_sizes"],
                "points": len(meas["points"]),
                "max_head_epochs_used": max(p["head_epochs_used"] for p in meas["points"]),
                "fields_npz_bytes": (d / "measurement" / "fields.npz").stat().st_size,
                "bytes_per_row": meas["feature_cache_projected_bytes"] / sum(meas["feature_rows"].values()),
            }

        meas = phase(f"{name}/measure", measure)

        def prune():
            shutil.rmtree(d / "pruned", ignore_errors=True)
            rec = run_child(
                cli
                + [
                    "prune",
                    str(d / "model" / "model.pt"),
                    "--measurement",
                    str(d / "measurement"),
                    "--target",
                    "0.5",
                    "--metric",
                    "macs",
                    "--finetune-epochs",
                    "0",
                    "--batch-size",
                    str(args.batch_size),
                    "--device",
                    "cpu",
                    "--out",
                    str(d / "pruned"),
                ],
                d / "prune.log",
                env={"PRUNE_SNR_CACHE": str(out / "cache")},
            )
            report = json.loads((d / "pruned" / "report.json").read_text())
            return {
                **rec,
                "macs": [report["before"]["macs"], report["after"]["macs"]],
                "accuracy": [report["before"].get("accuracy"), report["after"].get("accuracy")],
            }

        phase(f"{name}/prune", prune)

        def export():
            rec = run_child(
                cli
                + [
                    "export",
                    str(d / "pruned" / "pruned.pt"),
                    "--out",
                    str(d / "pruned" / "model.onnx"),
                    "--repeats",
                    str(args.repeats),
                ],
                d / "export.log",
            )
            return {**rec, "onnx_bytes": (d / "pruned" / "model.onnx").stat().st_size}

        phase(f"{name}/export", export)
        results.setdefault("derived", {})[name] = derive(imp, inf, meas)
        save_results(results_path, results)
    print_tables(results, budget)
    return 0


def derive(imp: dict, inf: dict, meas: dict) -> dict:
    """The measurement over the plain pass, and the ImageNet-on-H100 estimate from the per-image costs measured here."""
    t = meas["timings"]
    images = inf["images"]
    feature_s = t["features_train_s"] + t["features_test_s"]
    flops_here = 2 * imp["macs"] / inf["compute_img_s"]
    ratio = H100_FLOPS / flops_here
    decode_img_s = max(inf["pass_s"] / images - inf["compute_img_s"], 0.0)  # per core, here
    n_all, n_train = IMAGENET["train"] + IMAGENET["test"], IMAGENET["train"]
    train_rows = meas["split_sizes"]["train"]
    rest_s = t["total_s"] - feature_s - t["heads_s"]  # fields, sweep, loading
    cache_full = meas["bytes_per_row"] * n_all
    features_h100 = max(n_all * inf["compute_img_s"] / ratio, n_all * decode_img_s / LOADER_WORKERS)
    heads_h100 = max(t["heads_s"] / train_rows * n_train / ratio, meas["max_head_epochs_used"] * cache_full / DISK_BPS)
    rest_h100 = rest_s / ratio + cache_full / DISK_BPS  # one read of the cache for the class means
    # in-process times on both sides (the child's interpreter and imports are not the measurement's work)
    return {
        "measure_over_inference_pass": t["total_s"] / inf["pass_s"],
        "features_over_inference_pass": feature_s / inf["pass_s"],
        "flops_here": flops_here,
        "cpu_to_h100_ratio": ratio,
        "decode_img_s": decode_img_s,
        "imagenet_cache_bytes": cache_full,
        "imagenet_cache_bytes_train_per_class_100": meas["bytes_per_row"] * (100_000 + 50_000),
        "h100_estimate_s": {
            "features": features_h100,
            "heads": heads_h100,
            "fields_and_sweep": rest_h100,
            "plain_inference_pass": max(n_all * inf["compute_img_s"] / ratio, n_all * decode_img_s / LOADER_WORKERS),
        },
    }


def print_tables(results: dict, budget: float) -> None:
    s, ph = results["setting"], results["phases"]
    print(
        f"\nsetting: {s['classes']} classes x ({s['train_per_class']} train + {s['test_per_class']} val) images of "
        f"{s['size']} px ({s['format']}), pool {s['pool']}, batch {s['batch_size']}, {results['threads']} thread(s); "
        f"memory budget {budget:.1f} GiB; dataset {ph['generate']['disk_bytes'] / 1e6:.1f} MB, generated in "
        f"{ph['generate']['wall_s']:.1f} s"
    )
    print(f"{'model':16} {'phase':15} {'wall s':>8} {'peak RSS MB':>12} {'of budget':>9}  disk / notes")
    for key, rec in ph.items():
        if key == "generate":
            continue
        model, name = key.split("/")
        note = ""
        if name == "import":
            note = (
                f"weights {rec['weights_bytes'] / 1e6:.0f} MB; {rec['params']:,} params, "
                f"{rec['macs'] / 1e9:.2f} GMACs/img"
            )
        elif name == "inference_pass":
            note = (
                f"{rec['images']} images in {rec['pass_s']:.1f} s ({rec['pass_s'] / rec['images'] * 1e3:.0f} ms/img; "
                f"forward only {rec['compute_img_s'] * 1e3:.0f} ms/img)"
            )
        elif name == "measure":
            t = rec["timings"]
            note = (
                f"feature cache {rec['feature_cache_bytes'] / 1e6:.1f} MB ({rec['bytes_per_row'] / 1e3:.1f} kB/img), "
                f"fields.npz {rec['fields_npz_bytes'] / 1e6:.1f} MB; {rec['points']} points; features "
                f"{t['features_train_s'] + t['features_test_s']:.1f} s, heads {t['heads_s']:.1f} s, all heads+fields "
                f"{t['heads_and_fields_s']:.1f} s, sweep "
                f"{sum(v for k, v in t.items() if k.startswith('sweep_') and not k.endswith('heads_s')):.1f} s"
            )
        elif name == "prune":
            note = f"MACs {rec['macs'][0] / 1e9:.2f} -> {rec['macs'][1] / 1e9:.2f} G"
        elif name == "export":
            note = f"ONNX {rec['onnx_bytes'] / 1e6:.1f} MB"
        print(
            f"{model:16} {name:15} {rec['wall_s']:8.1f} {rec['peak_rss_mb']:12.0f} "
            f"{rec['peak_rss_mb'] / 1024 / budget:9.1%}  {note}"
        )
    for model, d in results.get("derived", {}).items():
        e = d["h100_estimate_s"]
        print(
            f"\n{model}: measure / one plain inference pass = {d['measure_over_inference_pass']:.2f}x "
            f"(its feature pass alone {d['features_over_inference_pass']:.2f}x)"
        )
        print(
            "  ESTIMATE, ImageNet (1,281,167 + 50,000 images) measured on one H100: CPU->H100 ratio "
            f"{d['cpu_to_h100_ratio']:.0f}x (forward {d['flops_here'] / 1e9:.1f} GFLOP/s here vs an assumed "
            f"{H100_FLOPS / 1e12:.0f} TFLOP/s bf16 dense); JPEG decode {d['decode_img_s'] * 1e3:.1f} ms/img/core "
            f"here, {LOADER_WORKERS} loader workers; cache read at {DISK_BPS / 1e9:.0f} GB/s"
        )
        print(
            f"  features {e['features'] / 60:.1f} min, heads {e['heads'] / 60:.1f} min, fields+sweep "
            f"{e['fields_and_sweep'] / 60:.1f} min (total "
            f"{(e['features'] + e['heads'] + e['fields_and_sweep']) / 60:.1f} min; one plain pass "
            f"{e['plain_inference_pass'] / 60:.1f} min); feature cache {d['imagenet_cache_bytes'] / 1e9:.0f} GB (with "
            f"--train-per-class 100: {d['imagenet_cache_bytes_train_per_class_100'] / 1e9:.0f} GB)"
        )


if __name__ == "__main__":
    sys.exit(main())
