"""Which pruner gives the best study winner for the same compute? Hyperband, none and racing, measured.

For each task, one range test gives the bounds every study searches (so only the pruner differs). Then, for each
pruner and each study seed, a real study (``lrtune.study.run_study``: TPE, the task's schedules, confirmation of
the top 3 and the baseline on 3 fresh seeds) runs until its trials have trained a fixed budget of *trial-epochs*
(``--budget-trials`` × epochs: a pruned trial costs only the epochs it trained, a racing trial every seed it
trained). Its confirmed winner and the strong default (cosine from the finder's suggestion) are then retrained on
``--seeds`` fresh seeds and scored on the task's TEST split, which no study selects on.

Printed per task and pruner: the winner's test metric (mean over seeds and studies, with the std over studies of
the per-study means), the paired gain over the strong default with a 95 % t-interval over the (study, seed) pairs,
trials run, trial-epochs spent (search, confirmation) and wall time.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_pruners.py                  # digits, mnist1d, mnist1d-cnn
    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_pruners.py --quick          # a smoke run, under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import optuna

from lrtune.config import build_config
from lrtune.find_job import FindSettings, run_find
from lrtune.optimizers import OptimizerSpec
from lrtune.study import run_study
from lrtune.study.engine import count_done
from lrtune.study.selection import EPOCHS_ATTR, t_interval
from lrtune.tasks import Task, load_task, metric_name
from lrtune.trainer import TrainSettings, fit

#: Epochs per trial of each task (the budget a schedule is fitted to).
EPOCHS = {"digits": 10, "mnist1d": 20, "mnist1d-cnn": 15}
SCHEDULES = "cosine,one_cycle,cosine_restarts,cyclic,step,exponential,linear,constant"
PRUNERS = ("hyperband", "none", "racing")
TEST_SEED_BASE = 50_000  # far from every study's seeds


@dataclass(frozen=True)
class StudyRun:
    """One study under one pruner: what it chose and what it cost."""

    task: str
    pruner: str
    study_seed: int
    trials: int
    search_epochs: int
    confirm_epochs: int
    seconds: float
    winner: dict[str, Any]
    winner_test: tuple[float, ...]
    default_test: tuple[float, ...]


class BudgetStop:
    """Optuna callback: stop the study once its trials have trained ``budget`` epochs in all."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        spent = sum(int(t.user_attrs.get(EPOCHS_ATTR, 0)) for t in study.get_trials(deepcopy=False))
        if spent >= self.budget:
            study.stop()


def test_scores(task: Task, plan: dict[str, Any], *, epochs: int, seeds: list[int]) -> tuple[float, ...]:
    """Train ``plan`` on each seed; score the final model on the test split (the metric, else the loss)."""
    on_test = dataclasses.replace(task, val=task.test)
    scores = []
    for seed in seeds:
        result = fit(
            on_test,
            optimizer=OptimizerSpec.from_dict(plan["optimizer"]),
            schedule=plan["schedule"],
            settings=TrainSettings(epochs=epochs, seed=seed, device="cpu"),
        )
        final = result.final()
        scores.append(final.val_metric if final.val_metric is not None else final.val_loss)
    return tuple(float(s) for s in scores)


def one_study(
    task_name: str,
    task: Task,
    pruner: str,
    study_seed: int,
    args: argparse.Namespace,
    work: Path,
    finder: Path,
) -> StudyRun:
    epochs = EPOCHS[task_name] if args.epochs is None else args.epochs
    budget = args.budget_trials * epochs
    name = f"{task_name}-{pruner}-{study_seed}"
    settings = {
        "task": task_name,
        "epochs": epochs,
        "schedules": SCHEDULES,
        "pruner": pruner,
        "bounds": str(finder),
        "storage": f"sqlite:///{work}/lrtune.db",
        "tracking_uri": f"sqlite:///{work}/mlflow.db",
        "study_name": name,
        "device": "cpu",
        "seed": study_seed,
        "confirm": args.confirm,
        "confirm_seeds": args.confirm_seeds,
    }
    start = time.perf_counter()
    # The search: as many trials as the budget of trial-epochs allows (a pruned trial costs less:
    # Hyperband fits about 1.6 times as many full trials' worth; the cap only bounds the slots made) ...
    cap = 4 * args.budget_trials
    run_study(build_config(None, {**settings, "n_trials": cap, "confirm": 0}), callbacks=[BudgetStop(budget)])
    study = optuna.load_study(study_name=name, storage=settings["storage"])
    done = count_done(study.get_trials(deepcopy=False))
    # ... then the same study with its total set to what it ran: complete, so it is confirmed.
    outcome = run_study(build_config(None, {**settings, "n_trials": done}))
    seconds = time.perf_counter() - start
    assert outcome.best is not None, f"{name}: no complete trial"
    search_epochs = sum(int(t.user_attrs.get(EPOCHS_ATTR, 0)) for t in study.get_trials(deepcopy=False))
    seeds = [TEST_SEED_BASE + i for i in range(args.seeds)]
    winner = outcome.best
    baseline = winner.get("baseline", winner)
    return StudyRun(
        task=task_name,
        pruner=pruner,
        study_seed=study_seed,
        trials=done,
        search_epochs=search_epochs,
        confirm_epochs=outcome.confirmed * epochs,
        seconds=seconds,
        winner=winner,
        winner_test=test_scores(task, winner, epochs=epochs, seeds=seeds),
        default_test=test_scores(task, baseline, epochs=epochs, seeds=seeds),
    )


def report(runs: list[StudyRun], metric: dict[str, str]) -> None:
    print()
    header = (
        f"{'task':<12} {'pruner':<10} {'winner test ':>20} {'gain over default (95% CI)':>32} "
        f"{'trials':>7} {'search ep':>9} {'confirm ep':>10} {'seconds':>8}"
    )
    print(header)
    print("-" * len(header))
    for task in dict.fromkeys(r.task for r in runs):
        sign = -1.0 if metric[task] == "val_loss" else 1.0
        for pruner in dict.fromkeys(r.pruner for r in runs if r.task == task):
            mine = [r for r in runs if r.task == task and r.pruner == pruner]
            per_study = [statistics.fmean(r.winner_test) for r in mine]
            spread = statistics.stdev(per_study) if len(per_study) > 1 else 0.0
            gains = [sign * (w - d) for r in mine for w, d in zip(r.winner_test, r.default_test, strict=True)]
            gain, low, high = t_interval(gains)
            print(
                f"{task:<12} {pruner:<10} {statistics.fmean(per_study):>12.4f} ± {spread:<6.4f}"
                f" {gain:>+10.4f} [{low:+.4f}, {high:+.4f}]      "
                f"{statistics.fmean(r.trials for r in mine):>7.1f} {statistics.fmean(r.search_epochs for r in mine):>9.0f}"
                f" {statistics.fmean(r.confirm_epochs for r in mine):>10.0f} {statistics.fmean(r.seconds for r in mine):>8.1f}"
            )
        defaults = [statistics.fmean(r.default_test) for r in runs if r.task == task]
        print(
            f"{task:<12} {'(default)':<10} {statistics.fmean(defaults):>12.4f}   strong default: cosine from the finder's suggestion"
        )
    print()
    print(
        f"metric: {', '.join(f'{t}: test {m}' for t, m in metric.items())}; gain = winner − default (loss: default − winner)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="digits,mnist1d,mnist1d-cnn")
    parser.add_argument("--pruners", default=",".join(PRUNERS))
    parser.add_argument("--studies", type=int, default=3, help="study seeds per task and pruner")
    parser.add_argument("--budget-trials", type=int, default=20, help="budget: this many full trials' epochs")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per trial [default: per task]")
    parser.add_argument("--seeds", type=int, default=5, help="fresh test seeds per winner")
    parser.add_argument("--confirm", type=int, default=3)
    parser.add_argument("--confirm-seeds", type=int, default=3)
    parser.add_argument(
        "--quick", action="store_true", help="digits, 2 studies, 6 trials of 4 epochs, 2 seeds"
    )
    parser.add_argument("--json", type=Path, default=None, help="also write every study's figures here")
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks, args.studies, args.budget_trials, args.epochs, args.seeds = "digits", 2, 6, 4, 2
        args.confirm, args.confirm_seeds = 2, 2
    logging.getLogger("lrtune").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    runs: list[StudyRun] = []
    metric: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="lrtune-pruners-") as scratch:
        work = Path(scratch)
        for task_name in args.tasks.split(","):
            task = load_task(task_name)
            if task.test is None:
                raise SystemExit(f"task {task_name!r} has no test split")
            name = metric_name(task)
            metric[task_name] = f"val_{name}" if name else "val_loss"
            found = run_find(
                FindSettings(task=task_name, device="cpu", out=work / f"find-{task_name}", tracking=None)
            )
            print(
                f"{task_name}: range test suggests {found.result.suggested_lr:.3g} "
                f"(bounds {found.result.lr_low:.3g}..{found.result.lr_high:.3g})",
                flush=True,
            )
            for study_seed in range(args.studies):
                for pruner in args.pruners.split(","):
                    run = one_study(task_name, task, pruner, study_seed, args, work, found.json_path)
                    runs.append(run)
                    print(
                        f"  {pruner:<10} study {study_seed}: {run.trials} trials, {run.search_epochs} epochs, "
                        f"winner trial {run.winner['trial']} ({run.winner['schedule']['type']}), "
                        f"test {statistics.fmean(run.winner_test):.4f} vs default "
                        f"{statistics.fmean(run.default_test):.4f}, {run.seconds:.0f}s",
                        flush=True,
                    )
    report(runs, metric)
    if args.json is not None:
        args.json.write_text(json.dumps([dataclasses.asdict(r) for r in runs], indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
