"""Specs of the Optuna search: real SQLite and JournalStorage files, resume, pick, dashboard."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import optuna
import pytest
import yaml

import prune_snr
from prune_snr.errors import ConfigError
from prune_snr.measure import measure
from prune_snr.search import counted_trials, pareto_rows, pick, run_search


@pytest.fixture(scope="module")
def study_inputs(tiny_run, tmp_path_factory):
    out, _ = tiny_run
    result = measure(
        prune_snr.load(out / "model.pt"),
        "synthetic",
        head_epochs=3,
        device="cpu",
        cache_dir=tmp_path_factory.mktemp("searchcache"),
    )
    return out / "model.pt", result


# The tiny fixture model has 8-channel layers and every point at 100 % head accuracy, so
# truncation would cut after conv1 and high targets are not reachable: pin those two.
FIXED = {"truncate": False, "target": 0.4}


def finished(study):
    return [t for t in study.trials if t.state.is_finished()]


def test_sqlite_study_resumes_without_redoing_finished_trials(study_inputs, tmp_path):
    checkpoint, result = study_inputs
    first = run_search(
        checkpoint,
        round_to=1,
        trials=2,
        out=tmp_path,
        measurement=result,
        max_finetune_epochs=0,
        device="cpu",
        fixed=FIXED,
    )
    before = [(t.number, t.state, t.values, t.params) for t in finished(first)]
    assert (tmp_path / "study.db").is_file() and len(before) == 2
    again = run_search(
        checkpoint,
        round_to=1,
        trials=3,
        out=tmp_path,
        measurement=result,
        max_finetune_epochs=0,
        device="cpu",
        fixed=FIXED,
    )
    after = [(t.number, t.state, t.values, t.params) for t in finished(again)]
    assert len(after) == 3 and after[:2] == before
    assert [state for _, state, _, _ in after] == [optuna.trial.TrialState.COMPLETE] * 3, "a failed trial is no result"
    assert pareto_rows(again), "the Pareto set is never empty once a trial completed"


def search_through_an_outage(study_inputs, out):
    """Two trials; without a worker's own check of its lost trials it waits on one until the timeout passes."""
    checkpoint, result = study_inputs
    return run_search(
        checkpoint, round_to=1, trials=2, out=out, measurement=result, max_finetune_epochs=0, device="cpu",
        fixed=FIXED, timeout=120,
    )  # fmt: skip


def test_a_trial_an_outage_left_running_with_no_heartbeat_is_failed_and_retried_by_its_worker(
    study_inputs, tmp_path, monkeypatch
):
    # The outage: the first trial's heartbeat and its final state are never written, so it stays
    # RUNNING with no heartbeat, which Optuna's stale-trial check never fails.
    import sqlalchemy.exc

    storage = optuna.storages.RDBStorage
    lost, told = [], []

    def down(*_):
        raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))

    def heartbeat(self, trial_id):
        if not lost:
            lost.append(trial_id)
        if trial_id in lost:
            down()
        return beat(self, trial_id)

    def set_state(self, trial_id, state, values=None):
        if trial_id in lost and not told:  # its final state, once: the worker's own retry later goes through
            told.append(trial_id)
            down()
        return write(self, trial_id, state, values)

    beat, write = storage.record_heartbeat, storage.set_trial_state_values
    monkeypatch.setattr(storage, "record_heartbeat", heartbeat)
    monkeypatch.setattr(storage, "set_trial_state_values", set_state)
    with pytest.warns(UserWarning) as caught:
        study = search_through_an_outage(study_inputs, tmp_path)
    said = [str(w.message) for w in caught]
    assert any("heartbeat of trial id" in m and "missed" in m for m in said), "one line, not the thread's traceback"
    assert any("unreachable" in m and "retrying" in m for m in said)
    assert len(counted_trials(study)) == 2
    first = study.trials[0]
    assert first.state.name == "FAIL" and "error" not in first.user_attrs, "failed, not counted"
    assert any(t.system_attrs.get("failed_trial") == 0 for t in study.trials), "and retried"


@pytest.mark.parametrize("storage", ["sqlite", "journal"])
def test_a_lost_trial_is_retried_unless_it_had_ended_on_its_own(storage, tmp_path):
    import warnings

    from prune_snr.search.study import make_storage
    from prune_snr.search.workers import counts, fail_orphans

    made = make_storage(None if storage == "sqlite" else str(tmp_path / "study.log"), tmp_path)
    study = optuna.create_study(storage=made, directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna's, on a heartbeat storage: trials asked for outside study.optimize
        plain, failed, surplus = study.ask(), study.ask(), study.ask()
    plain.set_user_attr("worker", "elsewhere:1:1")
    failed.set_user_attr("error", "out of memory")  # its objective failed; the outage lost the FAIL
    surplus.set_user_attr("surplus", True)  # the outage lost the PRUNED
    fail_orphans(study)
    trials = study.get_trials()
    assert [t.state.name for t in trials[:3]] == ["FAIL"] * 3
    assert [counts(t) for t in trials[:3]] == [False, True, False], "an error of its own counts, a surplus never"
    retries = trials[3:]
    assert [t.system_attrs.get("failed_trial") for t in retries] == [plain.number], "only the plain one is retried"
    assert "worker" not in retries[0].user_attrs, "the retry is nobody's until a worker takes it"


def test_a_trial_whose_heartbeat_stopped_on_another_machine_is_failed_and_retried(tmp_path):
    from prune_snr.search.workers import RDBStorage, fail_dead_trials, retry_callback

    storage = RDBStorage(
        f"sqlite:///{tmp_path / 'study.db'}",
        heartbeat_interval=1,
        grace_period=1,
        heartbeat_stale_trial_callback=retry_callback(),
    )
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    with pytest.warns(UserWarning, match="Heartbeat"):
        trial = study.ask()
    trial.set_user_attr("worker", "another-machine:4242:1")  # no process of this host to look for
    storage.record_heartbeat(trial._trial_id)
    time.sleep(2.5)
    fail_dead_trials(study)
    trials = study.get_trials()
    assert trials[0].state.name == "FAIL" and trials[1].system_attrs.get("failed_trial") == 0


def test_a_missed_heartbeat_is_a_warning_and_the_heartbeat_thread_beats_on(tmp_path, monkeypatch):
    import sqlalchemy.exc

    from prune_snr.search.study import make_storage

    storage = make_storage(None, tmp_path)
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    with pytest.warns(UserWarning, match="Heartbeat"):
        trial = study.ask()

    def down(*_):
        raise sqlalchemy.exc.OperationalError("UPDATE", {}, Exception("server closed the connection"))

    with monkeypatch.context() as m, pytest.warns(UserWarning, match="heartbeat of trial id .* missed"):
        m.setattr(optuna.storages.RDBStorage, "record_heartbeat", down)
        storage.record_heartbeat(trial._trial_id)  # Optuna's thread ends on an exception; there is none
    storage.record_heartbeat(trial._trial_id)
    assert storage.get_heartbeat_interval() and not storage._get_stale_trial_ids(study._study_id)


def test_a_trial_lost_before_its_objective_started_is_failed_and_retried_by_its_worker(
    study_inputs, tmp_path, monkeypatch
):
    # The outage strikes inside study.ask(): the trial is RUNNING, with no heartbeat and no attribute of ours yet.
    import sqlalchemy.exc

    sampler, hit = optuna.samplers.NSGAIISampler, []

    def before_trial(self, study, trial):
        if not hit:
            hit.append(trial.number)
            raise sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))
        return original(self, study, trial)

    original = sampler.before_trial
    monkeypatch.setattr(sampler, "before_trial", before_trial)
    with pytest.warns(UserWarning, match="unreachable"):
        study = search_through_an_outage(study_inputs, tmp_path)
    assert hit == [0] and len(counted_trials(study)) == 2
    assert study.trials[0].state.name == "FAIL" and not study.trials[0].user_attrs
    assert any(t.system_attrs.get("failed_trial") == 0 for t in study.trials), "and retried"


def test_journal_file_storage_holds_the_study(study_inputs, tmp_path):
    checkpoint, result = study_inputs
    study = run_search(
        checkpoint,
        round_to=1,
        trials=2,
        out=tmp_path,
        storage=str(tmp_path / "study.log"),
        measurement=result,
        max_finetune_epochs=0,
        device="cpu",
        fixed=FIXED,
    )
    assert (tmp_path / "study.log").stat().st_size > 0 and len(finished(study)) == 2
    for trial in study.trials:
        if trial.state.name == "COMPLETE":
            assert {"accuracy", "params", "macs", "artifacts"} <= set(trial.user_attrs)
            assert (tmp_path / "trials" / f"{trial.number:04d}" / "pruned.pt").is_file()


@pytest.mark.slow
def test_a_killed_search_resumes_to_the_requested_trial_count(study_inputs, tmp_path):
    checkpoint, result = study_inputs
    result.save(tmp_path / "measurement")
    cmd = [
        sys.executable,
        "-m",
        "prune_snr.cli",
        "search",
        str(checkpoint),
        "--trials",
        "3",
        "--max-finetune-epochs",
        "0",
        "--fix",
        "truncate=false,target=0.4",
        "--round-to",
        "1",
        "--measurement",
        str(tmp_path / "measurement"),
        "--device",
        "cpu",
        "--out",
        str(tmp_path),
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    deadline = time.time() + 240
    try:
        while time.time() < deadline:
            time.sleep(1)
            try:
                if finished(optuna.load_study(study_name="prune-snr", storage=storage)):
                    break
            except Exception:  # the study does not exist yet
                continue
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    done_before = {
        (t.number, tuple(t.values))
        for t in finished(optuna.load_study(study_name="prune-snr", storage=storage))
        if t.state.name == "COMPLETE"
    }
    assert len(done_before) >= 1
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = optuna.load_study(study_name="prune-snr", storage=storage)
    # The trial the kill interrupted never counts (RUNNING, or failed without an error of its own).
    assert len(counted_trials(study)) == 3
    assert done_before <= {(t.number, tuple(t.values)) for t in study.trials if t.state.name == "COMPLETE"}, (
        "no finished trial is redone"
    )


def test_pick_returns_the_most_accurate_pareto_trial_meeting_the_rule(study_inputs, tmp_path):
    checkpoint, result = study_inputs
    study = run_search(
        checkpoint,
        round_to=1,
        trials=3,
        out=tmp_path,
        measurement=result,
        max_finetune_epochs=0,
        device="cpu",
        fixed=FIXED,
    )
    chosen = pick(study, "params<=1.0")
    assert chosen in study.best_trials
    assert chosen.values[0] == max(t.values[0] for t in study.best_trials)
    with pytest.raises(ConfigError, match="no Pareto trial"):
        pick(study, "params<=0.0001")
    with pytest.raises(ConfigError, match="KEY OP VALUE"):
        pick(study, "size<5")


def test_a_proxy_study_re_evaluates_its_pareto_trials_with_full_fine_tuning(study_inputs, tmp_path):
    checkpoint, result = study_inputs
    fixed = {**FIXED, "finetune_epochs": 1}
    study = run_search(
        checkpoint, round_to=1, trials=2, out=tmp_path, measurement=result, device="cpu", fixed=fixed, proxy=0.25
    )
    proxy_report = json.loads((tmp_path / "trials" / "0000" / "report.json").read_text())
    assert proxy_report["finetune_fraction"] == 0.25
    for row in pareto_rows(study):
        full = json.loads((Path(row["artifacts"]) / "report.json").read_text())
        assert Path(row["artifacts"]).name == "full" and full["finetune_fraction"] == 1.0
        assert row["full_accuracy"] == full["after"]["accuracy"]
    chosen = pick(study, "params<=1.0")
    assert study.user_attrs[f"full:{chosen.number:04d}"]["val_accuracy"] == max(
        r["full_val_accuracy"] for r in pareto_rows(study)
    )


def test_a_bn_proxy_study_grades_trials_right_after_pruning_and_fine_tunes_only_its_pareto_trials(
    study_inputs, tmp_path
):
    checkpoint, result = study_inputs
    fixed = {**FIXED, "finetune_epochs": 1, "afcc": False}  # AFCC would change the grade after the recalibrated one
    study = run_search(
        checkpoint,
        round_to=1,
        trials=2,
        out=tmp_path,
        measurement=result,
        device="cpu",
        fixed=fixed,
        proxy="bn",
        bn_recalibrate=2,
    )
    proxy_report = json.loads((tmp_path / "trials" / "0000" / "report.json").read_text())
    assert proxy_report["finetune_epochs"] == 0 and proxy_report["bn_recalibration"]["batches"] == 2
    assert (
        study.trials[0].values[0]
        == proxy_report["after"]["val_accuracy"]
        == proxy_report["pruned_before_finetune"]["val_accuracy"]
    )
    rows = pareto_rows(study)
    assert rows
    for row in rows:
        full = json.loads((Path(row["artifacts"]) / "report.json").read_text())
        assert Path(row["artifacts"]).name == "full" and full["finetune_epochs"] == 1
        assert row["full_accuracy"] == full["after"]["accuracy"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_optuna_dashboard_serves_the_study_on_loopback(study_inputs, tmp_path):
    checkpoint, result = study_inputs
    run_search(
        checkpoint,
        round_to=1,
        trials=1,
        out=tmp_path,
        measurement=result,
        max_finetune_epochs=0,
        device="cpu",
        fixed=FIXED,
    )
    port = _free_port()
    exe = shutil.which("optuna-dashboard", path=os.path.dirname(sys.executable)) or shutil.which("optuna-dashboard")
    assert exe, "optuna-dashboard is a dev dependency (pyproject [dev])"
    proc = subprocess.Popen(
        [exe, f"sqlite:///{tmp_path / 'study.db'}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        status, deadline = None, time.time() + 60
        while time.time() < deadline and status is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=5) as response:
                    status, body = response.status, response.read().decode()
            except OSError:
                time.sleep(0.5)
        assert status == 200 and "prune-snr" in body
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_the_torch_pruning_space_draws_only_torch_prunings_options_and_the_budget_cut(study_inputs, tmp_path):
    from prune_snr.choices import BASELINE_CRITERIA

    checkpoint, _ = study_inputs
    from prune_snr.search.study import space_of

    rows = space_of("torch-pruning")
    assert rows["truncate"][1] == (False, True) and rows["cut"][1] == ("budget",), (
        "the baseline may cut, by the budget alone"
    )
    study = run_search(
        checkpoint,
        space="torch-pruning",
        round_to=1,
        trials=4,
        out=tmp_path,
        max_finetune_epochs=0,
        device="cpu",
        fixed={"target": 0.4, "truncate": False},
    )
    for t in finished(study):
        assert t.params["criterion"] in BASELINE_CRITERIA and t.params["allocation"] in ("uniform", "global")
        assert t.params["afcc"] is False and t.params["cut"] == "budget" and "threshold" not in t.params
    assert "measurement_seconds" not in study.user_attrs and study.user_attrs["space"] == "torch-pruning"
    assert not list(tmp_path.glob("trials/*/measurement*")), "no measurement was made"
    with pytest.raises(ConfigError, match="threshold"):
        run_search(
            checkpoint, space="torch-pruning", trials=1, out=tmp_path / "x", device="cpu", fixed={"threshold": 0.3}
        )


def test_search_takes_a_recipe_whose_keys_reach_every_trial(study_inputs, tmp_path):
    from typer.testing import CliRunner

    from prune_snr.checkpoint import load_checkpoint
    from prune_snr.cli import app

    checkpoint, _ = study_inputs
    recipe = tmp_path / "r.yaml"
    recipe.write_text("batch_size: 32\nhead_epochs: 2\nround_to: 1\ndevice: cpu\nmax_finetune_epochs: 0\ntrials: 1\n")
    result = CliRunner().invoke(
        app,
        [
            "search",
            str(checkpoint),
            "--recipe",
            str(recipe),
            "--space",
            "torch-pruning",
            "--fix",
            "target=0.4",
            "--out",
            str(tmp_path / "s"),
        ],
    )
    assert result.exit_code == 0, result.output
    trial = load_checkpoint(tmp_path / "s" / "trials" / "0000" / "pruned.pt")["config"]["prune"]
    assert trial["batch_size"] == 32 and trial["round_to"] == 1 and trial["measure"]["head_epochs"] == 2
    resolved = yaml.safe_load(
        (tmp_path / "s" / "config.yaml").read_text()
    )  # the settled options, as every run folder has
    assert resolved["trials"] == 1 and resolved["prune"]["round_to"] == 1 and resolved["prune"]["val_fraction"] == 0.1


def test_a_trial_threshold_recomputes_the_snr_the_measurement_stored_at_its_own():
    import numpy as np
    import torch

    from prune_snr.measure.fields import filter_stats
    from prune_snr.measure.result import Measurement
    from prune_snr.search.study import with_threshold

    M = np.random.default_rng(0).random((16, 10, 10)).astype(np.float32) ** 4
    m = Measurement(
        meta={"options": {"threshold": 0.3, "clusters": "blocks"}},
        points=[{"name": "conv", "n_filters": 16}],
        fields={"conv": M},
    )
    stored = m.snr("conv").copy()  # as a saved measurement holds it: statistics at θ = 0.3
    assert "conv" in m.filter_stats
    at_06 = with_threshold(m, 0.6)
    expected = filter_stats(torch.from_numpy(M), threshold=0.6, clusters="blocks").snr.numpy()
    np.testing.assert_allclose(at_06.snr("conv"), expected)
    assert not np.allclose(expected, stored)
    assert with_threshold(m, 0.3) is m and m.threshold == 0.3


def test_a_measurement_with_some_filters_matrices_keeps_its_own_threshold_in_every_trial(study_inputs, tmp_path):
    checkpoint, result = (
        study_inputs  # measured at the default --save-fields: the 16 highest-SNR filters' matrices per point
    )
    with pytest.warns(UserWarning, match="θ stays at the measurement's 0.3"):
        study = run_search(
            checkpoint,
            round_to=1,
            trials=2,
            out=tmp_path,
            measurement=result,
            device="cpu",
            fixed=FIXED,
            max_finetune_epochs=0,
        )
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {t.params["threshold"] for t in study.trials} == {0.3}


def test_a_study_takes_the_folder_a_measurement_was_saved_to(study_inputs, tmp_path):
    from prune_snr.config import SearchConfig, resolve
    from prune_snr.search.study import prepare

    checkpoint, result = study_inputs
    result.save(tmp_path / "m")
    cfg = resolve(SearchConfig, overrides={"device": "cpu"})
    _, _, _, measurement, _ = prepare(checkpoint, cfg, measurement=str(tmp_path / "m"))
    assert measurement.points == result.points
