"""Spec: under ``torchrun --nproc_per_node=2`` (gloo on CPU) train, measure and the fine-tuning of
prune give the single-process result.

Training is DistributedDataParallel with each rank taking half of every global batch, so the
gradient step is the single-process one except for BatchNorm, whose batch statistics are
per-rank (SyncBatchNorm needs a GPU): weights agree closely, not bit for bit. The feature pass
of ``measure`` runs in eval mode on disjoint shards, so its figures agree to float precision.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import prune_snr
from prune_snr.runtime import make_loader
from prune_snr.train.loop import GlobalBatchShards

pytestmark = pytest.mark.slow  # torchrun processes: minutes; .ci/run runs them after the fast set

TORCHRUN = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
TRAIN = [
    "train",
    "--dataset",
    "synthetic",
    "--width-mult",
    "0.125",
    "--epochs",
    "2",
    "--batch-size",
    "32",
    "--lr",
    "0.01",
    "--no-augment",
    "--device",
    "cpu",
]


def run(args, tmp_path, processes):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRUNE_SNR_CACHE": str(tmp_path / f"cache{processes}")}
    launcher = (
        [sys.executable, "-m"] if processes == 1 else [TORCHRUN, "--standalone", f"--nproc_per_node={processes}", "-m"]
    )
    done = subprocess.run(
        [*launcher, "prune_snr.cli", *map(str, args)], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-1500:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    assert TORCHRUN, "torchrun ships with torch"
    tmp = tmp_path_factory.mktemp("torchrun")
    for processes in (1, 2):
        folder = tmp / f"p{processes}"
        run([*TRAIN, "--out", folder / "train"], tmp, processes)
        run(
            [
                "measure",
                folder / "train" / "model.pt",
                "--head-epochs",
                "3",
                "--device",
                "cpu",
                "--out",
                folder / "measure",
            ],
            tmp,
            processes,
        )
        run(
            [
                "prune",
                folder / "train" / "model.pt",
                "--target",
                "0.4",
                "--criterion",
                "l1",
                "--allocation",
                "uniform",
                "--finetune-epochs",
                "3",
                "--batch-size",
                "32",
                "--round-to",
                "1",
                "--device",
                "cpu",
                "--out",
                folder / "prune",
            ],
            tmp,
            processes,
        )
    return tmp / "p1", tmp / "p2"


def test_torchrun_training_matches_the_single_process_run(runs):
    single, ddp = (json.loads((r / "train" / "metrics.json").read_text()) for r in runs)
    assert [e["epoch"] for e in ddp["epochs"]] == [1, 2]
    assert abs(ddp["test_accuracy"] - single["test_accuracy"]) <= 0.05
    a, b = (prune_snr.load(r / "train" / "model.pt").state_dict() for r in runs)
    names = [k for k in a if a[k].is_floating_point() and "running" not in k]
    wa, wb = (torch.cat([w[k].flatten() for k in names]) for w in (a, b))
    # Half-batch BatchNorm statistics alone move the weights by ~8 % here; a wrong data split or
    # unsynchronised gradients leave two unrelated networks (~100 %).
    assert (wa - wb).norm() / wa.norm() < 0.15


def test_ranks_split_exactly_the_single_process_batches():
    dataset = TensorDataset(torch.arange(103))
    single = [b[0].tolist() for b in make_loader(dataset, batch_size=8, shuffle=True, seed=7, drop_last=True)]
    shards = [list(GlobalBatchShards(dataset, batch_size=8, seed=7, rank=r, world_size=2)) for r in (0, 1)]
    assert [a + b for a, b in zip(*shards, strict=True)] == single


def test_torchrun_measurement_matches_the_single_process_run(runs, tmp_path):
    # Measure the same weights both ways, so only the sharded feature pass differs.
    model = runs[0] / "train" / "model.pt"
    run(
        ["measure", model, "--head-epochs", "3", "--device", "cpu", "--out", tmp_path / "single", "--no-plots"],
        tmp_path,
        1,
    )
    run(
        ["measure", model, "--head-epochs", "3", "--device", "cpu", "--out", tmp_path / "ddp", "--no-plots"],
        tmp_path,
        2,
    )
    single, ddp = (json.loads((tmp_path / k / "measurement.json").read_text()) for k in ("single", "ddp"))
    for p, q in zip(single["points"], ddp["points"], strict=True):
        assert p["name"] == q["name"]
        assert p["val_accuracy"] == pytest.approx(q["val_accuracy"], abs=1e-9)
        assert p["test_accuracy"] == pytest.approx(q["test_accuracy"], abs=1e-9)
        assert p["snr"] == pytest.approx(q["snr"], rel=1e-4, abs=1e-6)
    f, g = (np.load(tmp_path / k / "fields.npz") for k in ("single", "ddp"))
    for key in f.files:
        np.testing.assert_allclose(f[key], g[key], rtol=1e-4, atol=1e-5)


def test_torchrun_fine_tuning_in_prune_writes_one_report_like_the_single_process(runs):
    single, ddp = (json.loads((r / "prune" / "report.json").read_text()) for r in runs)
    assert (runs[1] / "prune" / "pruned.pt").is_file()
    assert ddp["after"]["params"] == pytest.approx(single["after"]["params"], rel=0.05)
    assert abs(ddp["after"]["accuracy"] - single["after"]["accuracy"]) <= 0.1


def test_torchrun_prunes_to_a_latency_target_with_one_architecture_on_every_rank(tiny_run, tmp_path):
    """Rank 0 times every candidate and shares the figures: ranks that timed on their own would build different
    architectures, and DistributedDataParallel would refuse to start the fine-tuning."""
    out = tmp_path / "latency"
    run(
        [
            "prune",
            tiny_run[0] / "model.pt",
            "--target",
            "0.3",
            "--metric",
            "latency",
            "--criterion",
            "l1",
            "--allocation",
            "uniform",
            "--finetune-epochs",
            "1",
            "--batch-size",
            "32",
            "--round-to",
            "1",
            "--device",
            "cpu",
            "--out",
            out,
        ],
        tmp_path,
        2,
    )
    report = json.loads((out / "report.json").read_text())
    assert report["latency"]["batch_32"]["fraction"] < 1 and report["after"]["params"] < report["before"]["params"]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_node_torchrun_over_tcp_rendezvous_matches_the_single_process_measurement(runs, tmp_path):
    """What a cluster user runs: the same torchrun command on each node, rendezvous over TCP (c10d);
    here two "nodes" on one machine sharing a filesystem, gloo on CPU."""
    model = runs[0] / "train" / "model.pt"
    run(
        ["measure", model, "--head-epochs", "3", "--device", "cpu", "--out", tmp_path / "single", "--no-plots"],
        tmp_path,
        1,
    )
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PRUNE_SNR_CACHE": str(tmp_path / "cache-nodes")}
    command = [
        TORCHRUN,
        "--nnodes",
        "2",
        "--nproc_per_node",
        "1",
        "--rdzv_backend",
        "c10d",
        "--rdzv_endpoint",
        f"127.0.0.1:{port}",
        "--rdzv_id",
        "prune-snr-test",
        "-m",
        "prune_snr.cli",
        "measure",
        str(model),
        "--head-epochs",
        "3",
        "--device",
        "cpu",
        "--out",
        str(tmp_path / "nodes"),
        "--no-plots",
    ]
    nodes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(o[-2000:] for o in outputs)
    single, nodes_result = (json.loads((tmp_path / k / "measurement.json").read_text()) for k in ("single", "nodes"))
    assert [p["name"] for p in single["points"]] == [p["name"] for p in nodes_result["points"]]
    for p, q in zip(single["points"], nodes_result["points"]):
        for key in ("val_accuracy", "test_accuracy", "snr", "noise_per_filter", "cluster_size"):
            assert p[key] == pytest.approx(q[key], rel=1e-4, abs=1e-6), (p["name"], key)
