"""Many workers on a real PostgreSQL and a real MLflow server: exact totals, crashes, interrupts, secrets.

Every worker is a real ``lrtune study`` process. The studies are tiny (digits, a few trials) so the
whole module takes about a minute and a half, most of it starting Python processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient
from servers import PASSWORD, MlflowServer

from lrtune.study.record import RUN_ATTR

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _bounds(folder: Path) -> Path:
    path = folder / "finder.json"
    path.write_text(json.dumps({"suggested_lr": 0.1, "lr_low": 0.02, "lr_high": 0.5}))
    return path


def _command(folder: Path, storage: str, tracking: str, name: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "lrtune", "study", "--task", "digits", "--bounds", str(_bounds(folder)),
        "--schedules", "cosine,step", "--storage", storage, "--tracking-uri", tracking,
        "--study-name", name, "--heartbeat-interval", "1", "--grace-period", "3", *extra,
    ]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "LRTUNE_DEBUG": ""}


def _start(command: list[str], folder: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        command, cwd=folder, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,  # a background child of a shell ignores SIGINT; its own session does not
    )  # fmt: skip


def _run(command: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=folder, env=_env(), capture_output=True, text=True, timeout=300)


def _wait_running(storage: str, name: str, process: subprocess.Popen[str], *, after: int = 1) -> int:
    """The number of a trial (number >= ``after``) that is RUNNING; waits for one."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        try:
            study = optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            time.sleep(0.3)
            continue
        running = [t.number for t in study.get_trials(states=(optuna.trial.TrialState.RUNNING,))]
        if [n for n in running if n >= after]:
            time.sleep(0.3)  # well inside the trial
            return max(running)
        time.sleep(0.1)
    raise TimeoutError("no trial started")


def _check_study(storage: str, name: str, total: int) -> optuna.Study:
    """Exactly ``total`` COMPLETE + PRUNED trials, none RUNNING or WAITING."""
    study = optuna.load_study(study_name=name, storage=storage)
    states = [t.state for t in study.trials]
    done = sum(s in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for s in states)
    assert done == total, states
    assert optuna.trial.TrialState.RUNNING not in states and optuna.trial.TrialState.WAITING not in states
    numbers = [t.number for t in study.trials]
    assert len(set(numbers)) == len(numbers)
    return study


def _runs(tracking: str, name: str) -> tuple[MlflowClient, Any, list[Any], list[Any]]:
    """The client, the experiment, the parent runs and the trial runs of study ``name``."""
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("lrtune.role") == "parent"]
    trials = [r for r in runs if r.data.tags.get("lrtune.role") == "trial"]
    return client, experiment, parents, trials


def _check_runs(study: optuna.Study, tracking: str) -> tuple[MlflowClient, Any, list[Any], list[Any]]:
    """One parent (FINISHED), one child per finished trial in the matching status, with the trial's id."""
    client, experiment, parents, trials = _runs(tracking, study.study_name)
    assert experiment.tags.get("mlflow.experimentKind") == "custom_model_development"
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    expected = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
    by_id = {r.info.run_id: r for r in trials}
    for trial in study.trials:
        if trial.state.name in ("COMPLETE", "PRUNED"):
            run = by_id[trial.user_attrs[RUN_ATTR]]
            assert run.info.status == expected[trial.state.name]
            assert run.data.tags["lrtune.trial_number"] == str(trial.number)
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    numbers = [
        r.data.tags["lrtune.trial_number"]
        for r in trials
        if r.data.tags.get("lrtune.state") in ("COMPLETE", "PRUNED")
    ]
    assert sorted(numbers) == sorted(str(t.number) for t in finished)  # one child per trial, no extra
    assert all(r.info.status != "RUNNING" for r in trials)
    return client, experiment, parents, trials


def test_workers_hold_the_exact_total_and_keep_the_password_out(
    postgres_url: str, mlflow_on_postgres: MlflowServer, tmp_path: Path
) -> None:
    assert PASSWORD in postgres_url
    command = _command(
        tmp_path, postgres_url, mlflow_on_postgres.uri, "three", "--n-trials", "7", "--epochs", "2"
    )
    workers = [_start(command, tmp_path) for _ in range(3)]
    outputs = [w.communicate(timeout=300) for w in workers]
    for worker, (out, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "View run" not in out + err and "View experiment" not in out + err
        assert PASSWORD not in out + err
    added = sum(int(out.split("this run added ")[1].split(";")[0]) for out, _ in outputs)
    assert added == 7  # each worker counts what it finished
    study = _check_study(postgres_url, "three", 7)
    assert len(study.trials) == 7  # no trial created beyond the total
    client, experiment, parents, trials = _check_runs(study, mlflow_on_postgres.uri)
    parent = parents[0]
    assert parent.info.artifact_uri.startswith("mlflow-artifacts:")  # through the server
    # The password is nowhere in MLflow: params, tags, artifacts, the server's log, the study's attrs.
    for run in [*parents, *trials]:
        assert PASSWORD not in json.dumps([run.data.params, run.data.tags])
    assert PASSWORD not in json.dumps(experiment.tags)
    folder = Path(client.download_artifacts(parent.info.run_id, "", str(tmp_path / "artifacts")))
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert any(p.name == "best.json" for p in files)
    assert all(PASSWORD.encode() not in p.read_bytes() for p in files)
    assert PASSWORD not in json.dumps(study.user_attrs, default=str)
    assert PASSWORD not in mlflow_on_postgres.log.read_text(errors="replace")


def _in_a_trial(
    folder: Path, storage: str, tracking: str, name: str
) -> tuple[list[str], subprocess.Popen[str], int]:
    """A worker on a new study of 2 trials of 40 epochs, caught in its first trial: command, process, trial."""
    command = _command(
        folder, storage, tracking, name, "--n-trials", "2", "--epochs", "40", "--pruner", "none"
    )
    worker = _start(command, folder)
    return command, worker, _wait_running(storage, name, worker, after=0)


def test_a_killed_worker_loses_nothing(
    postgres_url: str, mlflow_on_postgres: MlflowServer, tmp_path: Path
) -> None:
    command, worker, killed = _in_a_trial(tmp_path, postgres_url, mlflow_on_postgres.uri, "killed")
    os.killpg(worker.pid, signal.SIGKILL)
    worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL
    # The same command again: it waits out the grace period, fails the dead trial and runs it again.
    again = _run(command, tmp_path)
    assert again.returncode == 0, again.stderr
    study = _check_study(postgres_url, "killed", 2)
    dead = study.trials[killed]
    assert dead.state == optuna.trial.TrialState.FAIL
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].state.is_finished()
    assert retries[0].params == dead.params
    _, _, _, trials = _check_runs(study, mlflow_on_postgres.uri)
    dead_runs = [r for r in trials if r.data.tags["lrtune.trial_number"] == str(killed)]
    assert [r.info.status for r in dead_runs] == ["FAILED"]


def test_ctrl_c_is_quiet_and_the_study_completes_later(
    postgres_url: str, mlflow_on_postgres: MlflowServer, tmp_path: Path
) -> None:
    command, worker, number = _in_a_trial(tmp_path, postgres_url, mlflow_on_postgres.uri, "ctrlc")
    worker.send_signal(signal.SIGINT)
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 130, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: interrupted by SIGINT; trial {number} is marked FAIL and runs again when the same command is re-run"
    ]
    assert err.rstrip().splitlines()[-1] == errors[0]
    study = optuna.load_study(study_name="ctrlc", storage=postgres_url)
    assert study.trials[number].state == optuna.trial.TrialState.FAIL
    _, _, parents, trials = _runs(mlflow_on_postgres.uri, "ctrlc")
    assert [r.info.status for r in trials if r.data.tags["lrtune.trial_number"] == str(number)] == ["KILLED"]
    assert [p.info.status for p in parents] == ["KILLED"]
    again = _run(command, tmp_path)
    assert again.returncode == 0, again.stderr
    study = _check_study(postgres_url, "ctrlc", 2)
    _check_runs(study, mlflow_on_postgres.uri)
