"""MLflow bookkeeping of an Optuna study: one parent run per study, one child run per trial.

Layout (kept stable for users' scripts): the experiment is ``settings.experiment``
(a study's experiment defaults to the study's name); the parent run carries tag
``lrtune.study``, the study config as params, and the finder result, best spec and
study plots as artifacts; its id is kept in the study's user attribute
``mlflow_parent_run_id`` so every worker finds it. Each trial gets a child run (tags
``mlflow.parentRunId``, ``lrtune.trial_number``, ``lrtune.state``, ``lrtune.study``),
the trial's params, per-epoch ``train_loss``/``val_loss``/``val_<metric>`` and the
per-step ``lr``. Pruned trials end KILLED, failed ones FAILED, with the reason in tag
``lrtune.reason``; a retried trial gets a new run tagged ``lrtune.retried_from``. Confirmation
runs (:mod:`lrtune.study.confirm`) are children too, tagged ``lrtune.role = confirm``,
``lrtune.trial_number`` (the trial they retrain) and ``lrtune.seed``.

A trial's params, per-epoch metrics and ``objective`` are sent by one background thread per
tracker (:class:`lrtune.tracking.writer.BatchWriter`), so training never waits for the store; a
run is ended only after everything queued for it is stored, and :meth:`StudyTracker.flush`
(called by ``finish_parent``) waits for the rest.

Example:
    >>> import optuna, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> settings = TrackingSettings(tracking_uri=f"sqlite:///{folder}/mlflow.db", experiment="demo")
    >>> tracker = StudyTracker(settings, study_name="demo")
    >>> study = optuna.create_study(study_name="demo")
    >>> parent = tracker.ensure_parent(study, config_params={"epochs": 3})
    >>> def objective(trial):
    ...     lr = trial.suggest_float("lr", 1e-3, 1.0, log=True)
    ...     with tracker.start_trial(trial) as run:
    ...         run.log_epoch(epoch=1, train_loss=1.0, val_loss=1.1, metrics={"accuracy": 0.5},
    ...                       lrs=[lr] * 10, first_step=0)
    ...     return 1.1
    >>> study.optimize(objective, n_trials=2, callbacks=[tracker])
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from lrtune.errors import LrtuneError, UsageError, one_line
from lrtune.tracking.masking import mask_secrets
from lrtune.tracking.stores import (
    TrackingSettings,
    experiment_id,
    log_files,
    log_params,
    log_values,
    open_client,
    param_entities,
)
from lrtune.tracking.writer import BatchWriter

if TYPE_CHECKING:
    import optuna
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

PARENT_ATTR = "mlflow_parent_run_id"
"""Study user attribute holding the parent run's id."""

RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
"""Optuna's final trial states → MLflow run statuses."""

_SETTLE_SECONDS = 0.25  # a newly published parent id is read again after this, to see a racing writer
_MAX_TAG_LENGTH = 5000
_TEXT_SUFFIXES = {".json", ".yaml", ".yml", ".txt", ".csv", ".md", ".toml", ".cfg", ".ini", ".log"}
_MAX_SCANNED_BYTES = 5_000_000


class StudyTracker:
    """Logs one Optuna study to MLflow; safe to share between threads and to run in many processes.

    Args:
        settings: tracking URI and experiment (for a study, the experiment is usually its name).
        study_name: the Optuna study's name, kept in tag ``lrtune.study``.
        end_in_background: trial runs end through the background writer (after what was queued
            for them) instead of waiting for the store; :meth:`flush` waits for them. A trial on
            an MLflow server then waits for no request at its end.

    The tracker is also an Optuna callback (``study.optimize(..., callbacks=[tracker])``): after
    each trial it makes the trial's run agree with the state Optuna recorded (e.g. a NaN
    objective that Optuna marks FAIL) and logs the objective as metric ``objective``.
    """

    def __init__(
        self, settings: TrackingSettings, *, study_name: str, end_in_background: bool = False
    ) -> None:
        if not study_name.strip():
            raise UsageError(f"the study name must not be empty {study_name=}")
        self.settings = settings
        self.study_name = study_name
        self.end_in_background = end_in_background
        self._client: MlflowClient | None = None
        self._writer: BatchWriter | None = None
        self._experiment_id: str | None = None
        self._study: optuna.Study | None = None
        self._parent_id: str | None = None
        self._candidate: str | None = None  # a parent this tracker created, until it is confirmed
        self._runs: dict[int, TrialRun] = {}
        self._lock = threading.Lock()

    # -- store ---------------------------------------------------------------------------------------

    @property
    def client(self) -> MlflowClient:
        """The MLflow client (opened on first use)."""
        if self._client is None:
            self._client = open_client(self.settings)
        return self._client

    @property
    def writer(self) -> BatchWriter:
        """The background writer that sends the trial runs' params, epochs and objectives."""
        client = self.client
        with self._lock:
            if self._writer is None:
                self._writer = BatchWriter(client)
            return self._writer

    def flush(self) -> None:
        """Wait until everything queued so far (params, epochs, objectives) is stored."""
        if self._writer is not None:
            self._writer.flush()

    @property
    def experiment_id(self) -> str:
        """The study's experiment id (created with lrtune's artifact root on first use)."""
        if self._experiment_id is None:
            self._experiment_id = experiment_id(self.client, self.settings)
        return self._experiment_id

    # -- parent run ----------------------------------------------------------------------------------

    def ensure_parent(self, study: optuna.Study, *, config_params: Mapping[str, Any]) -> str:
        """Find the study's parent run, or create and publish it; returns its run id.

        Several workers may call this at once. Each that finds no usable parent creates a
        candidate (with ``config_params`` as params), publishes its id in the study's user
        attributes only if nobody else did meanwhile, reads the attribute back, and deletes
        its candidate if another one won. Later calls (``start_trial``, ``log_parent_files``)
        read the attribute again, so every worker converges on the published parent.
        """
        self._study = study
        seen = study.user_attrs.get(PARENT_ATTR)
        if seen is not None and self._usable_parent(str(seen)):
            parent = str(seen)
            self._reopen(parent)
        else:
            parent = self._create_parent(study, seen=seen, config_params=config_params)
        with self._lock:
            self._parent_id = parent
        self.close_stale_runs(study)
        return parent

    @property
    def has_parent(self) -> bool:
        """Whether :meth:`ensure_parent` found or created the parent run."""
        return self._parent_id is not None

    def parent_run_id(self) -> str:
        """The published parent run id, read again from the study (after ``ensure_parent``)."""
        if self._study is None or self._parent_id is None:
            raise LrtuneError("StudyTracker.ensure_parent must be called before logging trials")
        published = self._study.user_attrs.get(PARENT_ATTR)
        lost: str | None = None
        with self._lock:
            if published is not None and str(published) != self._parent_id:
                logger.info(
                    "study %r: parent run %s superseded by %s", self.study_name, self._parent_id, published
                )
                self._parent_id = str(published)
                lost, self._candidate = self._candidate, None
            parent = self._parent_id
        if lost is not None and lost != parent:
            self._discard_candidate(lost, winner=parent)
        return parent

    def _usable_parent(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            run = self.client.get_run(run_id)
        except MlflowException:
            logger.warning("study %r: parent run %s not found; creating a new one", self.study_name, run_id)
            return False
        if run.info.lifecycle_stage == "deleted" or run.info.experiment_id != self.experiment_id:
            logger.warning(
                "study %r: parent run %s is deleted or in another experiment; creating a new one",
                self.study_name,
                run_id,
            )
            return False
        return True

    def _reopen(self, run_id: str) -> None:
        if self.client.get_run(run_id).info.status != "RUNNING":
            self.client.update_run(run_id, status="RUNNING")

    def _create_parent(self, study: optuna.Study, *, seen: Any, config_params: Mapping[str, Any]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=self.study_name,
            tags={"lrtune.study": self.study_name, "lrtune.command": "study", "lrtune.role": "parent"},
        )
        candidate = str(run.info.run_id)
        log_params(self.client, candidate, dict(config_params))
        if study.user_attrs.get(PARENT_ATTR) == seen:
            study.set_user_attr(PARENT_ATTR, candidate)
            time.sleep(_SETTLE_SECONDS)
        winner = str(study.user_attrs.get(PARENT_ATTR, candidate))
        if winner != candidate:
            self._discard_candidate(candidate, winner=winner)
        else:
            self._candidate = candidate
            logger.info("study %r: parent run %s", self.study_name, candidate)
        return winner

    def _discard_candidate(self, run_id: str, *, winner: str) -> None:
        """End a parent candidate that lost the race; delete it unless trials were already logged under it."""
        client = self.client
        client.set_tag(run_id, "lrtune.superseded_by", winner)
        client.set_terminated(run_id, status="KILLED")
        if not self._children(run_id, max_results=1):
            client.delete_run(run_id)

    def _children(self, parent: str, *, status: str | None = None, max_results: int = 1000) -> list[Run]:
        query = f"tags.`mlflow.parentRunId` = '{parent}'"
        if status is not None:
            query += f" and attributes.status = '{status}'"
        runs: list[Run] = []
        token: str | None = None
        while True:
            page = self.client.search_runs(
                [self.experiment_id], filter_string=query, max_results=max_results, page_token=token
            )
            runs.extend(page)
            token = page.token
            if not token or len(runs) >= max_results:
                return runs

    def log_parent_files(self, files: Sequence[Path], *, artifact_path: str | None = None) -> None:
        """Attach files (finder.json, finder.png, plots) to the parent run; secrets in text files are masked."""
        parent = self.parent_run_id()
        with tempfile.TemporaryDirectory(prefix="lrtune-") as scratch:
            safe = [_masked_copy(Path(f), Path(scratch)) for f in files]
            log_files(self.client, parent, safe, artifact_path=artifact_path)

    def log_best(self, best: Mapping[str, Any], *, value: float, trial_number: int | None = None) -> None:
        """Attach the best spec as ``best.json`` to the parent, with metric ``best_value`` and tags.

        Args:
            best: the best schedule spec as ``lrtune best`` writes it.
            value: the best objective value.
            trial_number: the best trial (tag ``lrtune.best_trial``, and the metric's step).
        """
        parent = self.parent_run_id()
        text = mask_secrets(json.dumps(best, indent=2, sort_keys=True, default=str))
        with tempfile.TemporaryDirectory(prefix="lrtune-") as scratch:
            path = Path(scratch) / "best.json"
            path.write_text(text + "\n", encoding="utf-8")
            log_files(self.client, parent, [path])
        log_values(self.client, parent, {"best_value": value}, step=trial_number or 0)
        tags = {}
        if trial_number is not None:
            tags["lrtune.best_trial"] = str(trial_number)
        schedule = best.get("schedule")
        if isinstance(schedule, Mapping) and "type" in schedule:
            tags["lrtune.best_schedule"] = str(schedule["type"])
        for key, tag in tags.items():
            self.client.set_tag(parent, key, tag)

    def finish_parent(self, study: optuna.Study) -> None:
        """End runs of trials failed elsewhere; mark the parent FINISHED unless trials still run elsewhere."""
        import optuna

        self.flush()
        self.close_stale_runs(study)
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running:
            self.client.set_terminated(self.parent_run_id(), status="FINISHED")

    # -- trials --------------------------------------------------------------------------------------

    def start_trial(
        self, trial: optuna.Trial | FrozenTrial, *, params: Mapping[str, Any] | None = None
    ) -> TrialRun:
        """Create the child run of a trial (use it as a context manager to guarantee it ends).

        Args:
            trial: the running trial.
            params: the run's params (default: the trial's params so far).
        """
        parent = self.parent_run_id()
        retried_from = _retried_from(trial)
        tags = {
            "mlflow.parentRunId": parent,
            "lrtune.study": self.study_name,
            "lrtune.role": "trial",
            "lrtune.trial_number": str(trial.number),
            "lrtune.state": "RUNNING",
        }
        if retried_from is not None:
            tags["lrtune.retried_from"] = str(retried_from)
        run = self.client.create_run(self.experiment_id, run_name=f"trial-{trial.number}", tags=tags)
        trial_run = TrialRun(
            self.client,
            str(run.info.run_id),
            number=trial.number,
            writer=self.writer,
            end_in_background=self.end_in_background,
        )
        with self._lock:
            self._runs[trial.number] = trial_run
        # Queued like the epochs: stored before the run ends, without holding up the trial.
        self.writer.log(trial_run.run_id, params=param_entities(trial.params if params is None else params))
        if retried_from is not None and self._study is not None:
            self.close_stale_runs(self._study)
        return trial_run

    def start_confirm(self, trial_number: int, *, seed: int, params: Mapping[str, Any]) -> TrialRun:
        """Create the child run of a confirmation run: trial ``trial_number``'s plan retrained with ``seed``.

        Tagged ``lrtune.role = confirm``, ``lrtune.trial_number`` (the trial it confirms) and
        ``lrtune.seed``; use it as a context manager like :meth:`start_trial`.
        """
        tags = {
            "mlflow.parentRunId": self.parent_run_id(),
            "lrtune.study": self.study_name,
            "lrtune.role": "confirm",
            "lrtune.trial_number": str(trial_number),
            "lrtune.seed": str(seed),
            "lrtune.state": "RUNNING",
        }
        run = self.client.create_run(
            self.experiment_id, run_name=f"confirm-{trial_number}-seed-{seed}", tags=tags
        )
        confirm_run = TrialRun(self.client, str(run.info.run_id), number=trial_number, writer=self.writer)
        self.writer.log(confirm_run.run_id, params=param_entities(params))
        return confirm_run

    def kill_open_runs(self, reason: str = "interrupted") -> int:
        """End KILLED (trial state FAIL) the runs of this tracker's trials still open; returns how many.

        For an interrupt: a trial stopped before its run was ended (between the run's creation
        and the ``with`` block) is left with no open run.
        """
        with self._lock:
            runs = [run for run in self._runs.values() if run.state == "RUNNING"]
            self._runs.clear()
        for run in runs:
            run.kill(reason)
        return len(runs)

    def close_stale_runs(self, study: optuna.Study) -> int:
        """End RUNNING trial runs whose trial Optuna already finished (a worker died); returns how many."""
        finished = {t.number: t for t in study.get_trials(deepcopy=False) if t.state.is_finished()}
        closed = 0
        for run in self._children(self.parent_run_id(), status="RUNNING"):
            if run.data.tags.get("lrtune.role", "trial") != "trial":
                continue
            number = run.data.tags.get("lrtune.trial_number", "")
            frozen = finished.get(int(number)) if number.isdigit() else None
            if frozen is None:
                continue
            state = frozen.state.name
            reason = "the worker stopped before ending this run"
            TrialRun(
                self.client,
                run.info.run_id,
                number=frozen.number,
                writer=self.writer,
                end_in_background=self.end_in_background,
            ).finish(state if state in RUN_STATUS else "FAIL", reason=reason)
            closed += 1
        if closed:
            logger.info("study %r: ended %d runs left open by stopped workers", self.study_name, closed)
        return closed

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        """Optuna callback: align the trial's run with Optuna's final state; log ``objective``."""
        with self._lock:
            run = self._runs.pop(trial.number, None)
        if run is None:
            return
        state = trial.state.name
        if state == "COMPLETE" and trial.values is not None and len(trial.values) == 1:
            # Queued: stored within the writer's interval, or when the next run ends or the parent finishes.
            run.log_values({"objective": trial.values[0]}, step=trial.number)
        if state in RUN_STATUS and run.state != state:
            reason = "Optuna rejected the objective's value (NaN or missing)" if state == "FAIL" else None
            run.finish(state, reason=reason, force=True)


class TrialRun:
    """The child run of one trial. Use as a context manager so the run always ends.

    Inside ``with tracker.start_trial(trial) as run:`` an ``optuna.TrialPruned`` ends the
    run KILLED (its message as ``lrtune.reason``), another exception FAILED (its one-line
    message), KeyboardInterrupt KILLED; a clean exit FINISHED. Exceptions are re-raised.

    Metrics go through ``writer`` (the tracker's; by default one of the run's own): logging
    returns at once, and ending the run first waits until they are stored.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        *,
        number: int,
        writer: BatchWriter | None = None,
        end_in_background: bool = False,
    ) -> None:
        self.client = client
        self.run_id = run_id
        self.number = number
        self.state = "RUNNING"
        self.writer = writer if writer is not None else BatchWriter(client)
        self.end_in_background = end_in_background

    def log_epoch(
        self,
        *,
        epoch: int,
        train_loss: float,
        val_loss: float,
        metrics: Mapping[str, float],
        lrs: Sequence[float],
        first_step: int,
    ) -> None:
        """Log one epoch: ``train_loss``, ``val_loss``, ``val_<name>`` at step ``epoch``, and ``lr``
        at steps ``first_step``, ``first_step + 1``, ... (non-finite values skipped).

        The metrics are queued and sent in the background (in one request, or merged with the
        epochs queued next to them); this never waits for the store.
        """
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        points: list[tuple[str, float | None, int]] = [
            ("train_loss", train_loss, epoch),
            ("val_loss", val_loss, epoch),
            *((f"val_{name}", value, epoch) for name, value in metrics.items()),
            *(("lr", lr, first_step + i) for i, lr in enumerate(lrs)),
        ]
        batch = [
            Metric(key, float(value), now, int(step))
            for key, value, step in points
            if value is not None and math.isfinite(value)
        ]
        self.writer.log(self.run_id, metrics=batch)

    def log_values(self, values: Mapping[str, float | None], *, step: int) -> None:
        """Queue single metric values at ``step`` (None and non-finite values skipped); never waits."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [
            Metric(key, float(value), now, int(step))
            for key, value in values.items()
            if value is not None and math.isfinite(value)
        ]
        self.writer.log(self.run_id, metrics=batch)

    def flush(self) -> None:
        """Wait until everything logged so far is stored (ending the run does this first)."""
        self.writer.flush()

    def finish(self, state: str, *, reason: str | None = None, force: bool = False) -> None:
        """End the run: ``"COMPLETE"`` → FINISHED, ``"PRUNED"`` → KILLED, ``"FAIL"`` → FAILED.

        A run already ended is left alone unless ``force`` is set.
        """
        if state not in RUN_STATUS:
            raise UsageError(f"unknown trial state {state=}; known: {', '.join(RUN_STATUS)}")
        self._end(RUN_STATUS[state], state=state, reason=reason, force=force)

    def kill(self, reason: str) -> None:
        """End the run KILLED, with trial state FAIL (an interrupted trial, run again later)."""
        self._end("KILLED", state="FAIL", reason=reason)

    def _end(self, status: str, *, state: str, reason: str | None, force: bool = False) -> None:
        if self.state != "RUNNING" and not force:
            self.flush()
            return
        from mlflow.entities import RunTag

        tags = [RunTag("lrtune.state", state)]
        if reason:
            tags.append(RunTag("lrtune.reason", mask_secrets(reason)[:_MAX_TAG_LENGTH]))
        if self.end_in_background:  # the writer ends the run after sending what was queued for it
            self.writer.log(self.run_id, tags=tags)
            self.writer.end_run(self.run_id, status)
            self.state = state
            return
        # The tags join the last queued metrics in one request; everything is stored before the end.
        failures = self.writer.failures
        self.writer.log(self.run_id, tags=tags)
        self.flush()
        if self.writer.failures != failures:  # something was lost: send the tags here, errors raised
            self.client.log_batch(self.run_id, tags=tags)
        self.client.set_terminated(self.run_id, status=status)
        self.state = state

    def __enter__(self) -> TrialRun:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        import optuna

        try:
            if exc is None:
                self.finish("COMPLETE")
            elif isinstance(exc, optuna.TrialPruned):
                self.finish("PRUNED", reason=_message(exc) or "pruned")
            elif isinstance(exc, Exception):
                self.finish("FAIL", reason=f"{type(exc).__name__}: {one_line(exc)}")
            else:  # KeyboardInterrupt, SystemExit: Optuna records FAIL, MLflow shows KILLED
                self.kill(
                    f"interrupted ({type(exc).__name__}: {exc})"
                    if str(exc)
                    else f"interrupted ({type(exc).__name__})"
                )
        except Exception as log_error:
            if exc is None:
                raise
            logger.warning("could not end MLflow run %s: %s", self.run_id, mask_secrets(str(log_error)))


def _message(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else ""


def _retried_from(trial: optuna.Trial | FrozenTrial) -> int | None:
    """The number of the trial this one retries (Optuna's heartbeat retry), or None."""
    attrs: Mapping[str, Any] | None = getattr(trial, "system_attrs", None)
    if attrs is None:  # a live optuna.Trial: its snapshot from when it started, else the storage
        snapshot = getattr(trial, "_cached_frozen_trial", None)
        attrs = getattr(snapshot, "system_attrs", None)
    if attrs is None:
        storage = getattr(trial, "storage", None)
        trial_id = getattr(trial, "_trial_id", None)
        attrs = storage.get_trial_system_attrs(trial_id) if storage is not None else {}
    value = attrs.get("failed_trial")
    return int(value) if value is not None else None


def _masked_copy(path: Path, scratch: Path) -> Path:
    """``path`` itself, or a copy in ``scratch`` with secrets masked when a text file holds one."""
    if path.suffix.lower() not in _TEXT_SUFFIXES or path.stat().st_size > _MAX_SCANNED_BYTES:
        return path
    text = path.read_text(encoding="utf-8", errors="replace")
    masked = mask_secrets(text)
    if masked == text:
        return path
    folder = scratch / f"masked-{len(list(scratch.iterdir()))}"
    folder.mkdir()
    copy = folder / path.name
    copy.write_text(masked, encoding="utf-8")
    return copy


__all__ = ["PARENT_ATTR", "RUN_STATUS", "StudyTracker", "TrialRun"]
