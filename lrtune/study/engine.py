"""The steps every lrtune study takes, shared by :func:`~lrtune.study.run_study` and :func:`~lrtune.study.tune`.

Create or resume the study (its :class:`~lrtune.study.record.StudyRecord` stored once, the baseline
trial enqueued once), run only the trials still missing from ``n_trials``, and give the MLflow
parent run its finder result, study plots and best spec.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from lrtune.errors import UsageError
from lrtune.study.record import (
    CONFIG_ATTR,
    FINDER_ATTR_PREFIX,
    REASON_ATTR,
    RECORD_ATTR,
    StudyRecord,
    finder_attr,
    read_record,
)
from lrtune.study.selection import BASELINE_ROLE, ROLE_ATTR
from lrtune.study.storage import find_study_id
from lrtune.tracking import mask_secrets

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

    from lrtune.tracking import StudyTracker, TrackingSettings

logger = logging.getLogger(__name__)

TrialCallback = Callable[["optuna.Study", "FrozenTrial"], None]


@dataclass(frozen=True)
class StudyOutcome:
    """Where a study stands after a run.

    Args:
        study_name: the study.
        storage: its storage URL, password masked.
        metric, direction: the objective.
        n_trials: the total asked for.
        added: trials this run finished.
        complete, pruned, failed, running, waiting: trials in each state now.
        best: the best file (:func:`lrtune.study.best.best_file`), or None without a complete trial.
        best_trial: the winning trial's number, or None.
        confirmed, confirm_planned: confirmation runs finished and planned (0, 0 before confirmation).
        tracking_uri: the MLflow store, password masked (None without tracking).
        experiment: the MLflow experiment (None without tracking).
        parent_run_id: the MLflow parent run (None when this run logged nothing).
    """

    study_name: str
    storage: str
    metric: str
    direction: str
    n_trials: int
    added: int
    complete: int
    pruned: int
    failed: int
    running: int
    waiting: int
    best: dict[str, Any] | None
    best_trial: int | None
    confirmed: int
    confirm_planned: int
    tracking_uri: str | None
    experiment: str | None
    parent_run_id: str | None


def done_states() -> tuple[Any, ...]:
    """The trial states that count towards ``n_trials``: COMPLETE and PRUNED (FAIL is re-run)."""
    from lrtune.study.slots import done_states as states

    return states()


def count_done(trials: Sequence[FrozenTrial]) -> int:
    """How many of ``trials`` count towards ``n_trials``."""
    from lrtune.study.slots import finished_count

    return finished_count(trials)


def inspect_existing(
    storage: optuna.storages.BaseStorage, study_name: str
) -> tuple[StudyRecord | None, dict[str, Any], list[FrozenTrial]]:
    """Read an existing study without writing: its record, user attributes and trials.

    Returns ``(None, {}, [])`` when there is no such study.

    Raises:
        UsageError: the study exists and has trials but lrtune did not create it.
    """
    study_id = find_study_id(storage, study_name)
    if study_id is None:
        return None, {}, []
    attrs = dict(storage.get_study_user_attrs(study_id))
    trials = list(storage.get_all_trials(study_id, deepcopy=False))
    record = read_record(attrs)
    if record is None and trials:
        raise UsageError(
            f"study {study_name!r} exists but was not created by lrtune study; choose another --study-name"
        )
    return record, attrs, trials


def min_resource(record: StudyRecord) -> int:
    """The first epoch a pruner may judge a trial at: one past the longest warmup, at most ``epochs``.

    Pruning inside a warmup or a one-cycle rise would punish exactly the schedules that pay off
    late (short-horizon bias, Wu et al. 2018).
    """
    from lrtune.space import longest_warmup_steps

    warmup = longest_warmup_steps(record.space, total_steps=record.total_steps)
    return min(record.epochs, math.ceil(warmup / record.steps_per_epoch) + 1)


def sampler_seed(seed: int, n_existing: int) -> int:
    """The sampler's seed: ``seed`` for a new study, a different stream on every resume.

    A resumed study that re-seeded its sampler with the same seed would propose its first
    random trials again.
    """
    import numpy as np

    if n_existing == 0:
        return seed
    return int(np.random.SeedSequence([seed, n_existing]).generate_state(1)[0])


def open_study(
    storage: optuna.storages.BaseStorage | None,
    record: StudyRecord,
    *,
    study_name: str,
    sampler: str,
    pruner: str,
    seed: int,
    n_existing: int,
    finder: Mapping[str, Mapping[str, Any]],
    config: Mapping[str, Any],
) -> tuple[optuna.Study, StudyRecord]:
    """Create the study or load it; store its record once; enqueue the baseline once.

    Returns the study and the record stored on it. A stored record is never overwritten; workers
    that create one study at the same moment store equal records (the same settings and the
    same seeded range test), and each returns what the study holds after its write.
    """
    import optuna

    from lrtune.config import make_pruner, make_sampler
    from lrtune.space import baseline_params

    study = optuna.create_study(
        storage=storage,
        study_name=study_name,
        sampler=make_sampler(sampler, seed=sampler_seed(seed, n_existing)),
        pruner=make_pruner(pruner, min_resource=min_resource(record), max_resource=record.epochs),
        direction=(
            optuna.study.StudyDirection.MAXIMIZE
            if record.direction == "maximize"
            else optuna.study.StudyDirection.MINIMIZE
        ),
        load_if_exists=True,
    )
    if RECORD_ATTR not in study.user_attrs:
        study.set_user_attr(CONFIG_ATTR, json.loads(mask_secrets(json.dumps(dict(config), default=str))))
        for name, result in finder.items():
            study.set_user_attr(FINDER_ATTR_PREFIX + name, finder_attr(result))
        study.set_user_attr(RECORD_ATTR, record.to_attr())
    stored = read_record(study.user_attrs) or record
    if not study.get_trials(deepcopy=False):
        # Trial 0 is the strong default (a cosine from the finder's suggestion, no warmup), the
        # baseline the winner is confirmed against; with several optimizers, one per optimizer.
        for name in stored.optimizers:
            study.enqueue_trial(
                baseline_params(stored.space, optimizer=name),
                user_attrs={ROLE_ATTR: BASELINE_ROLE},
                skip_if_exists=True,
            )
    return study, stored


def run_trials(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    n_trials: int,
    timeout: float | None,
    callbacks: Sequence[TrialCallback],
) -> int:
    """Run the trials missing from the study's total ``n_trials``; returns how many this call finished.

    Several workers may share the study: the missing trials are WAITING slots that each worker
    pops (:mod:`lrtune.study.slots`), so the study ends with exactly ``n_trials`` complete or
    pruned trials. A trial of a crashed worker is failed once its grace period has passed and
    run again, by a live worker or by the next run.
    """
    from lrtune.study.slots import run_slots

    return run_slots(study, objective, total=n_trials, timeout=timeout, callbacks=callbacks)


# ------------------------------------------------------------------------------------------ MLflow
def start_tracking(
    study: optuna.Study,
    tracker: StudyTracker,
    *,
    config_params: Mapping[str, Any],
    finder: Mapping[str, Mapping[str, Any]],
    finder_files: Mapping[str, Sequence[Path]] | None = None,
) -> str:
    """Find or create the study's parent run (returns its id); a new parent gets the finder result.

    Args:
        tracker: the study's tracker.
        config_params: the parent run's params, when it is created.
        finder: optimizer → stored finder result (``finder.json`` keys).
        finder_files: optimizer → the range test's own files, when this run made them.
    """
    from lrtune.tracking import PARENT_ATTR

    before = study.user_attrs.get(PARENT_ATTR)
    parent = tracker.ensure_parent(study, config_params=config_params)
    if parent != before and finder:
        with _finder_files(finder, finder_files or {}) as files:
            for name, paths in files.items():
                tracker.log_parent_files(paths, artifact_path=None if len(files) == 1 else f"finder-{name}")
    return parent


@contextlib.contextmanager
def _finder_files(
    finder: Mapping[str, Mapping[str, Any]], given: Mapping[str, Sequence[Path]]
) -> Iterator[dict[str, list[Path]]]:
    """The finder files to attach: the range test's own, or rebuilt from the stored result."""
    with tempfile.TemporaryDirectory(prefix="lrtune-finder-") as scratch:
        files: dict[str, list[Path]] = {}
        for name, result in finder.items():
            if given.get(name):
                files[name] = list(given[name])
                continue
            folder = Path(scratch) / name
            folder.mkdir()
            json_path = folder / "finder.json"
            json_path.write_text(json.dumps(dict(result), indent=2) + "\n", encoding="utf-8")
            files[name] = [json_path]
            if result.get("lrs") and result.get("losses"):
                try:
                    from lrtune.finder import FinderResult

                    FinderResult.from_dict(result).plot(folder / "finder.png")
                    files[name].append(folder / "finder.png")
                except Exception as exc:  # a missing plot must not stop a study
                    logger.warning("could not draw the finder curve of %s: %s", name, exc)
        yield files


def finish_tracking(study: optuna.Study, tracker: StudyTracker, record: StudyRecord) -> None:
    """Attach the study plots and the best spec to the parent run; mark it finished.

    The trials are stored already, so a failure here (an MLflow server gone) is logged as a
    warning instead of failing the run; the next run of the study attaches them again.
    """
    try:
        _finish_tracking(study, tracker, record)
    except Exception as exc:
        logger.warning(
            "study %r: could not update the MLflow parent run: %s",
            study.study_name,
            mask_secrets(f"{type(exc).__name__}: {exc}"),
        )


def _finish_tracking(study: optuna.Study, tracker: StudyTracker, record: StudyRecord) -> None:
    from lrtune.plots import write_study_plots
    from lrtune.study.best import best_file

    with tempfile.TemporaryDirectory(prefix="lrtune-plots-") as scratch:
        paths = write_study_plots(study, Path(scratch))
        if paths:
            tracker.log_parent_files(paths, artifact_path="plots")
    try:
        best = best_file(study, record=record)
    except UsageError:
        best = None
    if best is not None:
        tracker.log_best(best, value=float(best["value"]), trial_number=int(best["trial"]))
    tracker.finish_parent(study)


def close_finished(
    study: optuna.Study, tracker: StudyTracker | None, *, total: int, config_params: Mapping[str, Any]
) -> None:
    """For a study that already holds its total: fail stale trials, end their runs, finish the parent.

    Nothing is trained, and nothing is written when no trial was stale (the MLflow store is not
    even opened); MLflow failures are logged as warnings (the trials are stored already).
    """
    from lrtune.study.slots import fail_stale
    from lrtune.tracking import PARENT_ATTR

    if not fail_stale(study, total=total) or tracker is None or PARENT_ATTR not in study.user_attrs:
        return
    try:
        tracker.ensure_parent(study, config_params=config_params)  # ends runs of failed trials
        tracker.finish_parent(study)
    except Exception as exc:
        logger.warning(
            "study %r: could not update the MLflow runs: %s",
            study.study_name,
            mask_secrets(f"{type(exc).__name__}: {exc}"),
        )


def stop_tracking(study: optuna.Study, tracker: StudyTracker) -> None:
    """After an interrupt: send what is queued; end the parent KILLED unless other workers run trials.

    The next run of the study reopens the parent.
    """
    import optuna

    try:
        tracker.kill_open_runs()
        tracker.flush()
        running = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
        if not running and tracker.has_parent:
            tracker.client.set_terminated(tracker.parent_run_id(), status="KILLED")
    except Exception as exc:
        logger.warning(
            "study %r: could not end the MLflow parent run: %s",
            study.study_name,
            mask_secrets(f"{type(exc).__name__}: {exc}"),
        )


def outcome(
    study: optuna.Study,
    record: StudyRecord,
    *,
    study_name: str,
    storage: str,
    n_trials: int,
    added: int,
    tracking: TrackingSettings | None,
) -> StudyOutcome:
    """Summarize where ``study`` stands."""
    import optuna

    from lrtune.study.best import best_file
    from lrtune.study.confirm import confirm_counts
    from lrtune.tracking import PARENT_ATTR

    states = optuna.trial.TrialState
    all_trials = study.get_trials(deepcopy=False)
    count = {state: sum(1 for t in all_trials if t.state == state) for state in states}
    best: dict[str, Any] | None = None
    best_number: int | None = None
    parent = study.user_attrs.get(PARENT_ATTR)
    with contextlib.suppress(UsageError):
        best = best_file(study, record=record)
        best_number = int(best["trial"])
    confirmed, confirm_planned = confirm_counts(study)
    return StudyOutcome(
        study_name=study_name,
        storage=mask_secrets(storage),
        metric=record.metric,
        direction=record.direction,
        n_trials=n_trials,
        added=added,
        complete=count[states.COMPLETE],
        pruned=count[states.PRUNED],
        failed=count[states.FAIL],
        running=count[states.RUNNING],
        waiting=count[states.WAITING],
        best=best,
        best_trial=best_number,
        confirmed=confirmed,
        confirm_planned=confirm_planned,
        tracking_uri=mask_secrets(tracking.tracking_uri) if tracking is not None else None,
        experiment=tracking.experiment if tracking is not None else None,
        parent_run_id=str(parent) if parent is not None else None,
    )


def prune(trial: optuna.Trial, reason: str) -> NoReturn:
    """Prune ``trial``, keeping ``reason`` in its user attrs (and so in the MLflow tag)."""
    import optuna

    trial.set_user_attr(REASON_ATTR, reason)
    raise optuna.TrialPruned(reason)


def report_epoch(
    trial: optuna.Trial,
    value: float,
    epoch: int,
    *,
    epochs: int,
    pruner: str,
    metric: str,
    unit: str = "epoch",
) -> None:
    """Report an epoch's value to Optuna and prune when the pruner says so.

    A non-finite value prunes at once (the loss diverged). After the last epoch the trial is
    done: pruning it then would only lose its result, so the pruner is not asked. ``unit``
    names the resource in the reasons (``seed`` when racing reports one value per seed).
    """
    if not math.isfinite(value):
        prune(trial, f"diverged in {unit} {epoch} ({metric} {value}); the learning rate is too high")
    trial.report(value, epoch)
    if epoch < epochs and trial.should_prune():
        prune(trial, f"pruned by the {pruner} pruner after {unit} {epoch} ({metric} {value:.4g})")


__all__ = [
    "StudyOutcome",
    "close_finished",
    "count_done",
    "done_states",
    "finish_tracking",
    "inspect_existing",
    "min_resource",
    "open_study",
    "outcome",
    "run_trials",
    "sampler_seed",
    "start_tracking",
    "stop_tracking",
]
