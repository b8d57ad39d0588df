"""Tune a schedule for your own training loop: lrtune proposes, your code trains and reports.

Example:
    >>> import math
    >>> from lrtune.space import LRBounds
    >>> from lrtune.study import tune
    >>> def train(schedule, optimizer, report):
    ...     # Build the optimizer from ``optimizer`` ({"name": "sgd", "momentum": 0.9}) and the
    ...     # scheduler with lrtune.schedules.build(schedule, opt, total_steps); train; report.
    ...     loss = 1.0
    ...     for epoch in range(1, 4):
    ...         loss = abs(math.log10(schedule["base_lr"] / 0.05)) + 1.0 / epoch
    ...         report(epoch, loss)  # may raise optuna.TrialPruned: let it propagate
    ...     return loss
    >>> study = tune(train, bounds=LRBounds(1e-3, 1.0, 0.05), schedules=("cosine", "constant"),
    ...              n_trials=4, epochs=3, steps_per_epoch=50)
    >>> study.best_trial.user_attrs["plan"]["schedule"]["type"] in ("cosine", "constant")
    True
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError
from lrtune.space import LRBounds
from lrtune.study import engine
from lrtune.study.racing import RACING
from lrtune.study.record import PLAN_ATTR, RUN_ATTR, StudyRecord, incompatible

if TYPE_CHECKING:
    import optuna

    from lrtune.tracking import StudyTracker, TrackingSettings, TrialRun

logger = logging.getLogger(__name__)

Report = Callable[[int, float], None]
TrainFn = Callable[[dict[str, Any], dict[str, Any], Report], float]


def tune(
    train_fn: TrainFn,
    *,
    bounds: LRBounds | Mapping[str, LRBounds],
    epochs: int,
    steps_per_epoch: int,
    schedules: Sequence[str] | None = None,
    optimizer: str = "sgd",
    n_trials: int = 20,
    timeout: float | None = None,
    metric: str = "val_loss",
    direction: str = "minimize",
    storage: str | None = None,
    study_name: str = "lrtune-tune",
    sampler: str = "tpe",
    pruner: str = "hyperband",
    seed: int = 0,
    tracking: TrackingSettings | None = None,
    callbacks: Sequence[engine.TrialCallback] = (),
) -> optuna.Study:
    """Search schedules for ``train_fn``, your training loop.

    Args:
        train_fn: ``train_fn(schedule, optimizer, report) -> value``: ``schedule`` is a spec for
            :func:`lrtune.schedules.build` over ``epochs × steps_per_epoch`` steps, ``optimizer`` is
            ``{"name": ..., **torch kwargs}``; call ``report(epoch, value)`` after each epoch (it
            reports to Optuna, logs to MLflow, and raises ``optuna.TrialPruned`` to stop a trial —
            let it propagate); return the final value. A non-finite value prunes the trial.
        bounds: the LR bounds (of ``optimizer``), or optimizer name → bounds to search optimizers.
        epochs: epochs per trial (the pruner's resource).
        steps_per_epoch: optimizer steps per epoch.
        schedules: schedule types to search (default: every searchable type).
        optimizer: the optimizer when ``bounds`` is one :class:`LRBounds`.
        n_trials: the study's total (re-running adds only the missing ones).
        timeout: stop starting trials after this many seconds.
        metric: the name of the reported value (an MLflow metric of each trial run).
        direction: ``minimize`` or ``maximize``.
        storage: an RDB URL to keep and resume the study; None keeps it in memory.
        study_name: the study's name.
        sampler: a name of :data:`lrtune.config.SAMPLERS`.
        pruner: a name of :data:`lrtune.config.PRUNERS`.
        seed: the sampler's seed.
        tracking: MLflow store and experiment; None logs nothing.
        callbacks: Optuna callbacks called after every trial.

    Returns:
        The Optuna study; each trial's ``user_attrs["plan"]`` holds its schedule and optimizer.
        Trial 0 is the strong default (a cosine from the bounds' ``suggested_lr``, user attribute
        ``role = baseline``). Unlike ``lrtune study``, ``tune`` does not confirm the winner on
        fresh seeds: ``train_fn`` takes no seed. Retrain the best few plans yourself before
        trusting a small difference.
    """
    from lrtune.config import DEFAULT_SCHEDULES, PRUNERS, SAMPLERS

    if isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 1:
        raise UsageError(f"n_trials must be an integer >= 1, got {n_trials=!r}")
    for name, value, known in (("sampler", sampler, SAMPLERS), ("pruner", pruner, PRUNERS)):
        if value not in known:
            raise UsageError(f"unknown {name} {value!r}; choose one of: {', '.join(known)}")
    if pruner == RACING:
        raise UsageError(
            "the racing pruner trains each trial on several seeds itself, which a train_fn of your own "
            "cannot be asked to do; use hyperband, median or none"
        )
    if not callable(train_fn):
        raise UsageError(f"train_fn must be callable, got {type(train_fn).__name__}")
    by_optimizer = {optimizer: bounds} if isinstance(bounds, LRBounds) else dict(bounds)
    if not by_optimizer:
        raise UsageError("bounds must give the learning-rate bounds of at least one optimizer")
    record = StudyRecord(
        task="python",
        epochs=epochs,
        steps_per_epoch=steps_per_epoch,
        batch_size=None,
        metric=metric,
        direction=direction,
        schedules=tuple(schedules) if schedules is not None else DEFAULT_SCHEDULES,
        optimizers=tuple(by_optimizer),
        bounds=by_optimizer,
        bounds_source="python",
    )
    rdb = None
    n_existing = 0
    if storage is not None:
        from lrtune.study.storage import open_storage

        rdb = open_storage(storage)
        stored, _, trials = engine.inspect_existing(rdb, study_name)
        if stored is not None:
            differences = stored.conflicts(record, compare_bounds=True)
            if differences:
                raise incompatible(study_name, differences)
        n_existing = len(trials)
    config = {"n_trials": n_trials, "sampler": sampler, "pruner": pruner, "seed": seed, "storage": storage}
    study, record = engine.open_study(
        rdb,
        record,
        study_name=study_name,
        sampler=sampler,
        pruner=pruner,
        seed=seed,
        n_existing=n_existing,
        finder={},
        config=config,
    )
    tracker: StudyTracker | None = None
    if tracking is not None and engine.count_done(study.get_trials(deepcopy=False)) < n_trials:
        from lrtune.tracking import StudyTracker

        tracker = StudyTracker(tracking, study_name=study_name, end_in_background=True)
        engine.start_tracking(study, tracker, config_params=config, finder={})
    objective = _Objective(train_fn, record, tracker=tracker, pruner=pruner)
    engine.run_trials(
        study,
        objective,
        n_trials=n_trials,
        timeout=timeout,
        callbacks=[*([tracker] if tracker is not None else []), *callbacks],
    )
    if tracker is not None:
        engine.finish_tracking(study, tracker, record)
    return study


class _Objective:
    def __init__(
        self, train_fn: TrainFn, record: StudyRecord, *, tracker: StudyTracker | None, pruner: str
    ) -> None:
        self.train_fn = train_fn
        self.record = record
        self.tracker = tracker
        self.pruner = pruner

    def __call__(self, trial: optuna.Trial) -> float:
        from lrtune.space import sample

        record = self.record
        plan = sample(
            trial, record.space, total_steps=record.total_steps, steps_per_epoch=record.steps_per_epoch
        )
        trial.set_user_attr(PLAN_ATTR, plan.to_dict())
        run_context: contextlib.AbstractContextManager[TrialRun | None] = (
            self.tracker.start_trial(trial, params=trial.params)
            if self.tracker is not None
            else contextlib.nullcontext()
        )
        with run_context as run:
            if run is not None:
                trial.set_user_attr(RUN_ATTR, run.run_id)
            report = _Reporter(trial, run, metric=record.metric, pruner=self.pruner, epochs=record.epochs)
            value = self.train_fn(dict(plan.schedule), plan.optimizer.to_dict(), report)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"train_fn must return a number, got {type(value).__name__}")
            if not math.isfinite(value):
                report.prune(f"train_fn returned {value}; the learning rate is likely too high")
        return float(value)


class _Reporter:
    """The ``report(epoch, value)`` handed to ``train_fn``."""

    def __init__(
        self, trial: optuna.Trial, run: TrialRun | None, *, metric: str, pruner: str, epochs: int
    ) -> None:
        self.epochs = epochs
        self.trial = trial
        self.run = run
        self.metric = metric
        self.pruner = pruner

    def __call__(self, epoch: int, value: float) -> None:
        value = float(value)
        if self.run is not None:
            self.run.log_values({self.metric: value}, step=int(epoch))
        engine.report_epoch(
            self.trial, value, int(epoch), epochs=self.epochs, pruner=self.pruner, metric=self.metric
        )

    def prune(self, reason: str) -> None:
        engine.prune(self.trial, reason)


__all__ = ["Report", "TrainFn", "tune"]
