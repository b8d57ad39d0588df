"""Is the study's winner worth it? The classic strategies, the strong default and the study's winner, on TEST data.

For each task (digits with ``studies/digits-mlp.yaml``, MNIST-1D's 1-D CNN with ``studies/mnist1d-cnn.yaml``)
one real study runs first, as a user would run it (a subprocess: range test, search, confirmation, MLflow)::

    lrtune study STUDY_FILE --task TASK --storage sqlite:///WORK/lrtune.db --tracking-uri sqlite:///WORK/mlflow.db
                 --study-name compare-TASK --seed S
    lrtune best --storage ... --study-name compare-TASK --out WORK/best-TASK.json

Then every strategy trains the task's model for the study file's epochs and batch size on the same FRESH seeds
(seeds no trial and no confirmation run trained with) and is scored on the task's TEST split, which the study
never saw (it selects on the validation split):

- ``fixed LR``: plain SGD (momentum 0, as in the learning-rate guides) at a constant 0.01.
- ``exp decay``: plain SGD (momentum 0), ``lr = 0.1 · e^(−0.1 · epoch)`` with the epoch counted from 0 and the
  rate held within an epoch (lrtune's ``step`` schedule, ``decay_steps`` = steps per epoch, ``decay_rate`` =
  e^(−0.1)); the script checks the LR of every optimizer step against the formula.
- ``Adam``: Adam (torch defaults) at a constant 1e-3.
- ``strong default``: what one ``lrtune find`` gives without a study: SGD (momentum 0.9), a cosine from the range
  test's ``suggested_lr`` (the study's own range test, read from its storage) down to 0.1 % of it, no warmup —
  exactly the study's baseline trial.
- ``study winner``: the best file's optimizer and schedule (``lrtune.load_schedule``) at its epochs.

The table gives mean ± std (and range) over the fresh seeds of the test accuracy and loss; then a paired 95 %
t-interval over the shared seeds of the winner's gain over the strong default (positive = better), the best file's
own confirmation figures (``seeds``, ``mean``, ``std``, ``baseline``, ``gain``) when it has them, and the study's
budget: trials by state, trial-epochs (search and confirmation runs) and wall time.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_strategies.py --plot docs/compare-strategies.png
    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_strategies.py --tasks digits        # digits alone
    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_strategies.py --quick --tasks digits  # smoke run, about a minute
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lrtune import load_schedule
from lrtune.config import load_study_file
from lrtune.errors import LrtuneError
from lrtune.optimizers import OptimizerSpec
from lrtune.space import MIN_LR_RATIO
from lrtune.study.selection import t_interval
from lrtune.tasks import Task, load_task, metric_name
from lrtune.trainer import FitResult, TrainSettings, fit

REPO = Path(__file__).resolve().parents[1]
#: The study file of each task; any other task runs with the digits file and ``--task`` overriding it.
STUDY_FILES = {
    "digits": REPO / "studies" / "digits-mlp.yaml",
    "mnist1d-cnn": REPO / "studies" / "mnist1d-cnn.yaml",
}
DEFAULT_TASKS = "digits,mnist1d-cnn"
EXP_BASE_LR = 0.1
EXP_DECAY = 0.1  # lr = EXP_BASE_LR · e^(−EXP_DECAY · epoch)
FIXED_LR = 0.01
ADAM_LR = 1e-3
PLAIN_SGD = OptimizerSpec("sgd", {"momentum": 0.0})
MOMENTUM_SGD = OptimizerSpec("sgd", {"momentum": 0.9})
CONFIDENCE = 0.95
BEST_KEYS = ("seeds", "mean", "std", "gain")
WINNER = "study winner"
DEFAULT = "strong default"


@dataclass(frozen=True)
class Strategy:
    """One way of training: an optimizer and a schedule spec (built by lrtune.schedules)."""

    name: str
    optimizer: OptimizerSpec
    schedule: dict[str, Any]
    describe: str
    epochs: int


@dataclass
class Runs:
    """A strategy's runs over the fresh seeds."""

    strategy: Strategy
    fits: list[FitResult] = field(default_factory=list)
    seconds: float = 0.0

    def tests(self, key: str) -> list[float]:
        """The test ``metric`` or ``loss`` of every seed (NaN where missing)."""
        values = [f.test_metric if key == "metric" else f.test_loss for f in self.fits]
        return [math.nan if v is None else float(v) for v in values]

    def curves(self, epochs: int) -> np.ndarray:
        """seeds × epochs of the validation metric; NaN after a run that diverged and stopped."""
        out = np.full((len(self.fits), epochs), np.nan)
        for i, f in enumerate(self.fits):
            for e in f.epochs:
                if e.val_metric is not None:
                    out[i, e.epoch - 1] = e.val_metric
        return out

    @property
    def diverged(self) -> int:
        return sum(f.diverged for f in self.fits)


@dataclass
class StudyRun:
    """One lrtune study: its best file, its range test's suggestion and its cost."""

    name: str
    wall_seconds: float
    best: dict[str, Any]
    best_path: Path
    states: dict[str, int]
    trial_epochs: int
    confirm_runs: int
    confirm_epochs: int
    finder_steps: str
    suggested_lr: float
    summary: list[str]


@dataclass
class TaskReport:
    """Everything measured on one task."""

    task: Task
    epochs: int
    batch_size: int
    study: StudyRun
    runs: list[Runs]
    exp_error: float


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


def paired_interval(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> tuple[float, float, float]:
    """Mean of ``a − b`` over the pairs and its two-sided Student-t interval ``(mean, low, high)``."""
    diffs = [x - y for x, y in zip(a, b, strict=True) if math.isfinite(x) and math.isfinite(y)]
    if len(diffs) < 2:
        return (diffs[0] if diffs else math.nan), math.nan, math.nan
    return t_interval(diffs, confidence)


# --------------------------------------------------------------------------- the strategies


def classics(steps_per_epoch: int, epochs: int) -> list[Strategy]:
    """The three strategies of the learning-rate guides, as lrtune schedule specs."""
    return [
        Strategy(
            "fixed LR",
            PLAIN_SGD,
            {"type": "constant", "base_lr": FIXED_LR},
            f"SGD (momentum 0), constant {FIXED_LR:g}",
            epochs,
        ),
        Strategy(
            "exp decay",
            PLAIN_SGD,
            {
                "type": "step",
                "base_lr": EXP_BASE_LR,
                "decay_steps": steps_per_epoch,
                "decay_rate": math.exp(-EXP_DECAY),
            },
            f"SGD (momentum 0), {EXP_BASE_LR:g}·e^(-{EXP_DECAY:g}·epoch): step schedule, "
            f"decay_steps {steps_per_epoch}, decay_rate e^-{EXP_DECAY:g}",
            epochs,
        ),
        Strategy(
            "Adam",
            OptimizerSpec("adam"),
            {"type": "constant", "base_lr": ADAM_LR},
            f"Adam, constant {ADAM_LR:g}",
            epochs,
        ),
    ]


def strong_default(suggested_lr: float, epochs: int) -> Strategy:
    """One ``lrtune find`` and no study: SGD momentum 0.9, a cosine from ``suggested_lr`` to (nearly) 0, no warmup.

    Exactly the study's baseline trial: the cosine ends at the floor of the space's ``min_lr`` ratio (0.1 %).
    """
    return Strategy(
        DEFAULT,
        MOMENTUM_SGD,
        {"type": "cosine", "base_lr": suggested_lr, "min_lr": suggested_lr * MIN_LR_RATIO[0]},
        f"SGD (momentum 0.9), cosine from the range test's suggested_lr {suggested_lr:.3g} to "
        f"{MIN_LR_RATIO[0]:.1%} of it, no warmup (the study's baseline trial)",
        epochs,
    )


def describe_best(best: dict[str, Any]) -> str:
    """A one-line description of a best file's optimizer and schedule."""
    opt = dict(best["optimizer"])
    name = str(opt.pop("name"))
    kwargs = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in opt.items())
    spec = dict(best["schedule"])
    kind = spec.pop("type")
    parts = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in spec.items())
    return f"{name.upper() if name == 'sgd' else name} ({kwargs or 'defaults'}), {kind}: {parts}"


def check_exp_decay(result: FitResult, steps_per_epoch: int) -> float:
    """Largest relative error of any step's LR against 0.1·e^(−0.1·epoch) (epoch from 0)."""
    worst = 0.0
    for epoch in result.epochs:
        if len(epoch.lrs) != steps_per_epoch:
            raise RuntimeError(f"epoch {epoch.epoch} took {len(epoch.lrs)} steps, expected {steps_per_epoch}")
        expected = EXP_BASE_LR * math.exp(-EXP_DECAY * (epoch.epoch - 1))
        worst = max(worst, *(abs(lr - expected) / expected for lr in epoch.lrs))
    return worst


def train_over_seeds(
    task: Task, strategy: Strategy, seeds: Sequence[int], *, batch_size: int, device: str
) -> Runs:
    runs = Runs(strategy)
    started = time.perf_counter()
    for seed in seeds:
        settings = TrainSettings(epochs=strategy.epochs, seed=seed, device=device, batch_size=batch_size)
        runs.fits.append(
            fit(task, optimizer=strategy.optimizer, schedule=strategy.schedule, settings=settings, test=True)
        )
    runs.seconds = time.perf_counter() - started
    return runs


# --------------------------------------------------------------------------- the study


def lrtune_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lrtune", *args]


def run_cli(command: list[str], *, cwd: Path, threads: int) -> tuple[subprocess.CompletedProcess[str], float]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
    }
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    return proc, time.perf_counter() - started


def show(command: list[str]) -> str:
    shown = ["lrtune", *command[3:]] if command[1:3] == ["-m", "lrtune"] else command
    return " ".join(shown)


def run_study(args: argparse.Namespace, task_name: str, study_file: Path, work: Path) -> StudyRun:
    """``lrtune study`` then ``lrtune best`` in subprocesses; the finder's suggestion and the cost from storage."""
    storage = f"sqlite:///{work / 'lrtune.db'}"
    name = f"compare-{task_name}"
    study_cmd = lrtune_command(
        "study", str(study_file), "--task", task_name, "--storage", storage,
        "--tracking-uri", f"sqlite:///{work / 'mlflow.db'}", "--study-name", name,
        "--seed", str(args.study_seed), "--device", args.device, "--data-dir", str(args.data_dir),
    )  # fmt: skip
    for flag in ("n_trials", "epochs", "confirm", "confirm_seeds"):
        value = getattr(args, flag)
        if value is not None:
            study_cmd += [f"--{flag.replace('_', '-')}", str(value)]
    print(f"  $ {show(study_cmd)}", flush=True)
    proc, wall = run_cli(study_cmd, cwd=work, threads=args.threads)
    if proc.returncode != 0:
        raise RuntimeError(
            f"lrtune study failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    summary = [line.rstrip() for line in proc.stdout.splitlines() if line.startswith(("lrtune study:", "  "))]
    best_path = work / f"best-{task_name}.json"
    best_cmd = lrtune_command("best", "--storage", storage, "--study-name", name, "--out", str(best_path))
    print(f"  $ {show(best_cmd)}", flush=True)
    proc, _ = run_cli(best_cmd, cwd=work, threads=args.threads)
    if proc.returncode != 0:
        raise RuntimeError(f"lrtune best failed (exit {proc.returncode}): {proc.stderr.strip()}")
    best = json.loads(best_path.read_text(encoding="utf-8"))
    return read_study(storage, name, best, best_path, wall, summary)


def read_study(
    storage: str, name: str, best: dict[str, Any], best_path: Path, wall: float, summary: list[str]
) -> StudyRun:
    """The study's trials by state, trial-epochs (search and confirmation) and its range test's suggestion."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    # Every trial records the epochs it trained (all seeds of a racing trial); older studies: its reports.
    trial_epochs = sum(int(t.user_attrs.get("epochs_trained", len(t.intermediate_values))) for t in trials)
    confirm_runs = 0
    names = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    if f"{name}:confirm" in names:
        confirm = optuna.load_study(study_name=f"{name}:confirm", storage=storage)
        confirm_runs = sum(
            t.state == optuna.trial.TrialState.COMPLETE for t in confirm.get_trials(deepcopy=False)
        )
    finders = {k: v for k, v in study.user_attrs.items() if k.startswith("lrtune_finder_")}
    finder_steps = " + ".join(f"{f.get('repeats', 1)}×{f.get('num_iter', '?')}" for f in finders.values())
    own = finders.get(f"lrtune_finder_{best['optimizer']['name']}") or next(iter(finders.values()), None)
    if own is None or own.get("suggested_lr") is None:
        raise RuntimeError(f"study {name!r} holds no range test result (was it run with --bounds FILE?)")
    return StudyRun(
        name=name,
        wall_seconds=wall,
        best=best,
        best_path=best_path,
        states=states,
        trial_epochs=trial_epochs,
        confirm_runs=confirm_runs,
        confirm_epochs=confirm_runs * int(best["epochs"]),  # each a full run (one that diverged stops sooner)
        finder_steps=finder_steps or "none",
        suggested_lr=float(own["suggested_lr"]),
        summary=summary,
    )


# --------------------------------------------------------------------------- one task


def study_file_of(task_name: str) -> Path:
    """The study file a task's study runs with (the digits file for tasks without their own)."""
    return STUDY_FILES.get(task_name, STUDY_FILES["digits"])


def measure_task(args: argparse.Namespace, task_name: str, seeds: Sequence[int], work: Path) -> TaskReport:
    task = load_task(task_name, data_dir=args.data_dir, download=False)
    if task.test is None:
        raise LrtuneError(f"task {task.name!r} has no test split to score on")
    study_file = study_file_of(task_name)
    file_values = load_study_file(study_file)
    epochs = args.epochs or int(file_values.get("epochs", 10))
    batch_size = int(file_values.get("batch_size") or task.batch_size)
    steps_per_epoch = math.ceil(len(task.train) / batch_size)  # type: ignore[arg-type]
    print(
        f"task {task.name}: {len(task.train)} train / {len(task.val)} val / {len(task.test)} test, "  # type: ignore[arg-type]
        f"{epochs} epochs × {steps_per_epoch} steps, batch {batch_size}; study file {study_file.relative_to(REPO)}"
    )
    study = run_study(args, task_name, study_file, work)
    for line in study.summary:
        print(f"    {line}")
    best = study.best
    if int(best["epochs"]) != epochs or (best.get("batch_size") or batch_size) != batch_size:
        raise RuntimeError(
            f"the best file trains {best['epochs']} epochs with batch {best.get('batch_size')}, "
            f"not {epochs} with {batch_size}"
        )
    strategies = [
        *classics(steps_per_epoch, epochs),
        strong_default(study.suggested_lr, epochs),
        Strategy(
            WINNER,
            OptimizerSpec.from_dict(best["optimizer"]),
            load_schedule(study.best_path),
            describe_best(best),
            int(best["epochs"]),
        ),
    ]
    runs = []
    for strategy in strategies:
        print(f"  training {strategy.name} over {len(seeds)} seeds", flush=True)
        runs.append(train_over_seeds(task, strategy, seeds, batch_size=batch_size, device=args.device))
    exp_error = max(check_exp_decay(f, steps_per_epoch) for f in runs[1].fits)
    return TaskReport(task, epochs, batch_size, study, runs, exp_error)


# --------------------------------------------------------------------------- report


def fmt(values: Sequence[float], digits: int = 4) -> str:
    mean, std = mean_std(values)
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({min(finite):.{digits}f}-{max(finite):.{digits}f})"


def report(rep: TaskReport, seeds: Sequence[int]) -> list[str]:
    """Print one task's figures; returns its goal lines."""
    has_metric = metric_name(rep.task) is not None
    metric = metric_name(rep.task) or "loss"
    study = rep.study
    test_size = len(rep.task.test) if rep.task.test is not None else 0  # type: ignore[arg-type]
    print()
    print(
        f"== {rep.task.name}: {rep.epochs} epochs, batch {rep.batch_size}, {len(seeds)} fresh seeds "
        f"({seeds[0]}..{seeds[-1]}), scored on the test split ({test_size} samples)"
    )
    for runs in rep.runs:
        print(f"  {runs.strategy.name:<15} {runs.strategy.describe}")
    print(
        f"  exp decay check: max relative error of any step's LR vs {EXP_BASE_LR:g}·e^(-{EXP_DECAY:g}·epoch) "
        f"(epoch from 0) = {rep.exp_error:.1e}  {'OK' if rep.exp_error < 1e-9 else 'MISMATCH'}"
    )
    header = f"{'strategy':<16} " + (f"{f'test {metric}: mean ± std (range)':>35} " if has_metric else "")
    header += f"{'test loss: mean ± std (range)':>35} {'train s':>8}"
    print(header)
    print("-" * len(header))
    for runs in rep.runs:
        cells = ([fmt(runs.tests("metric"))] if has_metric else []) + [fmt(runs.tests("loss"))]
        note = f"  ({runs.diverged} diverged)" if runs.diverged else ""
        print(
            f"{runs.strategy.name:<16} "
            + " ".join(f"{c:>35}" for c in cells)
            + f" {runs.seconds:>8.1f}{note}"
        )
    print("-" * len(header))

    by_name = {r.strategy.name: r for r in rep.runs}
    winner, default = by_name[WINNER], by_name[DEFAULT]
    key, sign = ("metric", 1.0) if has_metric else ("loss", -1.0)
    gain, low, high = paired_interval(
        [sign * v for v in winner.tests(key)], [sign * v for v in default.tests(key)]
    )
    what = f"test {metric}" if has_metric else "test loss (lower is better; shown as default − winner)"
    print(
        f"gain of the study winner over the strong default ({what}), paired over {len(seeds)} seeds: "
        f"{gain:+.4f}, {CONFIDENCE:.0%} CI [{low:+.4f}, {high:+.4f}]"
    )
    best = study.best
    shown = {k: best[k] for k in BEST_KEYS if k in best}
    if "baseline" in best:
        base = best["baseline"]
        shown["baseline"] = {k: base[k] for k in ("schedule", "mean", "std", "seeds", "trial") if k in base}
    if shown:
        print(f"best file (validation, the study's own confirmation): {json.dumps(shown)}")
    else:
        print(
            f"best file: no confirmation figures (value {best['value']:.4f} on the study's single selection seed)"
        )
    states = ", ".join(f"{n} {state}" for state, n in sorted(study.states.items()))
    total = study.trial_epochs + study.confirm_epochs
    print(
        f"study budget: {sum(study.states.values())} trials ({states}); {study.trial_epochs} trial-epochs in the "
        f"search + {study.confirm_epochs} in {study.confirm_runs} confirmation runs = {total} "
        f"({total / rep.epochs:.1f} full runs); range test {study.finder_steps} steps; "
        f"wall {study.wall_seconds:.1f} s (the whole CLI run)"
    )
    goals = [
        f"{rep.task.name}: winner never worse than the strong default (CI upper end ≥ 0): "
        f"{'PASS' if math.isfinite(high) and high >= 0 else 'MISS'}",
        f"{rep.task.name}: winner clearly better than the strong default (CI lower end > 0): "
        f"{'PASS' if math.isfinite(low) and low > 0 else 'no'}",
    ]
    if has_metric:
        win_mean, _ = mean_std(winner.tests("metric"))
        classic_best = max(mean_std(r.tests("metric"))[0] for r in rep.runs[:3])
        goals.append(
            f"{rep.task.name}: winner {win_mean:.4f} vs the best classic {classic_best:.4f} "
            f"({win_mean - classic_best:+.4f})"
        )
    return goals


def plot(path: Path, reports: Sequence[TaskReport], seeds: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(reports), figsize=(6.5 * len(reports), 4.8), squeeze=False)
    for ax, rep in zip(axes[0], reports, strict=True):
        x = np.arange(1, rep.epochs + 1)
        for runs in rep.runs:
            curves = runs.curves(rep.epochs)
            with warnings.catch_warnings():  # a column where every run had diverged: NaN, no warning
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(curves, axis=0)
                std = np.nanstd(curves, axis=0)
            test_mean, test_std = mean_std(runs.tests("metric"))
            label = f"{runs.strategy.name}: test {test_mean:.3f} ± {test_std:.3f}"
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=label)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation accuracy (curves); final test accuracy in the legend")
        ax.set_title(
            f"{rep.task.name}: {rep.epochs} epochs, mean ± std over {seeds} fresh seeds", fontsize=10
        )
        ax.set_ylim(max(0.0, ax.get_ylim()[0]), 1.0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Classic LR strategies, the strong default from one range test and a study's confirmed winner, "
        "retrained on the same fresh seeds and scored on each task's test split.",
    )
    parser.add_argument(
        "--tasks", default=DEFAULT_TASKS, help=f"comma-separated built-in tasks (default {DEFAULT_TASKS})"
    )
    parser.add_argument(
        "--n-trials", type=int, default=None, help="trials per study (default: the study file's)"
    )
    parser.add_argument(
        "--epochs", type=int, default=None, help="epochs of every run (default: the study file's)"
    )
    parser.add_argument("--confirm", type=int, default=None, help="the study's --confirm (default: its own)")
    parser.add_argument(
        "--confirm-seeds", type=int, default=None, help="the study's --confirm-seeds (default: its own)"
    )
    parser.add_argument("--study-seed", type=int, default=0, help="the study's --seed (default 0)")
    parser.add_argument(
        "--seeds", type=int, default=10, help="fresh seeds every strategy trains with (default 10)"
    )
    parser.add_argument(
        "--seed-base",
        type=int,
        default=1000,
        help="the fresh seeds are SEED_BASE, SEED_BASE+1, ... (default 1000)",
    )
    parser.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    parser.add_argument("--data-dir", type=Path, default=Path("data"), help="dataset folder (default ./data)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads here and in the study (default 1)"
    )
    parser.add_argument(
        "--plot",
        type=Path,
        default=Path("compare_strategies.png"),
        help="figure file (default compare_strategies.png)",
    )
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="keep the study databases and best files here"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 4 trials of 2 epochs, confirmation 1×1, 2 fresh seeds (about a minute per task on a busy 2-core machine, mostly start-up and the range test)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n_trials, args.epochs, args.confirm, args.confirm_seeds, args.seeds = 4, 2, 1, 1, 2
    args.task_names = [t.strip() for t in args.tasks.split(",") if t.strip()]
    if not args.task_names:
        parser.error("--tasks needs at least one task")
    for name in ("n_trials", "epochs"):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    for name in ("confirm", "confirm_seeds", "study_seed"):
        if getattr(args, name) is not None and getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be >= 0")
    if args.seeds < 2:
        parser.error("--seeds must be at least 2 (a confidence interval needs two pairs)")
    if args.threads < 1:
        parser.error("--threads must be at least 1")
    if args.seed_base < 0:
        parser.error("--seed-base must be >= 0")
    # Search trial n trains with study seed + n; confirmation and racing seeds lie a million and more above.
    for task_name in args.task_names:
        n_trials = args.n_trials or int(load_study_file(study_file_of(task_name)).get("n_trials", 30))
        last = args.study_seed + n_trials - 1
        if args.seed_base <= last and args.study_seed < args.seed_base + args.seeds:  # the two ranges overlap
            parser.error(
                f"the fresh seeds {args.seed_base}.. must differ from the seeds {task_name}'s study trains with "
                f"({args.study_seed}..{last}): use --seed-base > {last}"
            )
    if args.work_dir is not None and not args.work_dir.is_dir():
        parser.error(f"--work-dir {str(args.work_dir)!r} is not a folder")
    args.data_dir = args.data_dir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    wall_start = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    print("compare learning-rate strategies on held-out test data")
    print(
        f"  torch {torch.__version__}, torch threads {torch.get_num_threads()} here, OMP_NUM_THREADS={args.threads} "
        f"in the study; {os.cpu_count()} CPUs; device {args.device}"
    )
    print(f"  fresh seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); tasks {', '.join(args.task_names)}")
    print(flush=True)
    reports: list[TaskReport] = []
    with tempfile.TemporaryDirectory(prefix="compare-strategies-") as scratch:
        work_root = args.work_dir.resolve() if args.work_dir is not None else Path(scratch)
        for task_name in args.task_names:
            work = work_root / task_name
            work.mkdir(exist_ok=True)
            try:
                reports.append(measure_task(args, task_name, seeds, work))
            except LrtuneError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
    goals = [line for rep in reports for line in report(rep, seeds)]
    print()
    print("goals:")
    for line in goals:
        print(f"  {line}")
    plot(args.plot, reports, len(seeds))
    print(f"plot: {args.plot}")
    print(f"wall time {time.perf_counter() - wall_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
