"""Spec: a pruning run settles its options once, runs its stages in order through one runner, and reports
what it writes."""

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import prune_snr
from prune_snr.config import PruneConfig, resolve
from prune_snr.errors import ConfigError
from prune_snr.models import example_input
from prune_snr.prune import PruneReport, prune
from prune_snr.prune.plan import plan, settle
from prune_snr.prune.report import grade_original
from prune_snr.prune.run import run
from prune_snr.prune.target import default_round_to


@pytest.mark.filterwarnings("ignore:--target")  # the default alignment may stop short of 0.3 on this tiny model
def test_the_report_reads_as_the_report_json_it_writes_and_config_yaml_holds_the_settled_options(
    vgg_measured, tmp_path
):
    model, result = vgg_measured
    _, report = prune(
        copy.deepcopy(model),
        "synthetic",
        target=0.3,
        criterion="l1",
        measurement=result,
        finetune_epochs=0,
        device="cpu",
        out=tmp_path,
    )
    written = json.loads((tmp_path / "report.json").read_text())
    assert isinstance(report, PruneReport) and report == written and report.to_json() == written
    assert list(report) == list(written) and report["after"] == written["after"] and report.get("truncation") is None
    resolved = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (resolved["dataset"], resolved["val_fraction"], resolved["val_source"]) == ("synthetic", 0.1, "train")
    assert resolved["round_to"] == written["round_to"] == default_round_to()
    assert resolved["measure"]["val_fraction"] == 0.1 and resolved["measure"]["device"] == "cpu"


def test_settle_fills_every_open_option_from_the_measurement_and_settling_again_changes_nothing(vgg_measured):
    model, result = vgg_measured
    given = resolve(PruneConfig, overrides={"device": "cpu", "seed": 3})
    settled = settle(given, model, dataset="synthetic", measurement=result)
    assert settled.dataset == settled.measure.dataset == "synthetic"
    assert settled.val_fraction == settled.measure.val_fraction == result.meta["options"]["val_fraction"]
    assert settled.val_source == settled.measure.val_source == "train" and settled.measure.seed == 3
    assert (
        settled.round_to == default_round_to()
        and settled.measure.expanded is False
        and settled.measure.label_sweep is None
    )
    assert settle(settled, model, measurement=result) == settled
    assert (
        settle(
            resolve(PruneConfig, overrides={"round_to": 1, "val_fraction": 0.2}), model, dataset="synthetic"
        ).round_to
        == 1
    )


def test_the_runner_runs_the_stages_in_order_and_a_resumed_run_skips_those_before_fine_tuning(vgg_measured, tmp_path):
    model, result = vgg_measured
    cfg = resolve(PruneConfig, overrides={"finetune_epochs": 1, "device": "cpu", "criterion": "l1"})
    calls = []

    def stage(name, part=None):
        def run_stage(ctx, m):
            calls.append(name)
            return m, part or {}

        return run_stage

    before = [grade_original, stage("cut"), stage("prune", {"search": {"note": "nothing pruned"}})]
    reports = []
    for resume in (False, True):
        ctx = plan(copy.deepcopy(model), cfg, dataset="synthetic", measurement=result)
        reports.append(
            run(ctx, before_finetune=before, after_finetune=[stage("after")], out=tmp_path, resume=resume)[1]
        )
    assert calls == [
        "cut",
        "prune",
        "after",
        "after",
    ]  # the resumed run found the stages before fine-tuning in finetune.pt
    first, resumed = reports
    assert resumed["before"] == first["before"] and resumed["search"] == {"note": "nothing pruned"}
    assert resumed["after"] == first["after"]  # its fine-tuning had finished: nothing left to train
    first.add({"new_stage": {"figure": 1}})  # a new stage's part needs no declaration: it is what the stage returns
    assert first["new_stage"] == {"figure": 1} and list(first.to_json())[-1] == "new_stage"


def test_importing_the_package_reads_no_cpuinfo_until_round_to_is_settled():
    code = (
        "import pathlib; reads = []; read = pathlib.Path.read_text\n"
        "def spy(self, *a, **k):\n    reads.append(str(self)); return read(self, *a, **k)\n"
        "pathlib.Path.read_text = spy\n"
        "import prune_snr, prune_snr.prune, prune_snr.cli\n"
        "assert '/proc/cpuinfo' not in reads, reads\n"
        "from prune_snr.prune.target import default_round_to\n"
        "default_round_to(); print('/proc/cpuinfo' in reads)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == str(Path("/proc/cpuinfo").exists())  # read on first use


@pytest.mark.parametrize("lr, expected", [(0.01, "after"), (3.0, "before")])  # lr 3.0 wrecks the model
def test_finetune_keep_best_keeps_fine_tuning_only_when_it_raises_validation_accuracy(
    vgg_measured, tmp_path, lr, expected
):
    model, result = vgg_measured
    # BatchNorm as pruned grades the tiny model near chance, so one epoch at lr 0.01 beats it: both branches run
    common = dict(
        target=0.3,
        criterion="l1",
        allocation="uniform",
        round_to=1,
        measurement=result,
        device="cpu",
        seed=0,
        bn_recalibrate=0,
    )
    _, plain = prune(copy.deepcopy(model), "synthetic", finetune_epochs=1, finetune_lr=lr, **common)
    pruned, report = prune(
        copy.deepcopy(model),
        "synthetic",
        finetune_epochs=1,
        finetune_lr=lr,
        finetune_keep="best",
        out=tmp_path / "best",
        **common,
    )
    before, finetuned = report["pruned_before_finetune"], plain["after"]
    assert report["finetune"]["val_accuracy_after_finetune"] == finetuned["val_accuracy"]
    kept = "after" if finetuned["val_accuracy"] >= before["val_accuracy"] else "before"
    assert report["finetune"]["kept"] == kept == expected
    assert report["after"]["val_accuracy"] == max(before["val_accuracy"], finetuned["val_accuracy"])
    if kept == "before":  # the weights are the pruned ones, untouched by fine-tuning
        unfinetuned, _ = prune(copy.deepcopy(model), "synthetic", finetune_epochs=0, **common)
        assert all(torch.equal(a, b) for a, b in zip(pruned.state_dict().values(), unfinetuned.state_dict().values()))
    reloaded = prune_snr.load(tmp_path / "best" / "pruned.pt")
    x = example_input(reloaded, 4)
    assert torch.allclose(reloaded(x), pruned(x), atol=1e-5)
    _, resumed = prune(
        copy.deepcopy(model),
        "synthetic",
        finetune_epochs=1,
        finetune_lr=lr,
        finetune_keep="best",
        out=tmp_path / "best",
        resume=True,
        **common,
    )
    assert resumed["finetune"] == report["finetune"] and resumed["after"] == report["after"]
    if (
        expected == "after"
    ):  # a run fine-tuned without it cannot be resumed with it: its pre-fine-tuning weights are gone
        prune(copy.deepcopy(model), "synthetic", finetune_epochs=1, finetune_lr=lr, out=tmp_path / "last", **common)
        with pytest.raises(ConfigError, match="without finetune_keep='best'"):
            prune(
                copy.deepcopy(model),
                "synthetic",
                finetune_epochs=1,
                finetune_lr=lr,
                finetune_keep="best",
                out=tmp_path / "last",
                resume=True,
                **common,
            )


def test_a_run_stopped_after_its_measurement_resumes_from_the_measurement_it_kept(tiny_run, tmp_path, monkeypatch):
    from prune_snr.prune import measuring, pipeline

    model = prune_snr.load(tiny_run[0] / "model.pt")
    options = {
        "criterion": "snr",
        "target": 0.3,
        "round_to": 1,
        "finetune_epochs": 1,
        "head_epochs": 2,
        "device": "cpu",
    }
    made = []
    real_measure = measuring.measure
    monkeypatch.setattr(measuring, "measure", lambda *a, **k: made.append(1) or real_measure(*a, **k))
    _, whole = prune(model, "synthetic", out=tmp_path / "whole", **options)

    def stopped(ctx, m):
        raise KeyboardInterrupt  # the run is killed once its measurement is made

    stages = pipeline.BEFORE_FINETUNE
    monkeypatch.setattr(pipeline, "BEFORE_FINETUNE", stages[: stages.index(measuring.measure_stage) + 1] + (stopped,))
    with pytest.raises(KeyboardInterrupt):
        prune(model, "synthetic", out=tmp_path / "stopped", **options)
    assert (tmp_path / "stopped" / "measurement" / "measurement.json").is_file() and len(made) == 2
    shutil.copytree(tmp_path / "stopped", tmp_path / "other")
    with pytest.raises(KeyboardInterrupt):  # other measurement options: measured again, not read back
        prune(model, "synthetic", out=tmp_path / "other", resume=True, **{**options, "threshold": 0.4})
    assert len(made) == 3
    monkeypatch.setattr(pipeline, "BEFORE_FINETUNE", stages)
    pruned, resumed = prune(model, "synthetic", out=tmp_path / "stopped", resume=True, **options)
    assert len(made) == 3, "the resumed run read the kept measurement back instead of measuring again"
    assert resumed["search"]["removed"] == whole["search"]["removed"] and resumed["after"] == whole["after"]


def test_prune_takes_the_folder_a_measurement_was_saved_to_as_well_as_the_measurement(vgg_measured, tmp_path):
    model, measurement = vgg_measured
    measurement.save(tmp_path / "m")
    common = dict(target=0.5, metric="params", criterion="snr", round_to=1, finetune_epochs=0, device="cpu")
    given, _ = prune(copy.deepcopy(model), "synthetic", measurement=measurement, **common)
    read, _ = prune(copy.deepcopy(model), "synthetic", measurement=str(tmp_path / "m"), **common)
    assert all(torch.equal(v, read.state_dict()[k]) for k, v in given.state_dict().items())
