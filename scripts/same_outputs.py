"""Fingerprints of the artifacts of fixed, seeded scenarios: a refactor that changes no behaviour changes none.

Runs, with the CLI as a user does: train a width-1/8 VGG-16 (synthetic data, one epoch), measure it
with a label sweep, prune it to half its MACs by SNR with truncation and one fine-tuning epoch, and the
same prune of a timm ResNet-18 by L1 with block dropping. Prints (and with ``--out`` writes) one
SHA-256 per artifact: ``measurement.json`` and ``report.json`` with their timings and paths taken out,
``config.yaml`` with its paths taken out, every tensor of ``pruned.pt``. Compare two commits with
``--compare``:

    python scripts/same_outputs.py --out /tmp/before.json              # on the old commit
    python scripts/same_outputs.py --compare /tmp/before.json          # on the new one: exit 1 on any difference
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

#: Keys whose values depend on the clock or the folder, not on behaviour.
VOLATILE = re.compile(
    r"seconds|_s$|time|wall|elapsed|latency|path|dir$|out$|checkpoint|measurement$|created|host|machine"
    r"|version|rss|_mb$|^source$"
)
COMMON = ["--dataset", "synthetic:4", "--device", "cpu", "--seed", "3"]
SCENARIOS = {
    "vgg": [
        ["train", "--model", "vgg16", "--width-mult", "0.125", "--epochs", "1", "--out", "{run}", *COMMON],
        ["measure", "{run}/model.pt", "--labels", "2,4", "--out", "{run}/m", "--device", "cpu", "--seed", "3"],
        [
            "prune",
            "{run}/model.pt",
            "--measurement",
            "{run}/m",
            "--criterion",
            "snr",
            "--target",
            "0.5",
            "--metric",
            "macs",
            "--truncate",
            "--delta",
            "0.05",
            "--finetune-epochs",
            "1",
            "--out",
            "{run}/p",
            "--device",
            "cpu",
            "--seed",
            "3",
        ],
    ],
    "resnet": [
        ["train", "--model", "timm:resnet18", "--epochs", "1", "--out", "{run}", *COMMON],
        [
            "prune",
            "{run}/model.pt",
            "--criterion",
            "l1",
            "--target",
            "0.5",
            "--metric",
            "macs",
            "--drop-blocks",
            "--finetune-epochs",
            "1",
            "--out",
            "{run}/p",
            "--device",
            "cpu",
            "--seed",
            "3",
        ],
    ],
}


def scrub(value):
    """``value`` without the keys that change run to run (timings, paths)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if not VOLATILE.search(str(k))}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    return value


def flat(value, prefix=""):
    """``(dotted key, leaf)`` of a checkpoint's nested dicts; a leaf is a tensor or plain data."""
    if isinstance(value, dict) and not VOLATILE.search(prefix.rpartition(".")[2]):
        for k, v in sorted(value.items()):
            yield from flat(v, f"{prefix}.{k}" if prefix else str(k))
    elif not VOLATILE.search(prefix.rpartition(".")[2]):
        yield prefix, value


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def fingerprints(run: Path) -> dict[str, str]:
    found = {}
    for path in sorted(run.rglob("*")):
        name = str(path.relative_to(run))
        if path.name in ("measurement.json", "report.json"):
            found[name] = digest(json.dumps(scrub(json.loads(path.read_text())), sort_keys=True).encode())
        elif path.name == "config.yaml":
            lines = [line for line in path.read_text().splitlines() if not VOLATILE.search(line.split(":")[0].strip())]
            found[name] = digest("\n".join(lines).encode())
        elif path.name == "pruned.pt":
            for key, value in flat(torch.load(path, map_location="cpu", weights_only=True)):
                data = (
                    value.contiguous().numpy().tobytes()
                    if isinstance(value, torch.Tensor)
                    else json.dumps(scrub(value)).encode()
                )
                found[f"{name}:{key}"] = digest(data)
    return found


def run_scenario(name: str, folder: Path) -> dict[str, str]:
    run = folder / name
    for step in SCENARIOS[name]:
        args = [a.format(run=run) for a in step]
        done = subprocess.run([sys.executable, "-m", "prune_snr.cli", *args], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name}: prune-snr {' '.join(args[:1])} failed:\n{done.stderr[-2000:]}")
    return {f"{name}/{k}": v for k, v in fingerprints(run).items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write the fingerprints here")
    parser.add_argument("--compare", type=Path, help="fingerprints of another commit: exit 1 where any differs")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        found = {k: v for name in SCENARIOS for k, v in run_scenario(name, Path(folder)).items()}
    print(f"{len(found)} fingerprints")
    if args.out:
        args.out.write_text(json.dumps(found, indent=1, sort_keys=True))
    if args.compare:
        before = json.loads(args.compare.read_text())
        differ = sorted(k for k in before.keys() | found.keys() if before.get(k) != found.get(k))
        for k in differ:
            print(f"differs: {k}")
        print("same outputs" if not differ else f"{len(differ)} of {len(found)} differ")
        sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
