"""Studies end to end on digits: storage, MLflow layout, resume, pruning, divergence, tune(), auto bounds."""

from __future__ import annotations

import contextlib
import json
import logging
import math
import shutil
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from lrtune.config import StudyConfig, build_config
from lrtune.errors import UsageError
from lrtune.schedules import load_schedule, lr_at, parse_spec
from lrtune.space import LRBounds, baseline_params, plan_from_params
from lrtune.study import StudyOutcome, best_file, open_storage, run_study, tune, write_json_atomic
from lrtune.study import storage as storage_module
from lrtune.study.engine import min_resource, sampler_seed
from lrtune.study.record import FINDER_ATTR_PREFIX, PLAN_ATTR, REASON_ATTR, RUN_ATTR, read_record
from lrtune.study.runner import _EpochHook
from lrtune.tracking import PARENT_ATTR, StudyTracker, TrackingSettings
from lrtune.trainer import EpochResult

optuna.logging.set_verbosity(optuna.logging.WARNING)

BEST_KEYS = {
    "schedule",
    "optimizer",
    "epochs",
    "batch_size",
    "metric",
    "value",
    "study",
    "trial",
    "confirmed",
}
EPOCHS = 2
STEPS_PER_EPOCH = 23  # digits: 1,437 training images in batches of 64


def finder_json(folder: Path, *, low: float, high: float, suggested: float) -> Path:
    """A finder.json as ``lrtune find`` writes it (with a short synthetic curve)."""
    lrs = [10 ** (-4 + 0.25 * i) for i in range(20)]
    path = folder / "finder.json"
    path.write_text(
        json.dumps(
            {
                "suggested_lr": suggested,
                "lr_low": low,
                "lr_high": high,
                "lrs": lrs,
                "losses": [2.3 - 0.05 * i for i in range(20)],
                "diverged": True,
                "num_iter": 20,
                "repeats": 1,
                "spread_decades": None,
                "flags": [],
                "method": "synthetic",
            }
        )
    )
    return path


@pytest.fixture(scope="module")
def empty_mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow database with its schema made once (creating one takes seconds); tests copy it."""
    folder = tmp_path_factory.mktemp("mlflow-template")
    MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db").search_experiments(max_results=1)
    return folder / "mlflow.db"


def fresh_folder(tmp: Path, template: Path) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    shutil.copy(template, tmp / "mlflow.db")
    return tmp


def config_in(folder: Path, **values: Any) -> StudyConfig:
    base: dict[str, Any] = {
        "task": "digits",
        "epochs": EPOCHS,
        "schedules": "constant,cosine,one_cycle",
        "sampler": "random",
        "pruner": "none",
        "storage": f"sqlite:///{folder}/lrtune.db",
        "tracking_uri": f"sqlite:///{folder}/mlflow.db",
        "study_name": "digits-test",
        "device": "cpu",
        "confirm": 0,  # confirmation has its own tests (tests/test_confirm.py)
    }
    base.update(values)
    return build_config(None, base)


def children(client: MlflowClient, experiment: str, parent: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    return list(
        client.search_runs([found.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")
    )


def load(config: StudyConfig) -> optuna.Study:
    return optuna.load_study(study_name=str(config.study_name), storage=config.storage)


# --------------------------------------------------------------------------------- a real study
@dataclass
class Resumed:
    folder: Path
    config: StudyConfig
    first: StudyOutcome
    first_trials: list[optuna.trial.FrozenTrial]
    first_runs: int
    same: StudyOutcome
    same_runs: int
    more: StudyOutcome
    lines: list[str]


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory, empty_mlflow_db: Path) -> Iterator[Resumed]:
    """A 3-trial study, re-run with the same total (adds none), then with a total of 5."""
    folder = fresh_folder(tmp_path_factory.mktemp("study"), empty_mlflow_db)
    bounds = finder_json(folder, low=0.02, high=0.5, suggested=0.1)
    config = config_in(folder, n_trials=3, bounds=str(bounds))
    client = MlflowClient(tracking_uri=config.tracking_uri)
    lines: list[str] = []

    def printer(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        lines.append(f"{trial.number} {trial.state.name}")

    first = run_study(config, callbacks=[printer])
    first_trials = load(config).get_trials()
    assert first.parent_run_id is not None
    first_runs = len(children(client, "digits-test", first.parent_run_id))
    same = run_study(config)
    same_runs = len(children(client, "digits-test", first.parent_run_id))
    more = run_study(config_in(folder, n_trials=5, bounds=str(bounds)))
    yield Resumed(folder, config, first, first_trials, first_runs, same, same_runs, more, lines)


def test_storage_holds_every_trial_with_its_plan(resumed: Resumed) -> None:
    first = resumed.first
    assert (first.added, first.complete, first.pruned, first.failed) == (3, 3, 0, 0)
    assert [t.state for t in resumed.first_trials] == [optuna.trial.TrialState.COMPLETE] * 3
    assert resumed.lines == ["0 COMPLETE", "1 COMPLETE", "2 COMPLETE"]
    study = load(resumed.config)
    record = read_record(study.user_attrs)
    assert record is not None
    assert (record.epochs, record.steps_per_epoch, record.batch_size) == (EPOCHS, STEPS_PER_EPOCH, 64)
    assert (record.metric, record.direction) == ("val_accuracy", "maximize")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE
    assert record.bounds["sgd"] == LRBounds(0.02, 0.5, 0.1)
    assert study.user_attrs[FINDER_ATTR_PREFIX + "sgd"]["method"] == "synthetic"
    assert study.user_attrs["lrtune_config"]["n_trials"] == 3

    trials = study.get_trials()
    assert trials[0].params == baseline_params(record.space)
    assert trials[0].params["base_lr"] == 0.1 and trials[0].params["schedule"] == "cosine"
    assert trials[0].user_attrs["role"] == "baseline"
    for trial in trials:
        plan = trial.user_attrs[PLAN_ATTR]
        assert plan["schedule"]["type"] == trial.params["schedule"]
        assert plan["optimizer"] == {"name": "sgd", "momentum": 0.9}
        assert 0.02 <= plan["schedule"]["base_lr"] <= 0.5
        replayed = plan_from_params(
            trial.params, record.space, total_steps=record.total_steps, steps_per_epoch=STEPS_PER_EPOCH
        )
        assert replayed.to_dict() == plan
        parse_spec(plan["schedule"]).check_budget(record.total_steps)
        assert sorted(trial.intermediate_values) == [1, 2]
        assert trial.value == trial.intermediate_values[2]
        assert 0.5 < trial.value <= 1.0


def test_trials_are_seeded_by_their_number(resumed: Resumed) -> None:
    """Trial 0 (the baseline) trained again with seed 0 gives exactly its stored value."""
    from lrtune.optimizers import OptimizerSpec
    from lrtune.tasks import load_task
    from lrtune.trainer import TrainSettings, fit

    trial = load(resumed.config).get_trials()[0]
    plan = trial.user_attrs[PLAN_ATTR]
    result = fit(
        load_task("digits"),
        optimizer=OptimizerSpec.from_dict(plan["optimizer"]),
        schedule=plan["schedule"],
        settings=TrainSettings(epochs=EPOCHS, seed=0, device="cpu"),
    )
    assert result.final().val_metric == trial.value


def test_mlflow_has_one_parent_and_one_child_per_trial(resumed: Resumed) -> None:
    client = MlflowClient(tracking_uri=resumed.config.tracking_uri)
    study = load(resumed.config)
    parent_id = study.user_attrs[PARENT_ATTR]
    assert parent_id == resumed.first.parent_run_id == resumed.more.parent_run_id
    parent = client.get_run(parent_id)
    assert parent.data.tags["lrtune.study"] == "digits-test"
    assert parent.info.status == "FINISHED"
    assert parent.data.params["n_trials"] == "3"  # params of the run that created the parent
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"finder.json", "finder.png", "best.json", "plots"} <= artifacts
    plots = {Path(a.path).name for a in client.list_artifacts(parent_id, "plots")}
    assert {"study_summary.png", "optimization_history.html"} <= plots
    assert parent.data.metrics["best_value"] == pytest.approx(study.best_value)

    runs = children(client, "digits-test", parent_id)
    by_number = {int(r.data.tags["lrtune.trial_number"]): r for r in runs}
    assert len(runs) == len(by_number) == 5
    trials = {t.number: t for t in study.get_trials()}
    assert set(by_number) == set(trials)
    for number, run in by_number.items():
        trial = trials[number]
        assert run.info.status == "FINISHED" and run.data.tags["lrtune.state"] == "COMPLETE"
        assert run.data.tags["mlflow.parentRunId"] == parent_id
        assert trial.user_attrs[RUN_ATTR] == run.info.run_id
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        run_id = run.info.run_id
        for key in ("train_loss", "val_loss", "val_accuracy"):
            history = client.get_metric_history(run_id, key)
            assert sorted(m.step for m in history) == [1, 2], key
        accuracy = {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy")}
        assert accuracy[2] == pytest.approx(trial.value)
        assert run.data.metrics["objective"] == pytest.approx(trial.value)  # queued, stored by the end
        lrs = sorted(client.get_metric_history(run_id, "lr"), key=lambda m: m.step)
        assert [m.step for m in lrs] == list(range(EPOCHS * STEPS_PER_EPOCH))
        schedule = trial.user_attrs[PLAN_ATTR]["schedule"]
        expected = [lr_at(schedule, k, EPOCHS * STEPS_PER_EPOCH) for k in range(EPOCHS * STEPS_PER_EPOCH)]
        assert [m.value for m in lrs] == pytest.approx(expected, rel=1e-6)


def test_both_stores_are_switched_to_wal(resumed: Resumed) -> None:
    for name in ("lrtune.db", "mlflow.db"):  # the MLflow template was made with SQLite's defaults
        with contextlib.closing(sqlite3.connect(resumed.folder / name)) as database:
            assert database.execute("PRAGMA journal_mode").fetchone()[0] == "wal", name


def test_rerunning_adds_only_the_missing_trials(resumed: Resumed) -> None:
    same, more = resumed.same, resumed.more
    assert same.added == 0 and same.complete == 3
    assert resumed.same_runs == resumed.first_runs == 3
    assert more.added == 2 and more.complete == 5
    trials = load(resumed.config).get_trials()
    assert [t.number for t in trials] == [0, 1, 2, 3, 4]
    # The first three trials are untouched by the resumes.
    assert [t.params for t in trials[:3]] == [t.params for t in resumed.first_trials]
    # A resumed sampler does not propose the first trials again.
    assert trials[3].params not in [t.params for t in trials[:3]]


def test_best_file_is_the_contract_and_loads_as_a_schedule(resumed: Resumed, tmp_path: Path) -> None:
    study = load(resumed.config)
    best = best_file(study)
    assert set(best) == BEST_KEYS and best["confirmed"] is False  # confirmation is off here
    assert best["value"] == study.best_value  # ties may pick another trial, never another value
    assert best["schedule"] == study.trials[best["trial"]].user_attrs[PLAN_ATTR]["schedule"]
    assert (best["epochs"], best["batch_size"], best["metric"], best["study"]) == (
        EPOCHS,
        64,
        "val_accuracy",
        "digits-test",
    )
    assert resumed.more.best == best
    path = tmp_path / "best.json"
    write_json_atomic(path, best)
    assert load_schedule(path) == best["schedule"]
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_best_file_falls_back_to_the_params(resumed: Resumed) -> None:
    study = load(resumed.config)
    trial = study.best_trial
    record = read_record(study.user_attrs)
    assert record is not None
    bare = optuna.create_study(direction="maximize")
    bare.set_user_attr("lrtune", record.to_attr())
    bare.add_trial(
        optuna.trial.create_trial(params=trial.params, distributions=trial.distributions, value=trial.value)
    )
    assert best_file(bare)["schedule"] == trial.user_attrs[PLAN_ATTR]["schedule"]


# ------------------------------------------------------------------------------ pruning, divergence
def test_divergent_trials_are_pruned_and_the_study_goes_on(tmp_path: Path, empty_mlflow_db: Path) -> None:
    folder = fresh_folder(tmp_path, empty_mlflow_db)
    bounds = finder_json(folder, low=50.0, high=500.0, suggested=50.0)
    config = config_in(folder, n_trials=3, bounds=str(bounds), study_name="diverge")
    outcome = run_study(config)
    assert (outcome.added, outcome.complete, outcome.pruned, outcome.failed) == (3, 0, 3, 0)
    assert outcome.best is None
    study = load(config)
    for trial in study.get_trials():
        assert trial.state == optuna.trial.TrialState.PRUNED
        assert "diverged in epoch 1" in trial.user_attrs[REASON_ATTR]
        assert trial.intermediate_values == {}
    with pytest.raises(UsageError, match="no complete trial"):
        best_file(study)

    client = MlflowClient(tracking_uri=config.tracking_uri)
    runs = children(client, "diverge", study.user_attrs[PARENT_ATTR])
    assert len(runs) == 3
    for run in runs:
        assert run.info.status == "KILLED"
        assert run.data.tags["lrtune.state"] == "PRUNED"
        assert "diverged" in run.data.tags["lrtune.reason"]
        assert len(client.get_metric_history(run.info.run_id, "lr")) == STEPS_PER_EPOCH  # one epoch logged
    assert client.get_run(study.user_attrs[PARENT_ATTR]).info.status == "FINISHED"


class FakeTrial:
    def __init__(self, *, prune: bool) -> None:
        self.prune = prune
        self.reports: list[tuple[float, int]] = []
        self.user_attrs: dict[str, Any] = {}

    def report(self, value: float, step: int) -> None:
        self.reports.append((value, step))

    def should_prune(self) -> bool:
        return self.prune

    def set_user_attr(self, key: str, value: Any) -> None:
        self.user_attrs[key] = value


class FakeRun:
    def __init__(self) -> None:
        self.epochs: list[dict[str, Any]] = []

    def log_epoch(self, **values: Any) -> None:
        self.epochs.append(values)


def epoch_result(epoch: int, loss: float, *, diverged: bool) -> EpochResult:
    return EpochResult(epoch, loss, loss, 0.5, (0.1, 0.1, 0.1), 3 * epoch, diverged)


def hook_for(trial: FakeTrial, run: FakeRun, *, epochs: int = 3) -> _EpochHook:
    from lrtune.tasks import load_task

    return _EpochHook(
        trial,  # type: ignore[arg-type]
        run,  # type: ignore[arg-type]
        load_task("digits"),
        metric="val_accuracy",
        pruner="median",
        epochs=epochs,
    )


def test_a_nan_loss_prunes_the_trial_with_its_reason() -> None:
    trial, run = FakeTrial(prune=False), FakeRun()
    hook = hook_for(trial, run)
    hook(epoch_result(1, 1.2, diverged=False))
    with pytest.raises(optuna.TrialPruned, match="diverged in epoch 2"):
        hook(epoch_result(2, math.nan, diverged=True))
    assert trial.reports == [(0.5, 1)]  # the NaN epoch is logged, never reported
    assert "diverged in epoch 2" in trial.user_attrs[REASON_ATTR]
    assert [e["epoch"] for e in run.epochs] == [1, 2]
    assert [e["first_step"] for e in run.epochs] == [0, 3]
    assert run.epochs[0]["metrics"] == {"accuracy": 0.5}


def test_the_pruner_is_asked_before_the_last_epoch_only() -> None:
    trial, run = FakeTrial(prune=True), FakeRun()
    hook = hook_for(trial, run, epochs=2)
    with pytest.raises(optuna.TrialPruned, match="median pruner after epoch 1"):
        hook(epoch_result(1, 1.0, diverged=False))
    assert trial.user_attrs[REASON_ATTR].startswith("pruned by the median pruner")
    hook(epoch_result(2, 0.9, diverged=False))  # the last epoch completes whatever the pruner says
    assert trial.reports == [(0.5, 1), (0.5, 2)]


def test_min_resource_lies_past_the_longest_warmup() -> None:
    from lrtune.study.record import StudyRecord

    def record(schedules: tuple[str, ...], warmup: float) -> StudyRecord:
        return StudyRecord(
            task="t",
            epochs=10,
            steps_per_epoch=100,
            batch_size=None,
            metric="val_loss",
            direction="minimize",
            schedules=schedules,
            optimizers=("sgd",),
            bounds={"sgd": LRBounds(0.01, 1.0, 0.1)},
            warmup_max_fraction=warmup,
        )

    assert min_resource(record(("cosine",), 0.0)) == 1
    assert min_resource(record(("cosine",), 0.2)) == 3  # 200 warmup steps = 2 epochs, + 1
    assert min_resource(record(("cosine", "one_cycle"), 0.2)) == 5  # one_cycle rises up to 40 %
    assert min_resource(record(("cosine",), 0.5)) == 6


def test_a_resumed_sampler_gets_a_new_seed() -> None:
    assert sampler_seed(7, 0) == 7
    assert sampler_seed(7, 3) != 7 and sampler_seed(7, 3) == sampler_seed(7, 3)
    assert sampler_seed(7, 3) != sampler_seed(7, 4)


# ------------------------------------------------------------------------------------------ tune()
def toy_train(schedule: dict[str, Any], optimizer: dict[str, Any], report: Any) -> float:
    """A training loop stand-in: best near base_lr 0.05; NaN for step schedules."""
    parse_spec(schedule).check_budget(30)
    assert optimizer["name"] == "sgd"
    value = 1.0
    for epoch in range(1, 4):
        value = abs(math.log10(schedule["base_lr"] / 0.05)) + 1.0 / epoch
        report(epoch, math.nan if schedule["type"] == "step" else value)
    return value


def test_tune_runs_a_users_training_loop(tmp_path: Path, empty_mlflow_db: Path) -> None:
    folder = fresh_folder(tmp_path, empty_mlflow_db)
    tracking = TrackingSettings(tracking_uri=f"sqlite:///{folder}/mlflow.db", experiment="toy")
    storage = f"sqlite:///{folder}/lrtune.db"
    kwargs: dict[str, Any] = {
        "bounds": LRBounds(1e-3, 1.0, 0.05),
        "schedules": ("constant", "cosine", "step"),
        "epochs": 3,
        "steps_per_epoch": 10,
        "storage": storage,
        "study_name": "toy",
        "sampler": "random",
        "pruner": "none",
        "tracking": tracking,
    }
    study = tune(toy_train, n_trials=6, **kwargs)
    trials = study.get_trials()
    assert len(trials) == 6
    assert trials[0].params == {
        "schedule": "cosine",
        "base_lr": 0.05,
        "warmup_frac": 0.0,
        "min_lr_ratio": 0.001,
    }
    assert trials[0].value == pytest.approx(1 / 3)
    states = {t.params["schedule"]: t.state for t in trials}
    assert states.get("step", optuna.trial.TrialState.PRUNED) == optuna.trial.TrialState.PRUNED
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned and all(t.params["schedule"] == "step" for t in pruned)
    assert all("diverged in epoch 1" in t.user_attrs[REASON_ATTR] for t in pruned)
    for trial in trials:
        assert trial.user_attrs[PLAN_ATTR]["schedule"]["type"] == trial.params["schedule"]
        if trial.state == optuna.trial.TrialState.COMPLETE:
            assert sorted(trial.intermediate_values) == [1, 2, 3]

    client = MlflowClient(tracking_uri=tracking.tracking_uri)
    runs = children(client, "toy", study.user_attrs[PARENT_ATTR])
    assert len(runs) == 6
    for run in runs:
        number = int(run.data.tags["lrtune.trial_number"])
        history = client.get_metric_history(run.info.run_id, "val_loss")
        if trials[number].state == optuna.trial.TrialState.COMPLETE:
            assert run.info.status == "FINISHED" and sorted(m.step for m in history) == [1, 2, 3]
        else:
            assert run.info.status == "KILLED" and history == []  # a NaN is never logged

    again = tune(toy_train, n_trials=6, **kwargs)
    assert len(again.get_trials()) == 6
    assert len(children(client, "toy", study.user_attrs[PARENT_ATTR])) == 6
    with pytest.raises(UsageError, match="exists with other settings"):
        tune(toy_train, n_trials=7, **{**kwargs, "epochs": 4})
    assert best_file(again)["schedule"]["base_lr"] == pytest.approx(
        min(trials, key=lambda t: t.value if t.value is not None else math.inf).params["base_lr"]
    )


def test_tune_in_memory_checks_its_arguments() -> None:
    study = tune(
        toy_train,
        bounds=LRBounds(1e-3, 1.0, 0.05),
        schedules=("cosine",),
        n_trials=2,
        epochs=3,
        steps_per_epoch=10,
    )
    assert len(study.get_trials()) == 2
    first = study.get_trials()[0]
    assert first.user_attrs["role"] == "baseline" and first.params["schedule"] == "cosine"
    assert first.params["base_lr"] == 0.05 and first.params["warmup_frac"] == 0.0
    with pytest.raises(UsageError, match="n_trials"):
        tune(toy_train, bounds=LRBounds(1e-3, 1.0, 0.05), n_trials=0, epochs=3, steps_per_epoch=10)
    with pytest.raises(UsageError, match="sampler"):
        tune(toy_train, bounds=LRBounds(1e-3, 1.0, 0.05), sampler="nope", epochs=3, steps_per_epoch=10)
    with pytest.raises(UsageError, match="racing pruner trains each trial on several seeds"):
        tune(toy_train, bounds=LRBounds(1e-3, 1.0, 0.05), pruner="racing", epochs=3, steps_per_epoch=10)
    with pytest.raises(UsageError, match="direction"):
        tune(toy_train, bounds=LRBounds(1e-3, 1.0, 0.05), direction="up", epochs=3, steps_per_epoch=10)
    with pytest.raises(UsageError, match="at least one optimizer"):
        tune(toy_train, bounds={}, epochs=3, steps_per_epoch=10)
    with pytest.raises(UsageError, match="must be an LRBounds"):
        tune(toy_train, bounds={"sgd": 0.1}, epochs=3, steps_per_epoch=10)  # type: ignore[dict-item]


# ----------------------------------------------------------------------------------------- storage
def test_storage_errors_and_logs_mask_the_password(caplog: pytest.LogCaptureFixture) -> None:
    url = "postgresql://bob:hunter2@127.0.0.1:1/optuna"
    with pytest.raises(UsageError) as caught:
        open_storage(url)
    assert "hunter2" not in str(caught.value) and "bob:***@127.0.0.1" in str(caught.value)
    with pytest.raises(UsageError, match="not a URL"):
        open_storage("lrtune.db")
    with pytest.raises(UsageError, match="does not exist"):
        open_storage("sqlite:///no/such/folder/lrtune.db")
    storage_module.mask_secrets_in_logs()
    with caplog.at_level(logging.WARNING, logger="optuna"):
        logging.getLogger("optuna.storages").warning("cannot reach %s", url)
    assert "hunter2" not in caplog.text and "bob:***@" in caplog.text


# ----------------------------------------------------------------------------------------- slow ones
@pytest.mark.slow
def test_auto_bounds_run_the_finder_once(
    tmp_path: Path, empty_mlflow_db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = fresh_folder(tmp_path, empty_mlflow_db)
    config = config_in(
        folder, n_trials=2, bounds="auto", finder_num_iter=60, finder_repeats=1, study_name="auto"
    )
    outcome = run_study(config)
    assert outcome.complete + outcome.pruned == 2
    study = load(config)
    record = read_record(study.user_attrs)
    assert record is not None and record.bounds_source == "auto"
    found = study.user_attrs[FINDER_ATTR_PREFIX + "sgd"]
    assert found["num_iter"] == 60 and len(found["lrs"]) == len(found["losses"]) > 10
    assert record.bounds["sgd"] == LRBounds(found["lr_low"], found["lr_high"], found["suggested_lr"])
    assert study.get_trials()[0].params["base_lr"] == found["suggested_lr"]
    client = MlflowClient(tracking_uri=config.tracking_uri)
    parent = study.user_attrs[PARENT_ATTR]
    assert {"finder.json", "finder.png"} <= {a.path for a in client.list_artifacts(parent)}
    logged = json.loads(Path(client.download_artifacts(parent, "finder.json", str(tmp_path))).read_text())
    assert logged["suggested_lr"] == found["suggested_lr"]

    def no_second_range_test(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a resumed study must reuse its stored bounds")

    monkeypatch.setattr("lrtune.find_job.run_find", no_second_range_test)
    again = run_study(config_in(folder, n_trials=3, bounds="auto", study_name="auto"))
    assert again.added == 1 and again.parent_run_id == parent


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_a_crashed_trial_is_failed_and_retried(tmp_path: Path, empty_mlflow_db: Path) -> None:
    folder = fresh_folder(tmp_path, empty_mlflow_db)
    bounds = finder_json(folder, low=0.02, high=0.5, suggested=0.1)
    beat = {"heartbeat_interval": 1, "grace_period": 2}
    config = config_in(folder, n_trials=1, bounds=str(bounds), study_name="crash", **beat)
    run_study(config)
    # A worker that died in the middle of trial 1: RUNNING, with a heartbeat that stopped.
    storage = open_storage(config.storage, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="crash", storage=storage)
    trial = study.ask()
    trial.suggest_categorical("schedule", ["constant", "cosine", "one_cycle"])
    storage.record_heartbeat(trial._trial_id)
    time.sleep(3.5)  # SQLite keeps heartbeats to the second

    outcome = run_study(config_in(folder, n_trials=2, bounds=str(bounds), study_name="crash", **beat))
    trials = load(config).get_trials()
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[2].system_attrs["failed_trial"] == 1
    assert trials[2].params["schedule"] == trials[1].params["schedule"]
    assert (outcome.complete, outcome.failed, outcome.added) == (2, 1, 1)
    client = MlflowClient(tracking_uri=config.tracking_uri)
    (retry,) = [
        r
        for r in children(client, "crash", outcome.parent_run_id or "")
        if r.data.tags["lrtune.trial_number"] == "2"
    ]
    assert retry.data.tags["lrtune.retried_from"] == "1"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used:UserWarning")
def test_rerunning_a_finished_study_fails_stale_trials_and_ends_their_runs(
    tmp_path: Path, empty_mlflow_db: Path
) -> None:
    folder = fresh_folder(tmp_path, empty_mlflow_db)
    bounds = finder_json(folder, low=0.02, high=0.5, suggested=0.1)
    config = config_in(
        folder, n_trials=1, bounds=str(bounds), study_name="stale", heartbeat_interval=1, grace_period=2
    )
    first = run_study(config)
    # A worker of an older version died in a trial beyond the total: RUNNING, its MLflow run open.
    storage = open_storage(config.storage, heartbeat_interval=1, grace_period=2)
    study = optuna.load_study(study_name="stale", storage=storage)
    trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    tracker = StudyTracker(
        TrackingSettings(tracking_uri=config.tracking_uri, experiment="stale"), study_name="stale"
    )
    tracker.ensure_parent(study, config_params={})
    open_run = tracker.start_trial(trial)
    client = MlflowClient(tracking_uri=config.tracking_uri)
    assert client.get_run(first.parent_run_id or "").info.status == "RUNNING"
    time.sleep(3.5)  # SQLite keeps heartbeats to the second

    again = run_study(config)
    assert again.added == 0 and (again.complete, again.failed, again.running) == (1, 1, 0)
    assert [t.state.name for t in load(config).get_trials()] == ["COMPLETE", "FAIL"]
    assert client.get_run(open_run.run_id).info.status == "FAILED"
    assert client.get_run(again.parent_run_id or "").info.status == "FINISHED"


@pytest.mark.slow
def test_searching_optimizers_runs_one_range_test_each(tmp_path: Path, empty_mlflow_db: Path) -> None:
    folder = fresh_folder(tmp_path, empty_mlflow_db)
    config = config_in(
        folder,
        n_trials=2,
        bounds="auto",
        optimizer="search",
        search_optimizers="sgd,adam",
        finder_num_iter=40,
        finder_repeats=1,
        study_name="search",
    )
    run_study(config)
    study = load(config)
    record = read_record(study.user_attrs)
    assert record is not None and record.optimizers == ("sgd", "adam")
    for name in ("sgd", "adam"):
        found = study.user_attrs[FINDER_ATTR_PREFIX + name]
        assert record.bounds[name].suggested_lr == found["suggested_lr"]
    first, second = study.get_trials()
    assert (first.params["optimizer"], second.params["optimizer"]) == ("sgd", "adam")  # one baseline each
    assert first.params["base_lr_sgd"] == record.bounds["sgd"].suggested_lr
    assert second.params["base_lr_adam"] == record.bounds["adam"].suggested_lr
    assert second.user_attrs[PLAN_ATTR]["optimizer"] == {"name": "adam"}
    client = MlflowClient(tracking_uri=config.tracking_uri)
    parent = study.user_attrs[PARENT_ATTR]
    for name in ("sgd", "adam"):
        files = {Path(a.path).name for a in client.list_artifacts(parent, f"finder-{name}")}
        assert files == {"finder.json", "finder.png"}


@pytest.mark.parametrize("name", ["digits-mlp", "mnist-mlp", "fashion-mnist-cnn", "cifar10-resnet18"])
def test_shipped_study_files_are_valid(name: str) -> None:
    from lrtune.config import load_study_file

    path = Path(__file__).resolve().parents[1] / "studies" / f"{name}.yaml"
    lines = path.read_text().splitlines()
    header = lines[: next(i for i, line in enumerate(lines) if not line.startswith("#"))]
    assert len(header) >= 6
    assert any("Time" in line for line in header) and any("Hardware" in line for line in header)
    config = build_config(load_study_file(path), {})
    assert config.study_name == name and config.n_trials >= 30 and config.bounds == "auto"
