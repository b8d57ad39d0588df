"""What lrtune's study bookkeeping costs per trial, against a bare Optuna loop running the same trials.

Both variants train the same trials: the digits data with a wider MLP (64-W-W-10, W calibrated so one trial of
``--epochs`` epochs takes about ``--trial-seconds``; deterministic work, no sleeping), sampled from the same
search space by the same seeded TPE sampler, each trial trained with seed ``seed + trial number`` and reporting
its validation accuracy after every epoch:

- ``bare Optuna``: ``optuna.create_study()`` in memory, no MLflow; the objective samples the plan with
  :func:`lrtune.space.sample`, trains it with :func:`lrtune.trainer.fit`, calls ``trial.report`` and
  ``trial.should_prune`` every epoch; ``study.optimize(objective, n_trials=1)`` per trial.
- ``lrtune``: the study engine's own code path, as ``lrtune study --bounds FINDER_JSON`` runs it:
  :func:`lrtune.study.storage.open_storage` (SQLite, heartbeats), a :class:`lrtune.tracking.study_runs.StudyTracker`
  on an SQLite MLflow store in a temp folder, :func:`lrtune.study.engine.open_study` (record, config and finder
  attributes, the enqueued baseline) and :func:`~lrtune.study.engine.start_tracking` (the parent run) once; then
  per trial :func:`lrtune.study.engine.run_trials` with :class:`lrtune.study.runner.TaskObjective` and the
  tracker as callback (the ``plan`` and run-id attributes, a child run with params, per-epoch ``train_loss``/
  ``val_loss``/``val_accuracy`` and per-step ``lr``, the run's status, the ``objective`` metric); and
  :func:`~lrtune.study.engine.finish_tracking` (study plots, best spec) once at the end.

The two run interleaved, one trial each per round (A B, then B A, ...), after one untimed warm-up round.
The plans of every round are compared: equal plans and equal values mean equal training work. Inside every
trial ``fit`` and its ``on_epoch`` callback are timed, so each trial splits into training and bookkeeping,
and thin timers on the bookkeeping calls (Optuna's ask/sample/report/tell, the tracker's runs and
``log_epoch``) and a counter of SQLite write transactions per database show where the bookkeeping goes.
Reported: medians per trial, the median over rounds of lrtune − bare (the overhead) as a share of a
``--trial-seconds`` trial (goal: <= 5 %), the one-off costs (imports, creating the SQLite and MLflow stores,
the parent run, the plots at the end), the cost of one SQLite commit in the work folder, a cProfile
breakdown by library, and a cross-check with :func:`lrtune.study.run_study` end to end on the same trials.

``--sqlite-tuning`` forces ``journal_mode=WAL`` and ``synchronous=NORMAL`` on every SQLite connection of the
process; lrtune already sets both on its own store files (``lrtune.tracking.sqlite_tuning``), so this now changes little. ``--work-dir /dev/shm/...`` puts the stores on a RAM disk (no fsync at all).

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_study_overhead.py           # about 5 minutes on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_study_overhead.py --sqlite-tuning   # the what-if
    OMP_NUM_THREADS=1 .venv/bin/python scripts/bench_study_overhead.py --quick   # about 1.5 minutes
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import dataclasses
import functools
import json
import math
import os
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import lrtune.space
import lrtune.trainer
from lrtune.config import PRUNERS, StudyConfig, make_pruner, make_sampler
from lrtune.models import mlp
from lrtune.optimizers import OptimizerSpec
from lrtune.space import LRBounds, baseline_params
from lrtune.study import engine
from lrtune.study.record import StudyRecord
from lrtune.study.runner import TaskObjective
from lrtune.tasks import TASKS, Task, load_task
from lrtune.trainer import EpochResult, FitResult, TrainSettings

if TYPE_CHECKING:
    import optuna

GOAL_PERCENT = 5.0
DIGITS_MLP_SCHEDULES = (
    "cosine",
    "one_cycle",
    "cosine_restarts",
    "cyclic",
    "step",
    "exponential",
    "linear",
    "constant",
)
BOUNDS = LRBounds(lr_low=0.003, lr_high=0.1, suggested_lr=0.03)  # a region where no trial diverges
BENCH_TASK = "bench-overhead-digits"
BARE = "bare Optuna (in memory)"
LRTUNE = "lrtune (SQLite + MLflow)"


# --------------------------------------------------------------------------- timing inside a trial


@dataclass
class FitClock:
    """Seconds spent in ``fit`` and in its ``on_epoch`` callback since the last :meth:`reset`."""

    fit: float = 0.0
    callback: float = 0.0

    def reset(self) -> None:
        self.fit = self.callback = 0.0

    @property
    def training(self) -> float:
        return self.fit - self.callback


CLOCK = FitClock()
_REAL_FIT = lrtune.trainer.fit


def _timed_fit(task: Task, **kwargs: Any) -> FitResult:
    """``lrtune.trainer.fit`` with its own time and its callback's time added to :data:`CLOCK`."""
    on_epoch = kwargs.get("on_epoch")
    if on_epoch is not None:

        def timed_callback(epoch: EpochResult) -> Any:
            started = time.perf_counter()
            try:
                return on_epoch(epoch)
            finally:
                CLOCK.callback += time.perf_counter() - started

        kwargs["on_epoch"] = timed_callback
    started = time.perf_counter()
    try:
        return _REAL_FIT(task, **kwargs)
    finally:
        CLOCK.fit += time.perf_counter() - started


@contextlib.contextmanager
def fit_clock() -> Iterator[None]:
    """Time every ``fit`` of the block (the study objective imports ``fit`` from lrtune.trainer per call)."""
    lrtune.trainer.fit = _timed_fit
    try:
        yield
    finally:
        lrtune.trainer.fit = _REAL_FIT


# --------------------------------------------------------------------------- SQLite writes


class CommitCounter:
    """Counts, per database file, the transactions that wrote something (each one is a synced commit).

    Listens to every SQLAlchemy engine of the process (Optuna's and MLflow's): a transaction counts when an
    INSERT, UPDATE or DELETE ran in it before its commit. Read-only transactions are not counted.
    """

    def __init__(self) -> None:
        self.commits: Counter[str] = Counter()
        self.writes: Counter[str] = Counter()

    def install(self) -> None:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "before_cursor_execute", self._on_execute)
        event.listen(Engine, "commit", self._on_commit)
        event.listen(Engine, "rollback", self._on_rollback)

    def reset(self) -> None:
        self.commits.clear()
        self.writes.clear()

    @staticmethod
    def _name(conn: Any) -> str:
        return Path(str(conn.engine.url.database or "?")).name

    def _on_execute(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.lstrip()[:6].upper() in ("INSERT", "UPDATE", "DELETE"):
            conn.info["bench_wrote"] = True
            self.writes[self._name(conn)] += 1

    def _on_commit(self, conn: Any) -> None:
        if conn.info.pop("bench_wrote", False):
            self.commits[self._name(conn)] += 1

    def _on_rollback(self, conn: Any) -> None:
        conn.info.pop("bench_wrote", None)


COMMITS = CommitCounter()


class CallTimers:
    """Seconds and calls of chosen functions, by label: thin wrappers put on the real objects for the run."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.calls: dict[str, int] = {}
        self.labels: list[str] = []
        self._patched: list[tuple[Any, str, Any]] = []

    def wrap(self, owner: Any, attribute: str, label: str) -> None:
        original = getattr(owner, attribute)
        timers = self

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                timers.seconds[label] = timers.seconds.get(label, 0.0) + time.perf_counter() - started
                timers.calls[label] = timers.calls.get(label, 0) + 1

        setattr(owner, attribute, timed)
        self._patched.append((owner, attribute, original))
        self.labels.append(label)

    def reset(self) -> None:
        self.seconds.clear()
        self.calls.clear()

    def restore(self) -> None:
        for owner, attribute, original in reversed(self._patched):
            setattr(owner, attribute, original)
        self._patched.clear()


TIMERS = CallTimers()
HEARTBEAT = "Optuna: record_heartbeat (its own thread)"


def install_timers() -> None:
    """Time the bookkeeping calls a trial makes (both variants make the Optuna ones)."""
    import optuna
    import optuna.study._optimize

    from lrtune.tracking import StudyTracker, TrialRun

    for owner, attribute, label in (
        (optuna.storages, "fail_stale_trials", "Optuna: fail_stale_trials (heartbeat check)"),
        (optuna.Study, "ask", "Optuna: ask (create the trial)"),
        (lrtune.space, "sample", "Optuna: sample the plan (TPE, suggest_*)"),
        (optuna.Trial, "set_user_attr", "Optuna: set_user_attr (plan, run id)"),
        (optuna.Trial, "report", "Optuna: trial.report, every epoch"),
        (optuna.Trial, "should_prune", "Optuna: trial.should_prune, every epoch"),
        (optuna.study._optimize, "_tell_with_warning", "Optuna: tell (finish the trial)"),
        (optuna.study.MaxTrialsCallback, "__call__", "Optuna: MaxTrialsCallback (count trials)"),
        (StudyTracker, "start_trial", "MLflow: child run + params (start_trial)"),
        (TrialRun, "log_epoch", "MLflow: log_epoch, every epoch"),
        (TrialRun, "__exit__", "MLflow: end the run (tags, status)"),
        (StudyTracker, "__call__", "MLflow: objective metric (tracker callback)"),
        (optuna.storages.RDBStorage, "record_heartbeat", HEARTBEAT),
    ):
        TIMERS.wrap(owner, attribute, label)


def tune_sqlite() -> None:
    """What-if: WAL journal and ``synchronous=NORMAL`` on every SQLite connection (no fsync per commit)."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    def pragmas(dbapi_connection: Any, _record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    event.listen(Engine, "connect", pragmas)


def commit_seconds(folder: Path, *, tuned: bool, count: int = 20) -> float:
    """Seconds one small SQLite write transaction takes in ``folder`` (SQLite's defaults, or the what-if)."""
    path = folder / "commit-probe.db"
    connection = sqlite3.connect(path)
    try:
        if tuned:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("CREATE TABLE t (x INTEGER)")
        connection.commit()
        started = time.perf_counter()
        for i in range(count):
            connection.execute("INSERT INTO t VALUES (?)", (i,))
            connection.commit()
        return (time.perf_counter() - started) / count
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm", "-journal"):
            with contextlib.suppress(FileNotFoundError):
                Path(f"{path}{suffix}").unlink()


# --------------------------------------------------------------------------- the workload


def wide_digits(width: int) -> Task:
    """The digits task with a 64-W-W-10 MLP: the same data and batches, more work per step."""
    digits = load_task("digits")
    return dataclasses.replace(
        digits, name=f"digits-mlp{width}", model=functools.partial(mlp, 64, (width, width), 10)
    )


def time_fit(task: Task, epochs: int) -> float:
    started = time.perf_counter()
    _REAL_FIT(
        task,
        optimizer=OptimizerSpec("sgd"),
        base_lr=BOUNDS.suggested_lr,
        settings=TrainSettings(epochs=epochs, seed=0, device="cpu"),
    )
    return time.perf_counter() - started


def calibrate(target: float, epochs: int) -> tuple[int, float]:
    """The hidden width W whose trial of ``epochs`` epochs takes about ``target`` seconds, and that time.

    The time of a trial is modelled as ``a + b·(W² + 74·W)`` (fixed per-step costs plus the two layers).
    """
    time_fit(wide_digits(16), 1)  # warm-up: first-call costs of torch and the data
    cost = lambda w: w * w + 74 * w  # noqa: E731
    points = [(w, time_fit(wide_digits(w), epochs)) for w in (128, 768)]
    width = 128
    for _ in range(3):
        (w1, t1), (w2, t2) = points[-2], points[-1]
        b = (t2 - t1) / (cost(w2) - cost(w1)) if cost(w2) != cost(w1) else 0.0
        a = t1 - b * cost(w1)
        if b <= 0:
            break
        c = max((target - a) / b, cost(16))
        width = max(16, round((-74 + math.sqrt(74 * 74 + 4 * c)) / 2 / 16) * 16)
        seconds = time_fit(wide_digits(width), epochs)
        points.append((width, seconds))
        if abs(seconds - target) / target < 0.05:
            break
    width, seconds = min(points, key=lambda p: abs(p[1] - target))
    return width, seconds


@dataclass(frozen=True)
class Trial:
    """One timed trial: its wall time, the training inside it, its plan and value."""

    seconds: float
    training: float
    params: dict[str, Any]
    value: float | None
    state: str
    commits: dict[str, int] = field(default_factory=dict)
    calls: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def bookkeeping(self) -> float:
        return self.seconds - self.training


@dataclass
class Variant:
    """Trials of one variant, in order."""

    name: str
    trials: list[Trial] = field(default_factory=list)


class BareObjective:
    """The same trial without lrtune's bookkeeping: sample, train, report each epoch."""

    def __init__(self, task: Task, record: StudyRecord, settings: TrainSettings, seed: int) -> None:
        self.task, self.record, self.settings, self.seed = task, record, settings, seed

    def __call__(self, trial: optuna.Trial) -> float:
        import optuna

        record = self.record
        plan = lrtune.space.sample(  # looked up per call, as the study objective does
            trial, record.space, total_steps=record.total_steps, steps_per_epoch=record.steps_per_epoch
        )

        def report(epoch: EpochResult) -> None:
            value = float(epoch.val_metric if epoch.val_metric is not None else epoch.val_loss)
            if epoch.diverged or not math.isfinite(value):
                raise optuna.TrialPruned(f"diverged in epoch {epoch.epoch}")
            trial.report(value, epoch.epoch)
            if epoch.epoch < record.epochs and trial.should_prune():
                raise optuna.TrialPruned(f"pruned after epoch {epoch.epoch}")

        result = lrtune.trainer.fit(
            self.task,
            optimizer=plan.optimizer,
            schedule=plan.schedule,
            base_lr=plan.base_lr,
            settings=dataclasses.replace(self.settings, seed=(self.seed + trial.number) % 2**32),
            on_epoch=report,
        )
        final = result.final()
        return float(final.val_metric if final.val_metric is not None else final.val_loss)


def last_trial(study: optuna.Study) -> tuple[dict[str, Any], float | None, str]:
    frozen = study.get_trials(deepcopy=False)[-1]
    return dict(frozen.params), frozen.value, frozen.state.name


@dataclass
class Lrtune:
    """lrtune's side: the study, its tracker, record and objective."""

    study: optuna.Study
    tracker: Any
    record: StudyRecord
    objective: TaskObjective
    done: int = 0

    def run_one(self) -> None:
        """One more trial, by the engine's own loop (which reads the study's trials once per call)."""
        self.done += 1
        engine.run_trials(
            self.study, self.objective, n_trials=self.done, timeout=None, callbacks=[self.tracker]
        )


@dataclass
class Bare:
    study: optuna.Study
    objective: BareObjective

    def run_one(self) -> None:
        self.study.optimize(self.objective, n_trials=1)


def timed_trial(run: Callable[[], None], study: optuna.Study) -> Trial:
    CLOCK.reset()
    COMMITS.reset()
    TIMERS.reset()
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    commits = dict(COMMITS.commits)
    calls = {label: (TIMERS.calls.get(label, 0), TIMERS.seconds.get(label, 0.0)) for label in TIMERS.labels}
    params, value, state = last_trial(study)
    return Trial(seconds, CLOCK.training, params, value, state, commits, calls)


# --------------------------------------------------------------------------- profile


PACKAGES = ("torch", "mlflow", "sqlalchemy", "alembic", "optuna", "lrtune", "numpy", "threading")


def bucket(filename: str, name: str) -> str:
    """Which library a profiled function belongs to."""
    if filename == "~":  # a builtin
        if "sqlite3" in name:
            return "sqlite3 (C)"
        if "torch" in name or "_C." in name:
            return "torch"
        if "sleep" in name:
            return "time.sleep"
        if "lock" in name or "acquire" in name:
            return "threading"
        return "builtins"
    parts = Path(filename).parts
    for package in PACKAGES:
        if package in parts:
            return package
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1].split(".")[0]
    return "python stdlib"


def _stats(profiler: cProfile.Profile) -> dict[tuple[str, int, str], tuple[Any, ...]]:
    return pstats.Stats(profiler).stats  # type: ignore[attr-defined]


def profile_buckets(profiler: cProfile.Profile) -> dict[str, float]:
    """Own time per library."""
    out: dict[str, float] = {}
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in _stats(profiler).items():
        key = bucket(filename, name)
        out[key] = out.get(key, 0.0) + tottime
    return out


# --------------------------------------------------------------------------- report helpers


def med(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def iqr(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    if len(values) < 2:
        return "-"
    q1, q3 = np.percentile(np.asarray(values) * scale, [25, 75])
    return f"{q1:.{digits}f}-{q3:.{digits}f}"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time lrtune's per-trial study bookkeeping (Optuna SQLite storage, MLflow parent/child runs, "
        "per-epoch and per-step logging, plan attributes) against a bare in-memory Optuna loop on the same trials.",
    )
    parser.add_argument(
        "--pairs", type=int, default=40, help="timed rounds, one trial of each variant (default 40)"
    )
    parser.add_argument(
        "--trial-seconds", type=float, default=2.0, help="target length of one trial, seconds (default 2.0)"
    )
    parser.add_argument("--epochs", type=int, default=10, help="epochs per trial, each reported (default 10)")
    parser.add_argument(
        "--width", type=int, default=None, help="hidden width of the MLP (default: calibrated)"
    )
    parser.add_argument(
        "--pruner",
        choices=tuple(PRUNERS),
        default="none",
        help="pruner of both variants (default none: equal trials)",
    )
    parser.add_argument(
        "--profile-trials",
        type=int,
        default=3,
        help="extra trials of each variant under cProfile (default 3; 0 skips)",
    )
    parser.add_argument(
        "--end-to-end",
        type=int,
        default=10,
        help="trials of a cross-check run of lrtune.study.run_study (default 10; 0 skips)",
    )
    parser.add_argument(
        "--sqlite-tuning",
        action="store_true",
        help="force WAL and synchronous=NORMAL on every SQLite connection (lrtune sets them on its own files)",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="sampler seed and base trial seed (default 0)")
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=None,
        help="where the SQLite and MLflow files go (default a temp folder)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="8 rounds, 1 profiled trial, a 3-trial cross-check: about 1.5 minutes",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.pairs, args.profile_trials, args.end_to_end = 8, 1, 3
    for name in ("pairs", "epochs", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("profile_trials", "end_to_end", "seed"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.end_to_end > args.pairs:
        parser.error("--end-to-end must not exceed --pairs (its trials are compared with the bare rounds)")
    if not (math.isfinite(args.trial_seconds) and args.trial_seconds > 0):
        parser.error("--trial-seconds must be a positive number")
    if args.width is not None and args.width < 1:
        parser.error("--width must be at least 1")
    if args.work_dir is not None and not args.work_dir.is_dir():
        parser.error(f"--work-dir {str(args.work_dir)!r} is not a folder")
    return args


# --------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    wall_start = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    one_off: list[tuple[str, str, float]] = []  # (kind, label, seconds)

    def once(kind: str, label: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        value = fn()
        one_off.append((kind, label, time.perf_counter() - started))
        return value

    once("import", "import optuna", lambda: __import__("optuna"))
    once("import", "import mlflow", lambda: __import__("mlflow.tracking"))
    import mlflow
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    COMMITS.install()
    install_timers()
    if args.sqlite_tuning:
        tune_sqlite()

    print("lrtune study bookkeeping benchmark")
    print(
        f"  torch {torch.__version__}, optuna {optuna.__version__}, mlflow {mlflow.__version__}; "
        f"torch threads {torch.get_num_threads()}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
        f"{os.cpu_count()} CPUs"
    )
    if args.sqlite_tuning:
        print(
            "  WHAT-IF RUN: every SQLite connection set to journal_mode=WAL, synchronous=NORMAL (not lrtune's default)"
        )
    if args.width is None:
        print(
            f"  calibrating the MLP width for a {args.trial_seconds:g} s trial of {args.epochs} epochs ...",
            flush=True,
        )
        width, calibrated = calibrate(args.trial_seconds, args.epochs)
    else:
        width, calibrated = args.width, time_fit(wide_digits(args.width), args.epochs)
    task = wide_digits(width)
    steps_per_epoch = math.ceil(len(task.train) / task.batch_size)  # type: ignore[arg-type]
    print(
        f"  workload: digits ({len(task.train)} train / {len(task.val)} val), MLP 64-{width}-{width}-10, "  # type: ignore[arg-type]
        f"batch {task.batch_size}, {args.epochs} epochs × {steps_per_epoch} steps: a bare fit takes {calibrated:.2f} s"
    )
    schedules = DIGITS_MLP_SCHEDULES
    print(
        f"  space: SGD (momentum 0.9), schedules {', '.join(schedules)}; LR bounds {BOUNDS.lr_low:g}..{BOUNDS.lr_high:g} "
        f"(suggested {BOUNDS.suggested_lr:g}); sampler tpe (seed {args.seed}), pruner {args.pruner}"
    )
    print(f"  {args.pairs} timed rounds after 1 warm-up round; order alternates A B / B A", flush=True)

    with tempfile.TemporaryDirectory(prefix="bench-study-") as scratch:
        work = args.work_dir.resolve() if args.work_dir is not None else Path(scratch)
        commit_default = commit_seconds(work, tuned=False)
        commit_tuned = commit_seconds(work, tuned=True)
        print(
            f"  one small SQLite write transaction in {work}: {commit_default * 1000:.2f} ms with SQLite's defaults "
            f"(rollback journal, synchronous=FULL), {commit_tuned * 1000:.2f} ms with WAL + synchronous=NORMAL",
            flush=True,
        )
        (work / "engine").mkdir(exist_ok=True)
        storage_url = f"sqlite:///{work / 'engine' / 'lrtune.db'}"
        tracking_uri = f"sqlite:///{work / 'engine' / 'mlflow.db'}"
        bounds_file = work / "finder.json"
        bounds_file.write_text(json.dumps(dataclasses.asdict(BOUNDS)) + "\n", encoding="utf-8")
        study_name = "bench-overhead"
        config = StudyConfig(
            task=BENCH_TASK,
            n_trials=args.pairs,
            epochs=args.epochs,
            storage=storage_url,
            study_name=study_name,
            sampler="tpe",
            pruner=args.pruner,
            schedules=schedules,
            bounds=str(bounds_file),
            optimizer="sgd",
            tracking_uri=tracking_uri,
            seed=args.seed,
            device="cpu",
        )
        record = StudyRecord(
            task=BENCH_TASK,
            epochs=args.epochs,
            steps_per_epoch=steps_per_epoch,
            batch_size=task.batch_size,
            metric="val_accuracy",
            direction="maximize",
            schedules=schedules,
            optimizers=("sgd",),
            bounds={"sgd": BOUNDS},
            bounds_source=str(bounds_file),
        )
        settings = TrainSettings(epochs=args.epochs, seed=args.seed, device="cpu")
        finder = {"sgd": dataclasses.asdict(BOUNDS)}

        # ---- lrtune's one-off set-up, step by step as run_study takes it (with --bounds FILE)
        from lrtune.study.storage import open_storage
        from lrtune.tracking import StudyTracker, TrackingSettings

        storage = once(
            "setup", "create the Optuna SQLite storage (tables)", lambda: open_storage(storage_url)
        )
        tracker = StudyTracker(
            TrackingSettings(tracking_uri=tracking_uri, experiment=study_name), study_name=study_name
        )
        once("setup", "create the MLflow SQLite store (schema, migrations)", lambda: tracker.client)
        once("setup", "create the MLflow experiment", lambda: tracker.experiment_id)
        study_a, record = once(
            "setup",
            "create the study (record, config, finder attrs, baseline)",
            lambda: engine.open_study(
                storage,
                record,
                study_name=study_name,
                sampler="tpe",
                pruner=args.pruner,
                seed=args.seed,
                n_existing=0,
                finder=finder,
                config=config.to_dict(),
            ),
        )
        once(
            "setup",
            "the MLflow parent run (incl. finder.json, a 0.25 s settle wait)",
            lambda: engine.start_tracking(study_a, tracker, config_params=config.to_dict(), finder=finder),
        )
        objective = TaskObjective(
            task, record, tracker=tracker, settings=settings, seed=args.seed, pruner=args.pruner
        )
        lrtune_side = Lrtune(study_a, tracker, record, objective)

        # ---- the bare loop's set-up
        def bare_study() -> optuna.Study:
            study = optuna.create_study(
                sampler=make_sampler("tpe", seed=args.seed),
                pruner=make_pruner(
                    args.pruner, min_resource=engine.min_resource(record), max_resource=record.epochs
                ),
                direction="maximize",
            )
            study.enqueue_trial(baseline_params(record.space, optimizer="sgd"))
            return study

        study_b = once("bare", "bare: create the in-memory study", bare_study)
        bare_side = Bare(study_b, BareObjective(task, record, settings, args.seed))

        variants = {LRTUNE: Variant(LRTUNE), BARE: Variant(BARE)}
        sides: dict[str, Lrtune | Bare] = {LRTUNE: lrtune_side, BARE: bare_side}
        warm: dict[str, Trial] = {}
        profiles: dict[str, cProfile.Profile] = {}
        with fit_clock():
            for round_ in range(args.pairs + 1):
                order = [LRTUNE, BARE] if round_ % 2 == 0 else [BARE, LRTUNE]
                for name in order:
                    side = sides[name]
                    trial = timed_trial(side.run_one, side.study)
                    if round_ == 0:
                        warm[name] = trial
                    else:
                        variants[name].trials.append(trial)
                a, b = (
                    (variants[LRTUNE].trials[-1], variants[BARE].trials[-1])
                    if round_
                    else (warm[LRTUNE], warm[BARE])
                )
                if round_ % 5 == 0 or round_ == args.pairs:
                    print(
                        f"  round {round_}/{args.pairs}{' (warm-up)' if not round_ else ''}: lrtune {a.seconds:.3f} s, "
                        f"bare {b.seconds:.3f} s",
                        flush=True,
                    )
            # ---- where the time goes: extra trials under the profiler (not in the medians)
            for name in (LRTUNE, BARE) if args.profile_trials else ():
                profiler = cProfile.Profile()
                profiler.enable()
                for _ in range(args.profile_trials):
                    sides[name].run_one()
                profiler.disable()
                profiles[name] = profiler

        # ---- one-offs at the end
        from lrtune.plots import write_study_plots

        once(
            "finish",
            "finish_tracking: study plots, best.json, parent FINISHED",
            lambda: engine.finish_tracking(study_a, tracker, record),
        )
        once(
            "reference",
            "  of which the study plots (drawn again, warm)",
            lambda: write_study_plots(study_a, work / "p"),
        )

        # ---- cross-check: run_study end to end on the same first trials
        end_to_end: tuple[float, float, bool] | None = None
        if args.end_to_end:
            TASKS[BENCH_TASK] = lambda data_dir, download: task
            (work / "e2e").mkdir(exist_ok=True)
            e2e_config = dataclasses.replace(
                config,
                n_trials=args.end_to_end,
                storage=f"sqlite:///{work / 'e2e' / 'lrtune.db'}",
                tracking_uri=f"sqlite:///{work / 'e2e' / 'mlflow.db'}",
            )
            from lrtune.study import run_study

            print(f"  cross-check: run_study with {args.end_to_end} trials ...", flush=True)
            with fit_clock():
                CLOCK.reset()
                started = time.perf_counter()
                run_study(e2e_config)
                e2e_wall = time.perf_counter() - started
                e2e_training = CLOCK.training
            e2e_trials = optuna.load_study(study_name=study_name, storage=e2e_config.storage).get_trials()
            # The bare study's trials 0..M-1 are the warm-up trial and the first rounds.
            same = [t.params for t in study_b.get_trials(deepcopy=False)[: args.end_to_end]] == [
                t.params for t in e2e_trials
            ]
            end_to_end = (e2e_wall, e2e_training, same)
    TIMERS.restore()

    # ---- report
    a_trials, b_trials = variants[LRTUNE].trials, variants[BARE].trials
    pairs = list(zip(a_trials, b_trials, strict=True))
    same_plans = sum(x.params == y.params for x, y in pairs)
    same_values = sum(x.value == y.value for x, y in pairs)
    states = {name: sorted({t.state for t in v.trials}) for name, v in variants.items()}
    diffs = [x.seconds - y.seconds for x, y in pairs]
    book_diffs = [x.bookkeeping - y.bookkeeping for x, y in pairs]
    half = len(diffs) // 2

    print()
    print(
        f"equal work: the same plan in {same_plans}/{len(pairs)} rounds, the same objective value in "
        f"{same_values}/{len(pairs)}; states: lrtune {','.join(states[LRTUNE])}, bare {','.join(states[BARE])}"
    )
    header = f"{'variant':<26} {'trials':>6} {'median s':>9} {'(IQR)':>13} {'training s':>11} {'bookkeeping s':>14}"
    print(header)
    print("-" * len(header))
    for name in (BARE, LRTUNE):
        trials = variants[name].trials
        print(
            f"{name:<26} {len(trials):>6} {med([t.seconds for t in trials]):>9.3f} "
            f"{iqr([t.seconds for t in trials]):>13} {med([t.training for t in trials]):>11.3f} "
            f"{med([t.bookkeeping for t in trials]):>14.3f}"
        )
    print("-" * len(header))
    overhead = med(diffs)
    percent = 100 * overhead / args.trial_seconds
    print(
        f"difference lrtune − bare, median over rounds: {ms(overhead)} (IQR {iqr(diffs, 1000, 0)} ms); "
        f"difference of the bookkeeping parts: {ms(med(book_diffs))}"
    )
    if half:
        print(
            f"  rounds 1-{half}: {ms(med(diffs[:half]))}; rounds {half + 1}-{len(diffs)}: {ms(med(diffs[half:]))} "
            "(the SQLite study grows by one trial a round)"
        )
    print(
        f"  the bare trial's own bookkeeping (in-memory Optuna: sampling, report, should_prune): "
        f"{ms(med([t.bookkeeping for t in b_trials]))}"
    )
    files = sorted({f for t in a_trials for f in t.commits})
    commits = {f: med([t.commits.get(f, 0) for t in a_trials]) for f in files}
    total_commits = med([sum(t.commits.values()) for t in a_trials])
    commit_cost = commit_tuned if args.sqlite_tuning else commit_default
    print(
        "  SQLite write transactions per lrtune trial (median): "
        + ", ".join(f"{f} {n:g}" for f, n in commits.items())
        + f"; {total_commits:g} × {commit_cost * 1000:.2f} ms (one small transaction in this folder"
        + (", what-if settings" if args.sqlite_tuning else "")
        + f", probed at the start) ≈ {ms(total_commits * commit_cost)} of syncing"
    )
    print(
        f"warm-up round (not in the medians): lrtune {warm[LRTUNE].seconds:.3f} s "
        f"(bookkeeping {warm[LRTUNE].bookkeeping:.3f}), bare {warm[BARE].seconds:.3f} s "
        f"(bookkeeping {warm[BARE].bookkeeping:.3f})"
    )
    print()
    print("per-trial bookkeeping calls (timed in every round; median ms per trial, calls per trial):")
    print(f"  {'call':<46} {'lrtune ms':>10} {'bare ms':>8} {'calls':>6}")
    timed_a = 0.0
    for label in TIMERS.labels:
        a_ms = med([t.calls[label][1] for t in a_trials]) * 1000
        b_ms = med([t.calls[label][1] for t in b_trials]) * 1000
        count = med([t.calls[label][0] for t in a_trials])
        if label != HEARTBEAT:
            timed_a += a_ms
        print(f"  {label:<46} {a_ms:>10.1f} {b_ms:>8.1f} {count:>6g}")
    print(
        f"  {'sum of the calls above (main thread)':<46} {timed_a:>10.1f}; the rest of lrtune's bookkeeping "
        f"(glue, GC, heartbeat thread start/stop): {med([t.bookkeeping for t in a_trials]) * 1000 - timed_a:.0f} ms"
    )
    print()
    print("one-off costs (not per trial):")
    for _kind, label, seconds in one_off:
        print(f"  {label:<64} {seconds:>8.3f} s")
    lrtune_once = sum(s for kind, _label, s in one_off if kind == "setup")
    finish = sum(s for kind, _label, s in one_off if kind == "finish")
    print(
        f"  {'lrtune set-up + finish (stores, experiment, study, parent, plots)':<64} {lrtune_once + finish:>8.3f} s"
    )
    if end_to_end is not None:
        e2e_wall, e2e_training, same = end_to_end
        m = args.end_to_end
        # lrtune's trials 0..M-1 are the warm-up trial and the first rounds: the same plans as run_study's.
        first = [warm[LRTUNE].bookkeeping] + [t.bookkeeping for t in a_trials[: m - 1]]
        print()
        print(
            f"cross-check, lrtune.study.run_study end to end ({m} trials, the same plans: {'yes' if same else 'NO'}; "
            f"bounds from a file, new stores): {e2e_wall:.2f} s, of which training {e2e_training:.2f} s and "
            f"everything else {e2e_wall - e2e_training:.2f} s; the engine-driven run above spent "
            f"{sum(first):.2f} s of bookkeeping on its first {m} trials plus {lrtune_once + finish:.2f} s of "
            "one-offs (cold: run_study's second store and plots are warm; SQLite's commit time drifts)"
        )

    if profiles:
        n = args.profile_trials
        print()
        print(f"where the time goes: cProfile over {n} extra trial(s) of each variant, per trial")
        buckets = {name: profile_buckets(p) for name, p in profiles.items()}
        keys = sorted(set(buckets[LRTUNE]) | set(buckets[BARE]), key=lambda k: -(buckets[LRTUNE].get(k, 0.0)))
        print(f"  {'own time by library':<46} {'lrtune s':>9} {'bare s':>9} {'extra s':>9}")
        for key in keys:
            own_a = buckets[LRTUNE].get(key, 0.0) / n
            own_b = buckets[BARE].get(key, 0.0) / n
            if max(own_a, own_b) >= 0.0005:
                print(f"  {key:<46} {own_a:>9.4f} {own_b:>9.4f} {own_a - own_b:>+9.4f}")
        print("  (the profiler slows Python code more than torch's kernels: read the shares, not the totals)")

    print()
    verdict = "PASS" if percent <= GOAL_PERCENT else "MISS"
    print(
        f"goal: lrtune's per-trial overhead <= {GOAL_PERCENT:g} % of a {args.trial_seconds:g}-second trial: "
        f"{ms(overhead)} = {percent:.1f} %  {verdict}"
    )
    print(f"wall time {time.perf_counter() - wall_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
