"""Specs of several workers on one study: real PostgreSQL and JournalStorage, SIGKILL, a database restart."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from prune_snr.cli import app
from prune_snr.search import counted_trials
from tests.postgres import free_port
from tests.test_reliability import one_line_error

TRIALS = 4


@pytest.fixture(scope="module")
def inputs(tiny_run, tmp_path_factory):
    """The tiny checkpoint and a saved measurement of it, so workers start fast."""
    out, _ = tiny_run
    folder = tmp_path_factory.mktemp("workers") / "measurement"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "prune_snr.cli",
            "measure",
            str(out / "model.pt"),
            "--head-epochs",
            "3",
            "--device",
            "cpu",
            "--no-plots",
            "--out",
            str(folder),
        ],
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return out / "model.pt", folder


def search_cmd(inputs, storage, out, trials=TRIALS, finetune=0):
    checkpoint, measurement = inputs
    return [
        sys.executable,
        "-m",
        "prune_snr.cli",
        "search",
        str(checkpoint),
        "--trials",
        str(trials),
        "--storage",
        storage,
        "--max-finetune-epochs",
        str(finetune),
        "--fix",
        f"truncate=false,target=0.4,finetune_epochs={finetune}",
        "--round-to",
        "1",
        "--measurement",
        str(measurement),
        "--device",
        "cpu",
        "--out",
        str(out),
    ]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def start_workers(inputs, storage, outs, **kw):
    return [
        subprocess.Popen(
            [*search_cmd(inputs, storage, out, **kw), "--worker-index", str(i)],
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        for i, out in enumerate(outs)
    ]


def wait_all(procs, timeout=240):
    results = []
    for p in procs:
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            _, err = p.communicate()
        results.append((p.returncode, err))
    return results


def load(storage):
    if storage.endswith(".log"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        storage = JournalStorage(JournalFileBackend(storage))
    return optuna.load_study(study_name="prune-snr", storage=storage)


def check_study(storage, trials=TRIALS):
    """Exactly ``trials`` counted trials, each with its artifacts; nothing else completed."""
    study = load(storage)
    counted = counted_trials(study)
    assert len(counted) == trials, [(t.number, t.state.name, t.user_attrs) for t in study.trials]
    assert len([t for t in study.trials if t.state.name == "COMPLETE"]) == trials, "no counted trial failed here"
    for t in counted:
        folder = Path(t.user_attrs["artifacts"])
        assert (
            (folder / "pruned.pt").is_file() and (folder / "report.json").is_file() and folder.parent.name == "trials"
        )
    return study


def pick_from(out, storage):
    result = CliRunner().invoke(app, ["pick", str(out), "--pick", "params<=1.0", "--storage", storage])
    assert result.exit_code == 0, result.output
    return result.output.split("picked trial ")[1].split()[0], (out / "pruned.pt").read_bytes()


@pytest.mark.slow
def test_three_workers_on_postgresql_end_with_exactly_the_requested_trials(inputs, postgres_url, tmp_path):
    outs = [tmp_path / f"w{i}" for i in range(3)]  # as if on three machines sharing a filesystem
    results = wait_all(start_workers(inputs, postgres_url, outs))
    assert all(rc == 0 for rc, _ in results), [err[-1500:] for _, err in results]
    study = check_study(postgres_url)
    surplus = [t for t in study.trials if t.user_attrs.get("surplus")]
    assert all(t.state.name == "PRUNED" for t in surplus)
    picks = [pick_from(out, postgres_url) for out in outs]
    assert all(p == picks[0] for p in picks), "pick gives the same answer from any worker's --out"


@pytest.mark.slow
def test_workers_option_runs_three_processes_on_one_journal_file(inputs, tmp_path):
    storage = str(tmp_path / "study.log")
    done = subprocess.run(
        [*search_cmd(inputs, storage, tmp_path), "--workers", "3"], env=ENV, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    study = check_study(storage)
    assert len({t.user_attrs["worker"] for t in study.trials}) >= 2, "the trials were shared among the workers"
    assert pick_from(tmp_path, storage)[0] == pick_from(tmp_path, storage)[0]


def kill_a_worker_mid_trial(procs, storage, timeout=180):
    """SIGKILL the worker of a trial that has run for a second; return that trial's number."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            running = [t for t in load(storage).trials if t.state.name == "RUNNING" and "artifacts" in t.user_attrs]
        except Exception:  # the study does not exist yet
            continue
        for t in running:
            if time.time() - t.datetime_start.timestamp() > 1:
                pid = int(t.user_attrs["worker"].rsplit(":", 2)[1])
                victim = next(p for p in procs if p.pid == pid)
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
                return t.number, victim
    raise AssertionError("no trial ran long enough to be killed")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "journal"])
def test_a_worker_killed_mid_trial_leaves_the_others_to_finish_exactly_the_requested_trials(
    inputs, backend, request, tmp_path
):
    storage = request.getfixturevalue("postgres_url") if backend == "postgresql" else str(tmp_path / "study.log")
    procs = start_workers(
        inputs, storage, [tmp_path] * 3, finetune=1
    )  # 1 fine-tuning epoch: trials long enough to be killed in
    killed, victim = kill_a_worker_mid_trial(procs, storage)
    results = wait_all([p for p in procs if p is not victim])
    assert all(rc == 0 for rc, _ in results), [err[-1500:] for _, err in results]
    study = check_study(storage)
    trial = study.trials[killed]
    assert trial.state.name == "FAIL" and "error" not in trial.user_attrs, (
        "failed by the heartbeat/dead-worker check, not counted"
    )
    assert any(t.system_attrs.get("failed_trial") == killed for t in study.trials), "and retried"


@pytest.mark.slow
def test_a_database_restart_mid_study_is_retried_and_loses_nothing(inputs, postgres_cluster, postgres_url, tmp_path):
    procs = start_workers(inputs, postgres_url, [tmp_path] * 3, trials=6)
    deadline = time.time() + 180
    while time.time() < deadline:
        time.sleep(0.3)
        try:
            before = {(t.number, tuple(t.values)) for t in load(postgres_url).trials if t.state.name == "COMPLETE"}
        except Exception:
            continue
        if before:
            break
    postgres_cluster.restart()
    results = wait_all(procs)
    assert all(rc == 0 for rc, _ in results), [err[-1500:] for _, err in results]
    study = check_study(postgres_url, trials=6)
    assert before and before <= {(t.number, tuple(t.values)) for t in study.trials if t.state.name == "COMPLETE"}


def test_a_wrong_password_is_one_line_naming_the_masked_url(postgres_cluster, postgres_url, tmp_path):
    url = postgres_cluster.tcp_url(postgres_url.split("/")[-1].split("?")[0], password="wrong-secret")
    result = CliRunner().invoke(app, ["search", str(tmp_path / "model.pt"), "--storage", url, "--out", str(tmp_path)])
    one_line_error(result, "password authentication failed")
    assert (
        "wrong-secret" not in result.output
        and "postgres:***@127.0.0.1" in result.output
        and "check the host" in result.output
    )


def test_an_unreachable_host_is_one_line_naming_the_url(tmp_path):
    pytest.importorskip("psycopg")
    url = f"postgresql+psycopg://me:hunter2@127.0.0.1:{free_port()}/study"
    result = CliRunner().invoke(app, ["search", str(tmp_path / "model.pt"), "--storage", url, "--out", str(tmp_path)])
    one_line_error(result, "cannot connect")
    assert "hunter2" not in result.output and "me:***@127.0.0.1" in result.output
