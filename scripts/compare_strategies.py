"""The classic learning-rate comparison: a fixed LR, exponential decay, Adam, and lrtune's tuned schedule.

Every strategy trains the task's model (the digits MLP by default) for the same epochs with the same batch size
and is evaluated over the same FRESH seeds (seeds no study trial trained with):

- ``fixed LR``: plain SGD (momentum 0, as in the learning-rate guides) at a constant 0.01.
- ``exp decay``: plain SGD (momentum 0), ``lr = 0.1 · e^(−0.1 · epoch)`` with the epoch counted from 0 and the
  rate held within an epoch. It is realised as lrtune's ``step`` schedule with ``decay_steps`` = steps per
  epoch and ``decay_rate`` = e^(−0.1); the script checks the LR of every optimizer step against the formula.
- ``Adam``: Adam (torch defaults) at a constant 1e-3.
- ``lrtune``: a real study, ``lrtune study STUDY_FILE --n-trials N --epochs E --storage sqlite:///WORK/lrtune.db
  --tracking-uri sqlite:///WORK/mlflow.db --study-name ... --seed S`` (a subprocess: range test, search, MLflow
  runs, plots, all of it), then ``lrtune best --out WORK/best-S.json``; the best file's schedule (read with
  ``lrtune.load_schedule``), optimizer entry, epochs and batch size are retrained with ``lrtune.trainer.fit``.
  With ``--studies K`` the whole study is repeated with study seeds 0..K-1, so the lrtune result is not one
  lucky search.

For information (not part of the goal) each study's range test alone is trained too: the best file's optimizer
at a constant ``suggested_lr`` (``finder LR``), to show what the search adds over the finder.

The table gives the mean ± std (and range) over the fresh seeds of the final validation accuracy and loss, and
the study's own cost (trials by state, epochs trained, range-test steps, wall time). The goal, per study:
lrtune's mean accuracy above every baseline's mean by more than that baseline's std, and its mean validation
loss below every baseline's mean by more than that baseline's std.

Caveat printed with the results: the study picks its best trial on the task's validation set, and the fresh
seeds are evaluated on that same set (the built-in tasks have no third split). Fresh seeds remove the luck of
the study's own seeds, not the selection on the validation set.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_strategies.py            # about 2 minutes on 2 cores
    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_strategies.py --quick    # about 40 s
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
from lrtune.errors import LrtuneError
from lrtune.optimizers import OptimizerSpec
from lrtune.tasks import Task, load_task, metric_name
from lrtune.trainer import FitResult, TrainSettings, fit

REPO = Path(__file__).resolve().parents[1]
DEFAULT_STUDY_FILE = REPO / "studies" / "digits-mlp.yaml"
EXP_BASE_LR = 0.1
EXP_DECAY = 0.1  # lr = EXP_BASE_LR · e^(−EXP_DECAY · epoch)
FIXED_LR = 0.01
ADAM_LR = 1e-3
PLAIN_SGD = OptimizerSpec("sgd", {"momentum": 0.0})


@dataclass(frozen=True)
class Strategy:
    """One way of training: an optimizer and a schedule spec (built by lrtune.schedules)."""

    name: str
    optimizer: OptimizerSpec
    schedule: dict[str, Any]
    describe: str


@dataclass
class Runs:
    """A strategy's runs over the fresh seeds."""

    strategy: Strategy
    fits: list[FitResult] = field(default_factory=list)
    seconds: float = 0.0

    def finals(self, key: str) -> list[float]:
        return [_value(f.final(), key) for f in self.fits]

    def curves(self, key: str, epochs: int) -> np.ndarray:
        """seeds × epochs; NaN after a run that diverged and stopped."""
        out = np.full((len(self.fits), epochs), np.nan)
        for i, f in enumerate(self.fits):
            for e in f.epochs:
                out[i, e.epoch - 1] = _value(e, key)
        return out

    @property
    def diverged(self) -> int:
        return sum(f.diverged for f in self.fits)


@dataclass
class StudyRun:
    """One lrtune study: its cost and its best file."""

    seed: int
    name: str
    wall_seconds: float
    best_seconds: float
    best: dict[str, Any]
    best_path: Path
    states: dict[str, int]
    epochs_trained: int
    finder_steps: str
    suggested_lr: float | None
    runs: Runs | None = None
    finder_runs: Runs | None = None


def _value(epoch: Any, key: str) -> float:
    value = epoch.val_loss if key == "loss" else epoch.val_metric
    return math.nan if value is None else float(value)


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return math.nan, math.nan
    return statistics.fmean(finite), statistics.stdev(finite) if len(finite) > 1 else 0.0


# --------------------------------------------------------------------------- the strategies


def baselines(steps_per_epoch: int) -> list[Strategy]:
    """The three strategies of the guides, as lrtune schedule specs."""
    return [
        Strategy(
            "fixed LR",
            PLAIN_SGD,
            {"type": "constant", "base_lr": FIXED_LR},
            f"SGD (momentum 0), constant {FIXED_LR:g}",
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
        ),
        Strategy(
            "Adam",
            OptimizerSpec("adam"),
            {"type": "constant", "base_lr": ADAM_LR},
            f"Adam, constant {ADAM_LR:g}",
        ),
    ]


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
    task: Task, strategy: Strategy, seeds: Sequence[int], *, epochs: int, batch_size: int, device: str
) -> Runs:
    runs = Runs(strategy)
    started = time.perf_counter()
    for seed in seeds:
        settings = TrainSettings(epochs=epochs, seed=seed, device=device, batch_size=batch_size)
        runs.fits.append(
            fit(task, optimizer=strategy.optimizer, schedule=strategy.schedule, settings=settings)
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


def run_study(args: argparse.Namespace, seed: int, work: Path) -> StudyRun:
    """``lrtune study`` then ``lrtune best`` in a subprocess; the study's cost read from its storage."""
    import optuna

    storage = f"sqlite:///{work / 'lrtune.db'}"
    name = f"compare-{args.task}-seed{seed}"
    study_cmd = lrtune_command(
        "study",
        str(args.study_file),
        "--task",
        args.task,
        "--n-trials",
        str(args.n_trials),
        "--epochs",
        str(args.epochs),
        "--storage",
        storage,
        "--tracking-uri",
        f"sqlite:///{work / 'mlflow.db'}",
        "--study-name",
        name,
        "--seed",
        str(seed),
        "--device",
        args.device,
        "--data-dir",
        str(args.data_dir),
    )
    if args.schedules:
        study_cmd += ["--schedules", args.schedules]
    if args.batch_size:
        study_cmd += ["--batch-size", str(args.batch_size)]
    print(f"  $ {show(study_cmd)}", flush=True)
    proc, wall = run_cli(study_cmd, cwd=work, threads=args.threads)
    if proc.returncode != 0:
        raise RuntimeError(
            f"lrtune study failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )
    for line in proc.stdout.splitlines():
        if line.startswith(("lrtune study:", "  best", "  schedule")):
            print(f"    {line.strip()}")
    best_path = work / f"best-seed{seed}.json"
    best_cmd = lrtune_command("best", "--storage", storage, "--study-name", name, "--out", str(best_path))
    print(f"  $ {show(best_cmd)}", flush=True)
    proc, best_wall = run_cli(best_cmd, cwd=work, threads=args.threads)
    if proc.returncode != 0:
        raise RuntimeError(f"lrtune best failed (exit {proc.returncode}): {proc.stderr.strip()}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    finder = [v for k, v in study.user_attrs.items() if k.startswith("lrtune_finder_")]
    finder_steps = " + ".join(f"{f.get('repeats', 1)}×{f.get('num_iter', '?')}" for f in finder) or "none"
    best = json.loads(best_path.read_text(encoding="utf-8"))
    own_finder = study.user_attrs.get(f"lrtune_finder_{best['optimizer']['name']}", {})
    suggested = own_finder.get("suggested_lr")
    return StudyRun(
        seed=seed,
        name=name,
        wall_seconds=wall,
        best_seconds=best_wall,
        best=best,
        best_path=best_path,
        states=states,
        epochs_trained=sum(len(t.intermediate_values) for t in trials),
        finder_steps=finder_steps,
        suggested_lr=float(suggested) if suggested is not None else None,
    )


# --------------------------------------------------------------------------- report


def fmt(mean: float, std: float, lo: float, hi: float, digits: int = 4) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}f} ± {std:.{digits}f} ({lo:.{digits}f}-{hi:.{digits}f})"


def row(label: str, runs: Runs, has_metric: bool) -> str:
    cells = []
    for key in ("metric", "loss") if has_metric else ("loss",):
        values = runs.finals(key)
        finite = [v for v in values if math.isfinite(v)] or [math.nan]
        cells.append(f"{fmt(*mean_std(values), min(finite), max(finite)):>35}")
    note = f"  ({runs.diverged} diverged)" if runs.diverged else ""
    return f"{label:<24} " + " ".join(cells) + f" {runs.seconds:>8.1f}{note}"


def verdict(runs: Runs, others: Sequence[Runs], has_metric: bool) -> tuple[bool, list[str]]:
    """Did ``runs`` beat every baseline by more than the baseline's std? Returns (ok, one line per figure)."""
    lines = []
    ok = True
    keys = (("metric", 1.0), ("loss", -1.0)) if has_metric else (("loss", -1.0),)
    for key, sign in keys:
        mine, _ = mean_std(runs.finals(key))
        margins = []
        for base in others:
            b_mean, b_std = mean_std(base.finals(key))
            margin = sign * (mine - b_mean) - b_std  # > 0: better by more than the baseline's std
            margins.append((margin, base.strategy.name, sign * (mine - b_mean), b_std))
            ok = ok and math.isfinite(margin) and margin > 0
        worst = min(margins, key=lambda m: m[0] if math.isfinite(m[0]) else -math.inf)
        what = "accuracy" if key == "metric" else "val loss"
        lines.append(
            f"{what}: smallest margin vs {worst[1]}: {'+' if worst[2] >= 0 else ''}{worst[2]:.4f} "
            f"(baseline std {worst[3]:.4f}, excess {worst[0]:+.4f}); all margins: "
            + ", ".join(f"{n} {d:+.4f}" for _, n, d, _ in margins)
        )
    return ok, lines


def plot(path: Path, entries: Sequence[tuple[str, Runs]], epochs: int, has_metric: bool, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("loss", "validation loss")] + ([("metric", "validation accuracy")] if has_metric else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(6.5 * len(keys), 4.6), squeeze=False)
    x = np.arange(1, epochs + 1)
    for ax, (key, label) in zip(axes[0], keys, strict=True):
        for name, runs in entries:
            curves = runs.curves(key, epochs)
            with warnings.catch_warnings():  # a column where every run had diverged: NaN, no warning
                warnings.simplefilter("ignore", RuntimeWarning)
                mean = np.nanmean(curves, axis=0)
                std = np.nanstd(curves, axis=0)
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=name)
            ax.fill_between(x, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        if key == "loss":
            ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare a fixed LR, exponential decay and Adam with lrtune's tuned schedule "
        "(same epochs and batch size, the same fresh seeds; mean ± std of the final validation accuracy and loss).",
    )
    parser.add_argument("--task", default="digits", help="built-in task or module:function (default digits)")
    parser.add_argument(
        "--study-file",
        type=Path,
        default=DEFAULT_STUDY_FILE,
        help="the study file (default studies/digits-mlp.yaml; --task, --epochs, --n-trials override it)",
    )
    parser.add_argument("--n-trials", type=int, default=30, help="trials per study (default 30, the file's)")
    parser.add_argument(
        "--studies",
        type=int,
        default=3,
        help="independent studies, with study seeds 0..K-1, each retrained and judged (default 3)",
    )
    parser.add_argument(
        "--epochs", type=int, default=10, help="epochs of every run and every trial (default 10)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=None, help="batch size of every run (default the task's)"
    )
    parser.add_argument(
        "--schedules", default=None, help="schedule types the study searches (default the file's)"
    )
    parser.add_argument(
        "--seeds", type=int, default=10, help="fresh seeds every strategy is trained with (default 10)"
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
        "--quick", action="store_true", help="1 study of 12 trials, 3 fresh seeds: about 40 s"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.n_trials, args.studies, args.seeds = 12, 1, 3
    for name in ("n_trials", "studies", "epochs", "seeds", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    if args.seed_base < 0:
        parser.error("--seed-base must be >= 0")
    used = args.studies - 1 + args.n_trials  # study seed s trains trial n with seed s + n
    if args.seed_base < used + 1:
        parser.error(
            f"--seed-base must be above the seeds the studies train with (0..{used}); use >= {used + 1}"
        )
    if not args.study_file.is_file():
        parser.error(f"study file {str(args.study_file)!r} not found")
    if args.work_dir is not None and not args.work_dir.is_dir():
        parser.error(f"--work-dir {str(args.work_dir)!r} is not a folder")
    args.study_file = args.study_file.resolve()
    args.data_dir = args.data_dir.resolve()
    return args


def main(argv: Sequence[str] | None = None) -> int:
    wall_start = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        task = load_task(args.task, data_dir=args.data_dir, download=False)
    except LrtuneError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    has_metric = metric_name(task) == "accuracy"
    batch_size = args.batch_size or task.batch_size
    steps_per_epoch = math.ceil(len(task.train) / batch_size)  # type: ignore[arg-type]
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))

    print("compare learning-rate strategies")
    print(
        f"  task {task.name} ({len(task.train)} train / {len(task.val)} val), {args.epochs} epochs × "  # type: ignore[arg-type]
        f"{steps_per_epoch} steps, batch {batch_size}, device {args.device}"
    )
    print(
        f"  torch {torch.__version__}, torch threads {torch.get_num_threads()} here, OMP_NUM_THREADS={args.threads} "
        f"in the study; {os.cpu_count()} CPUs"
    )
    print(
        f"  fresh seeds {seeds[0]}..{seeds[-1]} ({len(seeds)}); studies: {args.studies} × {args.n_trials} trials"
    )
    print(flush=True)

    with tempfile.TemporaryDirectory(prefix="compare-strategies-") as scratch:
        work = args.work_dir.resolve() if args.work_dir is not None else Path(scratch)
        studies: list[StudyRun] = []
        for s in range(args.studies):
            print(f"study {s + 1}/{args.studies} (study seed {s}):")
            try:
                studies.append(run_study(args, s, work))
            except RuntimeError as err:
                print(f"error: {err}", file=sys.stderr)
                return 1
            study = studies[-1]
            if study.best["epochs"] != args.epochs or (study.best["batch_size"] or batch_size) != batch_size:
                print(
                    f"error: the best file trains {study.best['epochs']} epochs with batch {study.best['batch_size']}, "
                    f"not {args.epochs} with {batch_size}",
                    file=sys.stderr,
                )
                return 1
        print()

        results: list[Runs] = []
        for strategy in baselines(steps_per_epoch):
            print(f"training {strategy.name} over {len(seeds)} seeds", flush=True)
            results.append(
                train_over_seeds(
                    task, strategy, seeds, epochs=args.epochs, batch_size=batch_size, device=args.device
                )
            )
        exp_error = max(check_exp_decay(f, steps_per_epoch) for f in results[1].fits)
        for study in studies:
            best = study.best
            strategy = Strategy(
                f"lrtune (study seed {study.seed})",
                OptimizerSpec.from_dict(best["optimizer"]),
                load_schedule(study.best_path),
                describe_best(best),
            )
            print(f"training {strategy.name} over {len(seeds)} seeds", flush=True)
            study.runs = train_over_seeds(
                task, strategy, seeds, epochs=int(best["epochs"]), batch_size=batch_size, device=args.device
            )
            if study.suggested_lr is not None:  # for information: the range test's LR alone, no search
                finder_only = Strategy(
                    f"finder LR (seed {study.seed})",
                    strategy.optimizer,
                    {"type": "constant", "base_lr": study.suggested_lr},
                    f"the study's range test alone: {best['optimizer']['name']} as in the best file, "
                    f"constant at its suggested_lr {study.suggested_lr:.3g} (information, not in the goal)",
                )
                study.finder_runs = train_over_seeds(
                    task, finder_only, seeds, epochs=args.epochs, batch_size=batch_size, device=args.device
                )

    print()
    print("strategies:")
    extra = [s.finder_runs for s in studies if s.finder_runs is not None]
    for runs in [*results, *(s.runs for s in studies if s.runs is not None), *extra]:
        print(f"  {runs.strategy.name:<22} {runs.strategy.describe}")
    print(
        f"  exp decay check: max relative error of any step's LR vs {EXP_BASE_LR:g}·e^(-{EXP_DECAY:g}·epoch) "
        f"(epoch from 0) = {exp_error:.1e}  {'OK' if exp_error < 1e-9 else 'MISMATCH'}"
    )
    print()
    header = f"{'strategy':<24} " + (f"{'val accuracy: mean ± std (range)':>35} " if has_metric else "")
    header += f"{'val loss: mean ± std (range)':>35} {'train s':>8}"
    print(f"final epoch ({args.epochs}), {len(seeds)} fresh seeds each")
    print(header)
    print("-" * len(header))
    for runs in results:
        print(row(runs.strategy.name, runs, has_metric))
    for study in studies:
        if study.runs is not None:
            print(row(study.runs.strategy.name, study.runs, has_metric))
    for runs in extra:
        print(row(runs.strategy.name, runs, has_metric))
    print("-" * len(header))
    print()
    print("cost of each study (the CLI subprocess: start-up, range test, trials, MLflow, plots):")
    for study in studies:
        states = ", ".join(f"{n} {state}" for state, n in sorted(study.states.items()))
        print(
            f"  study seed {study.seed}: {sum(study.states.values())} trials ({states}); "
            f"{study.epochs_trained} epochs trained = {study.epochs_trained / args.epochs:.1f} full runs; "
            f"range test {study.finder_steps} steps; wall {study.wall_seconds:.1f} s "
            f"(+ lrtune best {study.best_seconds:.1f} s); best trial's own value {study.best['value']:.4f}"
        )
    print()
    what = "accuracy and val loss" if has_metric else "val loss (the task has no accuracy)"
    print(
        f"goal: lrtune's mean {what} better than every baseline's mean by more than that baseline's std, per study"
    )
    passes = 0
    for study in studies:
        if study.runs is None:
            continue
        ok, lines = verdict(study.runs, results, has_metric)
        passes += ok
        print(f"  study seed {study.seed}: {'PASS' if ok else 'MISS'}")
        for line in lines:
            print(f"    {line}")
    print(f"summary: {passes}/{len(studies)} studies PASS")
    print(
        "caveat: the study chose its best trial on this same validation set; fresh seeds remove the study's "
        "seed luck, not that selection"
    )
    title = (
        f"{task.name}: {args.epochs} epochs, batch {batch_size}, mean ± std over {len(seeds)} fresh seeds "
        f"(lrtune: {args.n_trials}-trial studies)"
    )
    entries = [(r.strategy.name, r) for r in results]
    entries += [(s.runs.strategy.name, s.runs) for s in studies if s.runs is not None]
    plot(args.plot, entries, args.epochs, has_metric, title)
    print(f"plot: {args.plot}")
    print(f"wall time {time.perf_counter() - wall_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
