"""Spec: ``benchmarks/gpu_paper.sh`` runs end to end from the offline bundle (``make offline-bundle``), in a fresh
virtual environment with no package index: the CPU rehearsal of the GPU run, at tiny settings."""

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # two models trained, measured, pruned and exported: minutes

REPO = Path(__file__).resolve().parents[2]
CARRIED = ("torch-pruning",)  # the bundle carries these; the rest of what the script needs counts as the machine's own


def test_gpu_paper_rehearses_on_cpu_from_the_offline_bundle_without_a_package_index(tmp_path):
    tree = tmp_path / "tree"
    for part in ("prune_snr", "benchmarks", "recipes", "scripts"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("results", "__pycache__"))
    own = [d.metadata["Name"] for d in metadata.distributions() if d.metadata["Name"].lower() not in CARRIED]
    (tmp_path / "have.txt").write_text("\n".join(own))
    subprocess.run(
        [
            sys.executable,
            "scripts/offline_bundle.py",
            "--python",
            f"{sys.version_info.major}.{sys.version_info.minor}",
            "--have",
            str(tmp_path / "have.txt"),
        ],
        cwd=tree,
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert [w.name.split("-")[0] for w in (tree / ".whl").glob("*.whl")] == ["torch_pruning"]
    subprocess.run(
        [sys.executable, "-m", "venv", "--system-site-packages", str(tmp_path / "venv")], check=True, timeout=120
    )
    env = {
        **os.environ,
        "PATH": f"{tmp_path / 'venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
        "PIP_NO_INDEX": "1",
        "HF_HUB_OFFLINE": "1",
        "FORCE_BUNDLE": "1",
        "DEVICE": "cpu",
        "SUBSET": "600",
        "VGG_EPOCHS": "1",
        "EFF_EPOCHS": "1",
        "FINETUNE_EPOCHS": "1",
        "MEASURE_PER_CLASS": "20",
        "HEAD_EPOCHS": "2",
        "WORKERS": "0",
        "OUT": str(tmp_path / "out"),
        "RUN": str(tmp_path / "run"),
        "SITE": str(tmp_path / "site"),
        "PRUNE_SNR_CACHE": str(tmp_path / "cache"),
    }
    env.pop("PYTHONPATH", None)
    done = subprocess.run(
        ["bash", "benchmarks/gpu_paper.sh"], cwd=tree, env=env, capture_output=True, text=True, timeout=1500
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "installed from .whl/: torch_pruning-" in done.stdout
    summary = json.loads((tmp_path / "out" / "gpu_paper.json").read_text())
    assert summary["status"] == "complete"
    assert summary["heads_feed_ok"], "the heads' three feeds agree (heads_feed.json)"
    for name in ("vgg16", "efficientnet_b0"):
        model = summary["models"][name]
        assert (
            model["measure_over_inference_pass"] > 1
            and model["pruned"]["after"]["macs"] < model["pruned"]["before"]["macs"]
        )
        assert (tmp_path / "out" / f"{name}-report.json").is_file()


def test_gpu_paper_stops_in_one_line_without_the_carried_data(tmp_path):
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "benchmarks", tree / "benchmarks", ignore=shutil.ignore_patterns("results", "__pycache__"))
    env = {**os.environ, "OUT": str(tmp_path / "out"), "RUN": str(tmp_path / "run"), "SITE": str(tmp_path / "site")}
    done = subprocess.run(
        ["bash", "benchmarks/gpu_paper.sh"], cwd=tree, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
    assert "error: .data/train-images-idx3-ubyte.gz is missing: run 'make offline-bundle'" in done.stdout + done.stderr
