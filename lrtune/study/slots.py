"""Exact trial totals across workers: the trials still missing are WAITING slots that workers pop.

A study of ``total`` trials holds at most ``total`` trials that are finished (COMPLETE or PRUNED),
running or waiting. :func:`top_up` adds the missing ones as WAITING trials with no params (under
a lock that serialises the top-ups of all workers: a PostgreSQL or MySQL advisory lock, a file
lock beside an SQLite file), and :class:`SlotStudy` runs only such slots: its ``ask`` pops a
WAITING trial — atomically: on an RDB storage the state change runs under a row lock, so two
workers never pop the same slot — and never creates a trial of its own. The sampler samples
each popped slot as it would a new trial (TPE's constant liar sees the running ones).

A worker that dies mid-trial stops its heartbeat; once the grace period has passed,
:func:`fail_stale` marks its trial FAIL and Optuna's retry callback (see
:mod:`lrtune.study.storage`) enqueues a copy with the same params, which the next worker pops. A
worker that finds no slot while trials of other workers still run waits for them (every
``poll`` seconds), so that a crash of one of them is re-run by a live worker; it stops when no
trial is left running or waiting.

The mechanism knows nothing of lrtune's objective: any study (a search, or the retrain jobs of a
confirmation study) can use :func:`run_slots`.

Example:
    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> study = optuna.create_study()
    >>> run_slots(study, lambda trial: trial.suggest_float("x", 0, 1), total=3)
    3
    >>> run_slots(study, lambda trial: trial.suggest_float("x", 0, 1), total=3)
    0
    >>> len(study.trials)
    3
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

SLOT_ATTR = "lrtune_slot"
"""System attribute marking a trial created by :func:`top_up` (value: the total it was made for)."""


def done_states() -> tuple[Any, ...]:
    """The trial states that count towards a total: COMPLETE and PRUNED (FAIL is run again)."""
    import optuna

    return (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats (so that crashed trials can be detected)."""
    from optuna.storages import BaseStorage

    storage: BaseStorage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    return interval is not None


def fail_stale(study: optuna.Study, *, total: int | None = None) -> int:
    """Mark FAIL the running trials whose heartbeat is older than the grace period; returns how many.

    Each gets the storage's stale-trial callback (lrtune's storage enqueues a retry with the same
    params), unless ``total`` is given and the study holds that many finished, running and
    waiting trials already (a retry would be a trial beyond the total). A storage without
    heartbeats has no stale trials.
    """
    import copy

    import optuna

    if not heartbeat_enabled(study):
        return 0
    storage: Any = study._storage  # a heartbeat storage (checked above)
    failed: list[int] = []
    for trial_id in storage._get_stale_trial_ids(study._study_id):  # the heartbeat storages' interface
        try:
            if storage.set_trial_state_values(trial_id, state=optuna.trial.TrialState.FAIL):
                failed.append(trial_id)
        except optuna.exceptions.UpdateFinishedTrialError:
            pass  # another worker failed it first
    retry = storage.get_heartbeat_stale_trial_callback()
    numbers = []
    for trial_id in failed:
        frozen = copy.deepcopy(storage.get_trial(trial_id))
        numbers.append(frozen.number)
        if retry is not None and (total is None or _live(study) < total):
            retry(study, frozen)
    if numbers:
        logger.warning(
            "study %r: trial%s %s stopped sending heartbeats (its worker died); marked FAIL%s",
            study.study_name,
            "s" if len(numbers) > 1 else "",
            ", ".join(str(n) for n in sorted(numbers)),
            ", to be run again" if total is None or _live(study) <= total else "",
        )
    return len(failed)


def _live(study: optuna.Study) -> int:
    """Trials that are finished, running or waiting: the slots taken."""
    import optuna

    states = (*done_states(), optuna.trial.TrialState.RUNNING, optuna.trial.TrialState.WAITING)
    return len(study.get_trials(deepcopy=False, states=states))


def top_up(study: optuna.Study, total: int) -> int:
    """Add WAITING slots until finished + running + waiting trials make ``total``; returns how many.

    Runs under :func:`study_lock`, so workers topping up at once add the missing slots once.
    """
    import optuna

    states = optuna.trial.TrialState
    with study_lock(study):
        missing = total - _live(study)
        for _ in range(max(0, missing)):
            study.add_trial(optuna.trial.create_trial(state=states.WAITING, system_attrs={SLOT_ATTR: total}))
    return max(0, missing)


def pop_slot(study: optuna.Study) -> int | None:
    """Claim a WAITING trial (its state becomes RUNNING); returns its id, or None when none is left.

    On PostgreSQL and MySQL the state change runs under a row lock. SQLite has none (SQLAlchemy's
    SQLite driver reads the row outside the writing transaction, so two processes could both see
    it WAITING): there the pop runs under :func:`study_lock`.
    """
    if _dialect(study) == "sqlite":
        with study_lock(study):
            return _pop(study)
    return _pop(study)


def _dialect(study: optuna.Study) -> str | None:
    engine = getattr(getattr(study._storage, "_backend", study._storage), "engine", None)
    return None if engine is None else str(engine.dialect.name)


def _pop(study: optuna.Study) -> int | None:
    import optuna

    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
        try:
            if study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.RUNNING):
                return int(trial._trial_id)
        except (optuna.exceptions.UpdateFinishedTrialError, optuna.exceptions.StorageInternalError):
            continue  # another worker took it first (SQLite reports a lost race as an error)
    return None


class NoSlotLeft(Exception):
    """Raised by :meth:`SlotStudy.ask` when the total is reached: ends ``optimize``."""


def _slot_study_class() -> Callable[..., optuna.Study]:
    import optuna

    class SlotStudy(optuna.Study):
        """An :class:`optuna.Study` whose ``ask`` pops WAITING slots only (see the module docstring).

        Args:
            study: the study to run (same name, storage, sampler and pruner).
            total: the study's total of finished trials.
            deadline: ``time.monotonic()`` after which no slot is popped (None: none).
            poll: seconds between two looks while trials of other workers run.
        """

        def __init__(
            self, study: optuna.Study, *, total: int, deadline: float | None = None, poll: float = 10.0
        ) -> None:
            super().__init__(
                study_name=study.study_name,
                storage=study._storage,
                sampler=study.sampler,
                pruner=study.pruner,
            )
            self.total = total
            self.deadline = deadline
            self.poll = poll
            self._waiting_said = False

        def ask(self, fixed_distributions: Any = None) -> optuna.Trial:
            trial_id = pop_slot(self)
            while trial_id is None:
                fail_stale(self, total=self.total)
                top_up(self, self.total)
                trial_id = pop_slot(self)
                if trial_id is not None:
                    break
                running = self.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
                if not running or not heartbeat_enabled(self):
                    raise NoSlotLeft
                if self.deadline is not None and time.monotonic() + self.poll > self.deadline:
                    raise NoSlotLeft
                if not self._waiting_said:
                    self._waiting_said = True
                    logger.info(
                        "study %r: waiting for %d trial(s) of other workers (a crashed one is run again)",
                        self.study_name,
                        len(running),
                    )
                time.sleep(self.poll)
            if hasattr(self, "_thread_local"):
                self._thread_local.cached_all_trials = None  # the sampler reads the trials afresh
            return optuna.Trial(self, trial_id)

    return SlotStudy


def run_slots(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    *,
    total: int,
    timeout: float | None = None,
    callbacks: Sequence[Callable[[optuna.Study, FrozenTrial], None]] = (),
    poll: float | None = None,
) -> int:
    """Run ``study`` until it holds ``total`` finished trials; returns how many this call finished.

    Stale trials are failed first, then the missing trials are added as slots and popped one
    by one (heartbeats are recorded, as ``study.optimize`` does). The trial that an exception
    stops is FAIL (Optuna's rule) and the exception propagates.

    Args:
        total: the study's total of COMPLETE + PRUNED trials.
        timeout: stop popping slots after this many seconds.
        callbacks: Optuna callbacks, called after each trial.
        poll: seconds between two looks while other workers' trials run (default: the
            heartbeat interval, at most 10 s).
    """
    fail_stale(study, total=total)
    if sum(1 for t in study.get_trials(deepcopy=False, states=done_states())) >= total:
        return 0
    top_up(study, total)
    if poll is None:
        interval = getattr(study._storage, "get_heartbeat_interval", lambda: None)()
        poll = min(float(interval or 10), 10.0)
    deadline = time.monotonic() + timeout if timeout is not None else None
    slot_study = _slot_study_class()(study, total=total, deadline=deadline, poll=poll)
    finished = 0

    def count(_: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal finished
        if trial.state in done_states():
            finished += 1

    with contextlib.suppress(NoSlotLeft):
        slot_study.optimize(objective, n_trials=None, timeout=timeout, callbacks=[count, *callbacks])
    return finished


# ------------------------------------------------------------------------------------------- locks
@contextlib.contextmanager
def study_lock(study: optuna.Study) -> Iterator[None]:
    """Hold a lock shared by every worker of ``study`` (across processes and machines).

    PostgreSQL: a session advisory lock; MySQL: ``GET_LOCK``; SQLite: ``flock`` on a file beside
    the database (workers of one machine, as SQLite requires); other storages: none (one process).
    """
    storage = getattr(study._storage, "_backend", study._storage)  # behind Optuna's cache
    engine = getattr(storage, "engine", None)
    if engine is None:
        yield
        return
    key = f"lrtune-slots:{study.study_name}"
    dialect = _dialect(study)
    if dialect == "postgresql":
        from sqlalchemy import text

        number = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big", signed=True)
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": number})
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": number})
                connection.commit()
    elif dialect == "mysql":
        from sqlalchemy import text

        name = hashlib.sha256(key.encode()).hexdigest()[:60]
        with engine.connect() as connection:
            connection.execute(text("SELECT GET_LOCK(:k, -1)"), {"k": name})
            try:
                yield
            finally:
                connection.execute(text("SELECT RELEASE_LOCK(:k)"), {"k": name})
    elif dialect == "sqlite" and engine.url.database not in (None, "", ":memory:"):
        import fcntl

        database = Path(str(engine.url.database))
        with open(database.with_name(database.name + ".lock"), "a+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield


def finished_count(trials: Sequence[FrozenTrial]) -> int:
    """How many of ``trials`` count towards a total (COMPLETE or PRUNED)."""
    states = done_states()
    return sum(1 for t in trials if t.state in states)


__all__ = [
    "SLOT_ATTR",
    "NoSlotLeft",
    "done_states",
    "fail_stale",
    "finished_count",
    "heartbeat_enabled",
    "pop_slot",
    "run_slots",
    "study_lock",
    "top_up",
]
