"""MLflow layout of a study: parent run, child runs per trial, statuses, races, retries, secrets."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from lrtune.errors import LrtuneError, UsageError
from lrtune.tracking import PARENT_ATTR, StudyTracker, TrackingSettings, TrialRun

SECRET = "hunter2"
STORAGE_WITH_SECRET = f"postgresql://bob:{SECRET}@db.example:5432/optuna"
EPOCHS = 3
STEPS_PER_EPOCH = 5
LONG_EPOCH = (3, 1)  # (trial, epoch) with 1001 steps: more lr points than one request may carry


@dataclass
class Logged:
    uri: str
    root: Path
    storage: str
    study: optuna.Study
    tracker: StudyTracker
    parent: str
    client: MlflowClient
    records: list[logging.LogRecord]


def steps_in_epoch(number: int, epoch: int) -> int:
    return 1001 if (number, epoch) == LONG_EPOCH else STEPS_PER_EPOCH


def objective_for(tracker: StudyTracker) -> Callable[[optuna.Trial], float]:
    def objective(trial: optuna.Trial) -> float:
        base_lr = trial.suggest_float("base_lr", 1e-3, 1.0, log=True)
        schedule = trial.suggest_categorical("schedule", ["cosine", "constant"])
        step = 0
        with tracker.start_trial(trial) as run:
            for epoch in range(1, EPOCHS + 1):
                n = steps_in_epoch(trial.number, epoch)
                val_loss = 1.0 / epoch + trial.number
                accuracy = math.nan if (trial.number, epoch) == (0, 2) else 0.5 + 0.1 * epoch
                lrs = [base_lr * (0.9 if schedule == "cosine" else 1.0) ** i for i in range(n)]
                run.log_epoch(
                    epoch=epoch,
                    train_loss=val_loss - 0.1,
                    val_loss=val_loss,
                    metrics={"accuracy": accuracy},
                    lrs=lrs,
                    first_step=step,
                )
                step += n
                trial.report(val_loss, epoch)
                if trial.number == 1 and epoch == 2:
                    raise optuna.TrialPruned("diverged at epoch 2")
                if trial.number == 2 and epoch == 1:
                    raise RuntimeError(f"cannot reach {STORAGE_WITH_SECRET}\nsecond line")
            return val_loss

    return objective


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def experiment_of(client: MlflowClient, name: str) -> str:
    found = client.get_experiment_by_name(name)
    assert found is not None
    return str(found.experiment_id)


@pytest.fixture(scope="module")
def logged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Logged]:
    """One 4-trial study logged to a fresh MLflow store (COMPLETE, PRUNED, FAIL, COMPLETE)."""
    root = tmp_path_factory.mktemp("study-tracking")
    uri = f"sqlite:///{root}/mlflow.db"
    storage = f"sqlite:///{root}/lrtune.db"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    handler = ListHandler()
    records = handler.records
    lrtune_logger = logging.getLogger("lrtune")
    old_level = lrtune_logger.level
    lrtune_logger.addHandler(handler)
    lrtune_logger.setLevel(logging.DEBUG)
    try:
        study = optuna.create_study(
            study_name="toy", storage=storage, sampler=optuna.samplers.RandomSampler(seed=0)
        )
        tracker = StudyTracker(TrackingSettings(tracking_uri=uri, experiment="toy"), study_name="toy")
        parent = tracker.ensure_parent(
            study, config_params={"storage": STORAGE_WITH_SECRET, "n_trials": 4, "sampler": "random"}
        )
        study.optimize(objective_for(tracker), n_trials=4, catch=(RuntimeError,), callbacks=[tracker])

        finder = root / "finder.json"
        finder.write_text('{"suggested_lr": 0.1}')
        config = root / "study.yaml"
        config.write_text(f"storage: {STORAGE_WITH_SECRET}\nn_trials: 4\n")
        png = root / "finder.png"
        png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
        tracker.log_parent_files([finder, png])
        tracker.log_parent_files([config], artifact_path="config")
        best = {
            "schedule": {"type": "cosine", "base_lr": 0.1},
            "value": study.best_value,
            "storage": STORAGE_WITH_SECRET,
        }
        tracker.log_best(best, value=study.best_value, trial_number=study.best_trial.number)
        yield Logged(uri, root, storage, study, tracker, parent, MlflowClient(tracking_uri=uri), records)
    finally:
        lrtune_logger.removeHandler(handler)
        lrtune_logger.setLevel(old_level)


def children(logged: Logged, parent: str | None = None) -> dict[int, Any]:
    exp = experiment_of(logged.client, "toy")
    runs = logged.client.search_runs(
        [exp], filter_string=f"tags.`mlflow.parentRunId` = '{parent or logged.parent}'"
    )
    return {int(r.data.tags["lrtune.trial_number"]): r for r in runs}


def test_one_parent_run_is_tagged_and_published(logged: Logged) -> None:
    client = logged.client
    exp = client.get_experiment_by_name("toy")
    assert exp is not None
    assert exp.artifact_location.startswith((logged.root / "mlartifacts").as_uri())
    parents = client.search_runs([exp.experiment_id], filter_string="tags.`lrtune.role` = 'parent'")
    assert [p.info.run_id for p in parents] == [logged.parent]
    assert parents[0].data.tags["lrtune.study"] == "toy"
    assert "mlflow.parentRunId" not in parents[0].data.tags
    assert (
        optuna.load_study(study_name="toy", storage=logged.storage).user_attrs[PARENT_ATTR] == logged.parent
    )
    assert parents[0].data.params["n_trials"] == "4"
    assert parents[0].data.params["storage"] == "postgresql://bob:***@db.example:5432/optuna"


def test_every_trial_has_a_child_with_the_right_status_and_params(logged: Logged) -> None:
    runs = children(logged)
    assert sorted(runs) == [0, 1, 2, 3]
    expected = {0: "FINISHED", 1: "KILLED", 2: "FAILED", 3: "FINISHED"}
    states = {0: "COMPLETE", 1: "PRUNED", 2: "FAIL", 3: "COMPLETE"}
    for number, run in runs.items():
        trial = logged.study.trials[number]
        assert trial.state.name == states[number]
        assert run.info.status == expected[number]
        assert run.data.tags["lrtune.state"] == states[number]
        assert run.data.tags["lrtune.study"] == "toy"
        assert run.info.run_name == f"trial-{number}"
        assert run.data.params == {k: str(v) for k, v in trial.params.items()}
        assert "lrtune.retried_from" not in run.data.tags
    assert runs[1].data.tags["lrtune.reason"] == "diverged at epoch 2"
    assert runs[2].data.tags["lrtune.reason"] == (
        "RuntimeError: cannot reach postgresql://bob:***@db.example:5432/optuna"
    )
    assert "lrtune.reason" not in runs[0].data.tags
    assert runs[0].data.metrics["objective"] == pytest.approx(logged.study.trials[0].value)


def test_epoch_metrics_and_lr_per_step(logged: Logged) -> None:
    client = logged.client
    runs = children(logged)
    epochs_logged = {0: 3, 1: 2, 2: 1, 3: 3}
    for number, run in runs.items():
        n_epochs = epochs_logged[number]
        for key in ("train_loss", "val_loss"):
            history = client.get_metric_history(run.info.run_id, key)
            assert [m.step for m in history] == list(range(1, n_epochs + 1))
        val_loss = client.get_metric_history(run.info.run_id, "val_loss")
        assert [m.value for m in val_loss] == pytest.approx(
            [1.0 / e + number for e in range(1, n_epochs + 1)]
        )
        accuracy_steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        # trial 0 epoch 2 had a NaN accuracy: skipped, not logged
        assert accuracy_steps == ([1, 3] if number == 0 else list(range(1, n_epochs + 1)))
        lr = sorted(client.get_metric_history(run.info.run_id, "lr"), key=lambda m: m.step)
        total_steps = sum(steps_in_epoch(number, e) for e in range(1, n_epochs + 1))
        assert [m.step for m in lr] == list(range(total_steps))
        base_lr = logged.study.trials[number].params["base_lr"]
        assert lr[0].value == pytest.approx(base_lr)


def test_parent_artifacts_and_best(logged: Logged) -> None:
    client = logged.client
    names = {f.path for f in client.list_artifacts(logged.parent)}
    assert names == {"finder.json", "finder.png", "best.json", "config"}
    assert [f.path for f in client.list_artifacts(logged.parent, "config")] == ["config/study.yaml"]
    parent = client.get_run(logged.parent)
    assert parent.data.metrics["best_value"] == pytest.approx(logged.study.best_value)
    assert parent.data.tags["lrtune.best_trial"] == str(logged.study.best_trial.number)
    assert parent.data.tags["lrtune.best_schedule"] == "cosine"
    art = Path(parent.info.artifact_uri.removeprefix("file://"))
    assert '"type": "cosine"' in (art / "best.json").read_text()
    assert (art / "finder.png").read_bytes().startswith(b"\x89PNG")
    assert "bob:***@db.example" in (art / "config" / "study.yaml").read_text()


def test_no_secret_in_params_tags_artifacts_or_log_lines(logged: Logged) -> None:
    client = logged.client
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()], run_view_type=ViewType.ALL
    )
    assert len(runs) >= 5
    for run in runs:
        for text in (*run.data.params.values(), *run.data.tags.values()):
            assert SECRET not in text
    files = [p for p in (logged.root / "mlartifacts").rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path
    assert logged.records, "lrtune logged nothing to check"
    for record in logged.records:
        assert SECRET not in record.getMessage()


def test_a_second_worker_finds_the_same_parent(logged: Logged) -> None:
    study = optuna.load_study(study_name="toy", storage=logged.storage)
    worker = StudyTracker(TrackingSettings(tracking_uri=logged.uri, experiment="toy"), study_name="toy")
    assert worker.ensure_parent(study, config_params={"n_trials": 5}) == logged.parent
    exp = experiment_of(logged.client, "toy")
    parents = logged.client.search_runs(
        [exp], filter_string="tags.`lrtune.role` = 'parent'", run_view_type=ViewType.ALL
    )
    assert len(parents) == 1
    assert parents[0].data.params["n_trials"] == "4"  # the creator's config stays


def test_finish_parent_and_reopen(logged: Logged) -> None:
    logged.tracker.finish_parent(logged.study)
    assert logged.client.get_run(logged.parent).info.status == "FINISHED"
    study = optuna.load_study(study_name="toy", storage=logged.storage)
    worker = StudyTracker(TrackingSettings(tracking_uri=logged.uri, experiment="toy"), study_name="toy")
    assert worker.ensure_parent(study, config_params={}) == logged.parent
    assert logged.client.get_run(logged.parent).info.status == "RUNNING"


def test_racing_workers_agree_on_one_parent(logged: Logged) -> None:
    optuna.create_study(study_name="race", storage=logged.storage)
    settings = TrackingSettings(tracking_uri=logged.uri, experiment="race")
    trackers = [StudyTracker(settings, study_name="race") for _ in range(2)]
    for tracker in trackers:
        _ = tracker.experiment_id  # open both clients before the race
    both_created = threading.Barrier(2, timeout=30)
    for tracker in trackers:
        create = tracker.client.create_run

        def create_then_wait(*args: Any, _create: Any = create, **kwargs: Any) -> Any:
            run = _create(*args, **kwargs)
            both_created.wait()  # both candidates exist before either is published
            return run

        tracker.client.create_run = create_then_wait  # type: ignore[method-assign]
    results: list[str] = []
    errors: list[BaseException] = []

    def work(tracker: StudyTracker) -> None:
        try:
            study = optuna.load_study(study_name="race", storage=logged.storage)
            results.append(tracker.ensure_parent(study, config_params={"worker": id(tracker)}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in trackers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    published = optuna.load_study(study_name="race", storage=logged.storage).user_attrs[PARENT_ATTR]
    assert results == [published, published]
    exp = experiment_of(logged.client, "race")
    active = logged.client.search_runs([exp], run_view_type=ViewType.ACTIVE_ONLY)
    assert [r.info.run_id for r in active] == [published]
    deleted = logged.client.search_runs([exp], run_view_type=ViewType.DELETED_ONLY)
    assert len(deleted) == 1
    assert deleted[0].data.tags["lrtune.superseded_by"] == published
    assert deleted[0].info.status == "KILLED"


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_retried_trial_gets_a_new_run_and_the_lost_one_is_closed(logged: Logged) -> None:
    study = optuna.create_study(study_name="retry", storage=logged.storage)
    tracker = StudyTracker(TrackingSettings(tracking_uri=logged.uri, experiment="retry"), study_name="retry")
    parent = tracker.ensure_parent(study, config_params={})
    lost = study.ask()
    lost.suggest_float("base_lr", 0.01, 0.1)
    lost_run = tracker.start_trial(lost)  # the worker dies here: the run is never ended
    study.tell(lost, state=optuna.trial.TrialState.FAIL)  # what a stale heartbeat does
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, study.trials[lost.number])
    retry = study.ask()
    assert retry.number != lost.number
    with tracker.start_trial(retry) as run:
        pass
    client = logged.client
    new = client.get_run(run.run_id)
    assert new.data.tags["lrtune.retried_from"] == str(lost.number)
    assert new.data.tags["mlflow.parentRunId"] == parent
    assert new.data.params["base_lr"] == str(study.trials[lost.number].params["base_lr"])
    assert new.info.status == "FINISHED"
    old = client.get_run(lost_run.run_id)
    assert old.info.status == "FAILED"
    assert old.data.tags["lrtune.state"] == "FAIL"
    assert "worker stopped" in old.data.tags["lrtune.reason"]


def test_context_manager_statuses_and_callback_alignment(logged: Logged) -> None:
    study = optuna.create_study(study_name="edges", storage=logged.storage)
    tracker = StudyTracker(TrackingSettings(tracking_uri=logged.uri, experiment="edges"), study_name="edges")
    tracker.ensure_parent(study, config_params={})
    client = logged.client

    trial = study.ask()
    with pytest.raises(KeyboardInterrupt), tracker.start_trial(trial) as interrupted:
        raise KeyboardInterrupt
    assert interrupted.writer is tracker.writer  # one background thread per tracker
    run = client.get_run(interrupted.run_id)
    assert (run.info.status, run.data.tags["lrtune.state"]) == ("KILLED", "FAIL")
    assert run.data.tags["lrtune.reason"] == "interrupted (KeyboardInterrupt)"

    trial = study.ask()
    with tracker.start_trial(trial) as explicit:
        explicit.finish("PRUNED", reason="below the median")
    run = client.get_run(explicit.run_id)
    assert (run.info.status, run.data.tags["lrtune.reason"]) == ("KILLED", "below the median")

    def nan_objective(trial: optuna.Trial) -> float:
        with tracker.start_trial(trial):
            return math.nan

    study.optimize(nan_objective, n_trials=1, callbacks=[tracker])
    nan_trial = study.trials[-1]
    assert nan_trial.state == optuna.trial.TrialState.FAIL
    run = children_of(client, tracker)[nan_trial.number]
    assert (run.info.status, run.data.tags["lrtune.state"]) == ("FAILED", "FAIL")
    assert "NaN" in run.data.tags["lrtune.reason"]

    with pytest.raises(UsageError, match="state"):
        explicit.finish("DONE")


def children_of(client: MlflowClient, tracker: StudyTracker) -> dict[int, Any]:
    runs = client.search_runs(
        [tracker.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{tracker.parent_run_id()}'"
    )
    return {int(r.data.tags["lrtune.trial_number"]): r for r in runs}


def test_start_trial_needs_a_parent(tmp_path: Path) -> None:
    tracker = StudyTracker(TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/m.db"), study_name="s")
    trial = optuna.create_study().ask()
    with pytest.raises(LrtuneError, match="ensure_parent"):
        tracker.start_trial(trial)
    with pytest.raises(UsageError, match="study name"):
        StudyTracker(TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/m.db"), study_name=" ")


class RecordingClient:
    """Counts requests instead of sending them."""

    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        self.batches.append(list(metrics))


@pytest.mark.parametrize(("steps", "requests"), [(5, 1), (998, 1), (999, 2), (2500, 3)])
def test_one_request_per_epoch_unless_over_the_batch_limit(steps: int, requests: int) -> None:
    client = RecordingClient()
    run = TrialRun(client, "run", number=0)  # type: ignore[arg-type]
    run.log_epoch(
        epoch=4,
        train_loss=0.5,
        val_loss=math.inf,
        metrics={"accuracy": 0.9, "f1": math.nan},
        lrs=[0.1] * steps,
        first_step=3 * steps,
    )
    run.flush()
    assert len(client.batches) == requests
    sent = [m for batch in client.batches for m in batch]
    assert all(len(batch) <= 1000 for batch in client.batches)
    assert {(m.key, m.step) for m in sent if m.key != "lr"} == {("train_loss", 4), ("val_accuracy", 4)}
    assert [m.step for m in sent if m.key == "lr"] == list(range(3 * steps, 4 * steps))


class EndingClient:
    """Records the requests that reach the store, in order; metric requests wait for ``gate``."""

    def __init__(self, *, fail_metrics: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.fail_metrics = fail_metrics

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        if metrics:
            self.gate.wait()
            if self.fail_metrics:
                raise RuntimeError(f"cannot reach {STORAGE_WITH_SECRET}")
            self.calls.extend(("epoch", m.step) for m in metrics if m.key == "train_loss")
        if tags:
            self.calls.append(("tags", {t.key: t.value for t in tags}))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.calls.append(("tags", {key: value}))

    def set_terminated(self, run_id: str, status: str | None = None) -> None:
        self.calls.append(("ended", status))


def log_epochs(run: TrialRun, n: int) -> float:
    """Log ``n`` epochs; returns the seconds the calls took."""
    started = time.perf_counter()
    for epoch in range(1, n + 1):
        run.log_epoch(
            epoch=epoch, train_loss=1.0, val_loss=1.0, metrics={}, lrs=[0.1] * 5, first_step=5 * epoch
        )
    return time.perf_counter() - started


def test_a_slow_store_does_not_hold_up_the_epochs_and_the_run_ends_after_them() -> None:
    client = EndingClient()
    client.gate.clear()  # the store hangs until released
    with TrialRun(client, "run", number=0) as run:  # type: ignore[arg-type]
        assert log_epochs(run, 5) < 0.5
        assert client.calls == []
        threading.Timer(0.2, client.gate.set).start()
    assert client.calls == [
        *(("epoch", epoch) for epoch in range(1, 6)),
        ("tags", {"lrtune.state": "COMPLETE"}),
        ("ended", "FINISHED"),
    ]
    assert run.state == "COMPLETE" and run.writer.pending == 0


@pytest.mark.parametrize(
    ("error", "status", "state", "reason"),
    [
        (KeyboardInterrupt(), "KILLED", "FAIL", "interrupted (KeyboardInterrupt)"),
        (optuna.TrialPruned("diverged"), "KILLED", "PRUNED", "diverged"),
        (RuntimeError("out of memory"), "FAILED", "FAIL", "RuntimeError: out of memory"),
    ],
)
def test_an_interrupted_trial_stores_its_epochs_then_ends(
    error: BaseException, status: str, state: str, reason: str
) -> None:
    client = EndingClient()
    client.gate.clear()
    with pytest.raises(type(error)), TrialRun(client, "run", number=0) as run:  # type: ignore[arg-type]
        log_epochs(run, 3)
        threading.Timer(0.1, client.gate.set).start()
        raise error
    assert client.calls == [
        ("epoch", 1),
        ("epoch", 2),
        ("epoch", 3),
        ("tags", {"lrtune.state": state, "lrtune.reason": reason}),
        ("ended", status),
    ]


def test_a_failing_store_neither_stops_nor_fails_the_trial(caplog: pytest.LogCaptureFixture) -> None:
    client = EndingClient(fail_metrics=True)
    with caplog.at_level(logging.DEBUG, logger="lrtune"), TrialRun(client, "run", number=0) as run:  # type: ignore[arg-type]
        log_epochs(run, 3)
        run.log_values({"objective": 0.5, "skipped": None}, step=0)
    assert client.calls == [("tags", {"lrtune.state": "COMPLETE"}), ("ended", "FINISHED")]
    assert run.writer.failures >= 1  # the epochs may have gone in one request or several
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "could not log" in warnings[0].getMessage()
    assert all(SECRET not in r.getMessage() for r in caplog.records)


def test_log_values_are_queued_and_stored_before_the_end() -> None:
    client = RecordingClient()
    run = TrialRun(client, "run", number=0)  # type: ignore[arg-type]
    run.log_values({"val_accuracy": 0.75, "val_f1": math.nan, "gone": None}, step=4)
    run.flush()
    assert [(m.key, m.value, m.step) for batch in client.batches for m in batch] == [
        ("val_accuracy", 0.75, 4)
    ]
