"""``lrtune study`` as a function: bounds, storage, the objective that trains a task, MLflow.

Example:
    >>> from lrtune.config import build_config
    >>> config = build_config(None, {"n_trials": 6, "epochs": 5, "schedules": "cosine,one_cycle"})
    >>> result = run_study(config)                                          # doctest: +SKIP
    >>> result.best["schedule"]["type"]                                     # doctest: +SKIP
    'one_cycle'
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import statistics
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError
from lrtune.optimizers import OptimizerSpec
from lrtune.study import engine
from lrtune.study.confirm import CONFIRMS_ATTR, SEED_ATTR, run_confirmation
from lrtune.study.racing import RACE_SEEDS, RACING, race_seed
from lrtune.study.record import (
    PLAN_ATTR,
    RUN_ATTR,
    StudyRecord,
    finder_results,
    incompatible,
)
from lrtune.study.selection import EPOCHS_ATTR, VAL_LOSS_ATTR
from lrtune.study.storage import check_storage_url, open_storage

if TYPE_CHECKING:
    import optuna

    from lrtune.config import StudyConfig
    from lrtune.space import LRBounds
    from lrtune.tasks import Task
    from lrtune.tracking import StudyTracker, TrialRun
    from lrtune.trainer import EpochResult, TrainSettings

logger = logging.getLogger(__name__)

Notify = Callable[[str], None]


def objective_of(task: Task) -> tuple[str, str]:
    """The objective's name and direction: ``val_<metric>`` by the task's ``metric_mode``, else ``val_loss``.

    Example:
        >>> from lrtune.tasks import load_task
        >>> objective_of(load_task("digits"))
        ('val_accuracy', 'maximize')
    """
    from lrtune.tasks import metric_name

    name = metric_name(task)
    if name is None:
        return "val_loss", "minimize"
    return f"val_{name}", "maximize" if task.metric_mode == "max" else "minimize"


def run_study(
    config: StudyConfig,
    *,
    callbacks: Sequence[engine.TrialCallback] = (),
    confirm_callbacks: Sequence[engine.TrialCallback] = (),
    notify: Notify | None = None,
) -> engine.StudyOutcome:
    """Run (or resume) the study ``config`` describes until it holds ``config.n_trials`` trials,
    then confirm its best trials and the baseline on fresh seeds (``config.confirm``).

    Every input is checked before anything is created; a resumed study keeps the settings it
    was created with (see :data:`lrtune.study.record.FIXED_SETTINGS`) and its stored bounds.

    Args:
        config: the study's settings.
        callbacks: Optuna callbacks called after every trial (e.g. to print progress).
        confirm_callbacks: Optuna callbacks called after every confirmation run (trials of the
            companion study, see :mod:`lrtune.study.confirm`).
        notify: receives one line per stage (range test, start); default: logged at INFO.

    Returns:
        Where the study stands now.
    """
    from lrtune.data import resolve_device
    from lrtune.tasks import load_task
    from lrtune.tracking import TrackingSettings
    from lrtune.trainer import TrainSettings

    say = notify or logger.info
    study_name = str(config.study_name)
    given_bounds: LRBounds | None = None
    given_finder: dict[str, Any] = {}
    if config.bounds != "auto":
        if config.optimizer == "search":
            raise UsageError(
                "with --optimizer search every optimizer needs its own range test; use --bounds auto"
            )
        given_bounds, given_finder = _read_bounds(config.bounds)

    tracking = TrackingSettings(tracking_uri=config.tracking_uri, experiment=str(config.experiment))
    check_storage_url(config.storage)
    resolve_device(config.device)
    task = load_task(config.task, data_dir=config.data_dir)
    train_settings = TrainSettings(
        epochs=config.epochs,
        seed=config.seed,
        device=config.device,
        amp=config.amp,
        batch_size=config.batch_size,
    )
    batch_size = config.batch_size or task.batch_size
    metric, direction = objective_of(task)
    if config.param_groups:  # a pattern that matches nothing fails now, before any work
        from lrtune.parts import specs_from_mapping, split_parameters

        split_parameters(task.model(), specs_from_mapping(config.param_groups))

    def record_with(bounds: Mapping[str, LRBounds], source: str) -> StudyRecord:
        return StudyRecord(
            task=config.task,
            epochs=config.epochs,
            steps_per_epoch=math.ceil(len(task.train) / batch_size),  # type: ignore[arg-type]
            batch_size=batch_size,
            metric=metric,
            direction=direction,
            schedules=config.schedules,
            optimizers=config.optimizers,
            bounds=bounds,
            weight_decay=config.weight_decay,
            lr_dropout=config.lr_dropout,
            warmup_max_fraction=config.warmup_max_fraction,
            bounds_source=source,
            param_groups=config.param_groups,
            group_factor_range=config.group_factor_range,
        )

    storage = open_storage(
        config.storage, heartbeat_interval=config.heartbeat_interval, grace_period=config.grace_period
    )
    stored, attrs, trials = engine.inspect_existing(storage, study_name)
    if stored is not None:
        fallback = next(iter(stored.bounds.values()))  # only so that a changed optimizer list compares
        new = record_with(
            {name: given_bounds or stored.bounds.get(name, fallback) for name in config.optimizers},
            config.bounds,
        )
        differences = stored.conflicts(new, compare_bounds=given_bounds is not None)
        if differences:
            raise incompatible(study_name, differences)
        if engine.count_done(trials) >= config.n_trials and _confirmation_complete(
            storage, study_name, config
        ):
            import optuna

            from lrtune.tracking import StudyTracker

            say(f"study {study_name!r} already has {config.n_trials} finished trials; nothing to run")
            study = optuna.load_study(study_name=study_name, storage=storage)
            engine.close_finished(
                study,
                StudyTracker(tracking, study_name=study_name),
                total=config.n_trials,
                config_params=config.to_dict(),
            )
            return engine.outcome(
                study,
                stored,
                study_name=study_name,
                storage=config.storage,
                n_trials=config.n_trials,
                added=0,
                tracking=tracking,
            )

    from lrtune.tracking import StudyTracker

    tracker = StudyTracker(tracking, study_name=study_name, end_in_background=True)
    _ = tracker.client  # a bad MLflow store fails here, before any work

    with tempfile.TemporaryDirectory(prefix="lrtune-study-") as scratch:
        finder_files: dict[str, list[Path]] = {}
        if stored is not None:
            record, finder = stored, finder_results(attrs)
        elif given_bounds is not None:
            record = record_with({config.optimizer: given_bounds}, config.bounds)
            finder = {config.optimizer: given_finder}
        else:
            bounds, finder, finder_files = _run_finders(config, Path(scratch), say)
            record = record_with(bounds, "auto")

        study, record = engine.open_study(
            storage,
            record,
            study_name=study_name,
            sampler=config.sampler,
            pruner=config.pruner,
            seed=config.seed,
            n_existing=len(trials),
            finder=finder,
            config=config.to_dict(),
        )
        engine.start_tracking(
            study,
            tracker,
            config_params=config.to_dict(),
            finder=finder_results(study.user_attrs) or finder,
            finder_files=finder_files,
        )
    say(
        f"study {study_name!r}: {config.n_trials} trials of {record.epochs} epochs × "
        f"{record.steps_per_epoch} steps, {record.metric} ({record.direction}), "
        f"schedules {', '.join(record.schedules)}; " + _pruning_line(config.pruner, record)
    )
    objective = TaskObjective(
        _prepared(task),
        record,
        tracker=tracker,
        settings=train_settings,
        seed=config.seed,
        pruner=config.pruner,
    )
    try:
        added = engine.run_trials(
            study,
            objective,
            n_trials=config.n_trials,
            timeout=config.timeout,
            callbacks=[tracker, *callbacks],
        )
        if (
            config.confirmation.enabled
            and engine.count_done(study.get_trials(deepcopy=False)) >= config.n_trials
        ):
            confirmation = config.confirmation
            say(
                f"confirming up to {confirmation.top} best trials and the baseline on "
                f"{confirmation.seeds} fresh seeds each"
            )
            objective.plans.update(
                {
                    t.number: dict(t.user_attrs[PLAN_ATTR])
                    for t in study.get_trials()
                    if PLAN_ATTR in t.user_attrs
                }
            )
            run_confirmation(
                study, objective.confirm, confirmation, seed=config.seed, callbacks=confirm_callbacks
            )
    except KeyboardInterrupt:  # Ctrl-C, SIGTERM: the trial is FAIL and its run KILLED already
        engine.stop_tracking(study, tracker)
        raise
    engine.finish_tracking(study, tracker, record)
    return engine.outcome(
        study,
        record,
        study_name=study_name,
        storage=config.storage,
        n_trials=config.n_trials,
        added=added,
        tracking=tracking,
    )


class TaskObjective:
    """The objective of a study over a task: sample a plan, train it, log and report every epoch.

    The objective value is the last epoch's validation metric (``val_loss`` without a metric),
    so a schedule is judged by where it ends; with the ``racing`` pruner it is the mean of that
    over the seeds the trial trained (:mod:`lrtune.study.racing`). A diverged epoch (NaN/inf or a
    loss explosion, :class:`lrtune.trainer.EpochResult`) prunes the trial with its reason; the
    study goes on. Each trial records its final validation loss (``val_loss``, the tie-breaker of
    :mod:`lrtune.study.selection`) and the epochs it trained (``epochs_trained``, its cost).

    Args:
        task: the task, loaded once per process (every trial builds a fresh model).
        record: the study's settings and search space.
        tracker: logs each trial to its MLflow child run.
        settings: how trials train; each trial's seed is ``seed + trial.number``.
        seed: the study's base seed.
        pruner: the pruner's name, for the reason of a pruned trial.
    """

    def __init__(
        self,
        task: Task,
        record: StudyRecord,
        *,
        tracker: StudyTracker,
        settings: TrainSettings,
        seed: int,
        pruner: str,
    ) -> None:
        self.task = task
        self.record = record
        self.tracker = tracker
        self.settings = settings
        self.seed = seed
        self.pruner = pruner
        #: Study trial number → its plan, for :meth:`confirm` (filled before confirmation).
        self.plans: dict[int, dict[str, Any]] = {}

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        from lrtune.space import sample

        record = self.record
        plan = sample(
            trial, record.space, total_steps=record.total_steps, steps_per_epoch=record.steps_per_epoch
        )
        trial.set_user_attr(PLAN_ATTR, plan.to_dict())
        seed = (self.seed + trial.number) % 2**32
        spent: list[int] = []  # epochs each training run of this trial trained
        with _note_interrupted(trial.number), self.tracker.start_trial(trial, params=trial.params) as run:
            trial.set_user_attr(RUN_ATTR, run.run_id)
            try:
                if self.pruner == RACING:
                    value = self._race(trial, run, plan.to_dict(), seed=seed, counted=spent)
                else:
                    hook = _EpochHook(
                        trial, run, self.task, metric=record.metric, pruner=self.pruner, epochs=record.epochs
                    )
                    final = self._fit(plan.to_dict(), seed=seed, hook=hook, counted=spent)
                    trial.set_user_attr(VAL_LOSS_ATTR, _finite_or_none(final.val_loss))
                    value = hook.value(final)
            except optuna.TrialPruned:
                trial.set_user_attr(EPOCHS_ATTR, sum(spent))
                raise
            trial.set_user_attr(EPOCHS_ATTR, sum(spent))
            return value

    def _fit(
        self, plan: Mapping[str, Any], *, seed: int, hook: _EpochLogger, counted: list[int]
    ) -> EpochResult:
        """Train ``plan`` with ``seed``, every epoch through ``hook``; the final epoch."""
        from lrtune.parts import from_json
        from lrtune.trainer import fit

        try:
            result = fit(
                self.task,
                optimizer=OptimizerSpec.from_dict(plan["optimizer"]),
                schedule=plan["schedule"],
                settings=dataclasses.replace(self.settings, seed=seed),
                on_epoch=hook,
                param_groups=from_json(plan.get("param_groups") or {}),
            )
        finally:
            counted.append(hook.epochs)
        return result.final()

    def _race(
        self, trial: optuna.Trial, run: TrialRun, plan: Mapping[str, Any], *, seed: int, counted: list[int]
    ) -> float:
        """Train ``plan`` to the end on up to :data:`RACE_SEEDS` seeds, reporting the running mean."""
        record = self.record
        values: list[float] = []
        losses: list[float] = []
        for index in range(RACE_SEEDS):
            hook = _EpochHook(
                trial,
                run if index == 0 else None,
                self.task,
                metric=record.metric,
                pruner=self.pruner,
                epochs=record.epochs,
                report=False,
            )
            final = self._fit(plan, seed=race_seed(base=seed, index=index), hook=hook, counted=counted)
            values.append(hook.value(final))
            losses.append(final.val_loss)
            run.log_values({"race_value": values[-1]}, step=index + 1)
            trial.set_user_attr(VAL_LOSS_ATTR, _finite_or_none(statistics.fmean(losses)))
            engine.report_epoch(
                trial,
                statistics.fmean(values),
                index + 1,
                epochs=RACE_SEEDS,
                pruner=self.pruner,
                metric=record.metric,
                unit="seed",
            )
        return statistics.fmean(values)

    def confirm(self, trial: optuna.Trial) -> float:
        """Retrain study trial ``trial.user_attrs["confirms"]`` with seed ``trial.user_attrs["seed"]``.

        The objective of the companion study (:mod:`lrtune.study.confirm`): the run is logged as a
        child of the study's parent run (``lrtune.role = confirm``), never pruned; a run that
        diverges scores the worst value rather than failing, so it is not retried forever.
        """
        import optuna

        number, seed = trial.user_attrs.get(CONFIRMS_ATTR), trial.user_attrs.get(SEED_ATTR)
        if number is None or seed is None:  # another worker took the last queued run first
            raise optuna.TrialPruned("nothing left to confirm")
        plan = self.plans[int(number)]
        with self.tracker.start_confirm(int(number), seed=int(seed), params=plan_params(plan)) as run:
            hook = _EpochLogger(run, self.task)
            final = self._fit(plan, seed=int(seed), hook=hook, counted=[])
            value = hook.value(final)
            trial.set_user_attr(VAL_LOSS_ATTR, _finite_or_none(final.val_loss))
        if math.isnan(value):
            return -math.inf if self.record.direction == "maximize" else math.inf
        return value


@contextlib.contextmanager
def _note_interrupted(number: int) -> Iterator[None]:
    """Record ``number`` on a :class:`~lrtune.study.interrupts.StudyInterrupted` passing through."""
    from lrtune.study.interrupts import StudyInterrupted

    try:
        yield
    except StudyInterrupted as exc:
        exc.trials.append(number)
        raise


class _EpochLogger:
    """``fit``'s ``on_epoch`` for a run that is only logged: train/val loss, the metric, the LRs.

    With ``run`` None nothing is logged (a racing trial logs the curves of its first seed only).
    """

    def __init__(self, run: TrialRun | None, task: Task) -> None:
        from lrtune.tasks import metric_name

        self.run = run
        self.metric_name = metric_name(task)
        self.epochs = 0  # epochs trained so far, for the study's budget

    def value(self, epoch: EpochResult) -> float:
        if self.metric_name is None or epoch.val_metric is None:
            return float(epoch.val_loss)
        return float(epoch.val_metric)

    def __call__(self, epoch: EpochResult) -> None:
        self.epochs += 1
        if self.run is None:
            return
        metrics = (
            {self.metric_name: epoch.val_metric} if self.metric_name and epoch.val_metric is not None else {}
        )
        self.run.log_epoch(
            epoch=epoch.epoch,
            train_loss=epoch.train_loss,
            val_loss=epoch.val_loss,
            metrics=metrics,
            lrs=epoch.lrs,
            first_step=epoch.steps - len(epoch.lrs),
        )


class _EpochHook(_EpochLogger):
    """``fit``'s ``on_epoch`` for a trial: log the epoch, prune on divergence, report to Optuna, prune if told.

    With ``report`` false (racing, which reports per seed) epochs are not reported.
    """

    def __init__(
        self,
        trial: optuna.Trial,
        run: TrialRun | None,
        task: Task,
        *,
        metric: str,
        pruner: str,
        epochs: int,
        report: bool = True,
    ) -> None:
        super().__init__(run, task)
        self.total_epochs = epochs
        self.trial = trial
        self.metric = metric
        self.pruner = pruner
        self.report = report

    def __call__(self, epoch: EpochResult) -> None:
        super().__call__(epoch)
        value = self.value(epoch)
        if epoch.diverged:
            engine.prune(
                self.trial,
                f"diverged in epoch {epoch.epoch} (train_loss {epoch.train_loss:.4g}, "
                f"val_loss {epoch.val_loss:.4g}); the learning rate is too high",
            )
        if self.report:
            engine.report_epoch(
                self.trial,
                value,
                epoch.epoch,
                epochs=self.total_epochs,
                pruner=self.pruner,
                metric=self.metric,
            )


def _pruning_line(pruner: str, record: StudyRecord) -> str:
    if pruner == "none":
        return "no pruning"
    if pruner == RACING:
        return (
            f"racing: every trial trains its whole schedule; the best third train {RACE_SEEDS} seeds in all"
        )
    return f"{pruner} pruning from epoch {engine.min_resource(record)}"


def plan_params(plan: Mapping[str, Any]) -> dict[str, Any]:
    """A plan as MLflow params: the schedule's keys (``type`` as ``schedule``) and the optimizer's name.

    Example:
        >>> plan_params({"schedule": {"type": "cosine", "base_lr": 0.1}, "optimizer": {"name": "sgd"}})
        {'schedule': 'cosine', 'base_lr': 0.1, 'optimizer': 'sgd'}
    """
    spec = dict(plan["schedule"])
    return {"schedule": spec.pop("type"), **spec, "optimizer": plan["optimizer"]["name"]}


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _confirmation_complete(
    storage: optuna.storages.BaseStorage, study_name: str, config: StudyConfig
) -> bool:
    """Whether the study's confirmation is done for its current search (or not asked for)."""
    import optuna

    from lrtune.study.confirm import choose_candidates, load_confirm_study, read_confirmed, stored_candidates

    if not config.confirmation.enabled:
        return True
    study = optuna.load_study(study_name=study_name, storage=storage)
    chosen = choose_candidates(study, config.confirmation, seed=config.seed)
    if chosen is None:
        return True
    confirm_study = load_confirm_study(study)
    return (
        confirm_study is not None
        and stored_candidates(confirm_study) == chosen
        and read_confirmed(confirm_study) is not None
    )


def _read_bounds(path_text: str) -> tuple[LRBounds, dict[str, Any]]:
    """The bounds in a finder.json (or its folder) and the file's finder keys."""
    from lrtune.space import LRBounds

    bounds = LRBounds.from_finder_json(path_text)
    path = Path(path_text)
    path = path / "finder.json" if path.is_dir() else path
    data = json.loads(path.read_text(encoding="utf-8"))
    return bounds, dict(data)


def _run_finders(
    config: StudyConfig, scratch: Path, say: Notify
) -> tuple[dict[str, LRBounds], dict[str, dict[str, Any]], dict[str, list[Path]]]:
    """One range test per optimizer of the space: bounds, results, and the files each wrote."""
    from lrtune.find_job import FindSettings, run_find
    from lrtune.space import LRBounds

    bounds: dict[str, LRBounds] = {}
    results: dict[str, dict[str, Any]] = {}
    files: dict[str, list[Path]] = {}
    for name in config.optimizers:
        say(f"range test for {name}: {config.finder_repeats}×{config.finder_num_iter} steps")
        found = run_find(
            FindSettings(
                task=config.task,
                optimizer=name,
                num_iter=config.finder_num_iter,
                repeats=config.finder_repeats,
                batch_size=config.batch_size,
                seed=config.seed,
                device=config.device,
                data_dir=config.data_dir,
                out=scratch / name,
                tracking=None,
                amp=config.amp,
            )
        )
        result = found.result
        try:
            bounds[name] = LRBounds(
                lr_low=result.lr_low, lr_high=result.lr_high, suggested_lr=result.suggested_lr
            )
        except UsageError as exc:
            flags = ", ".join(result.flags) or "none"
            raise UsageError(
                f"the range test for {name} found no usable learning-rate region ({exc}; flags: {flags}); "
                "inspect it with `lrtune find`, then pass --bounds FINDER_JSON"
            ) from None
        results[name] = result.to_dict()
        files[name] = [found.json_path, found.plot_path]
        say(
            f"  {name}: suggested_lr {result.suggested_lr:.3g}, bounds {result.lr_low:.3g}..{result.lr_high:.3g}"
        )
    return bounds, results, files


def _prepared(task: Task) -> Task:
    """The task with its datasets as tensors when they fit in memory, so no trial decodes them again."""
    from lrtune.data import as_tensor_dataset

    changes: dict[str, Any] = {}
    for split in ("train", "val"):
        with contextlib.suppress(Exception):  # streaming stays the fallback
            dataset = as_tensor_dataset(getattr(task, split))
            if dataset is not None:
                changes[split] = dataset
    return dataclasses.replace(task, **changes) if changes else task


__all__ = ["TaskObjective", "objective_of", "run_study"]
