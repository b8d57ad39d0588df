"""One global learning rate against searched per-part factors, on the ``digits-finetune`` task.

The task: a small MLP body pretrained on digits 0–4, fine-tuned with a fresh head on 20 examples
each of digits 5–9 (:mod:`lrtune.finetune`). Both searches use the same space as ``lrtune study``
(:func:`lrtune.space.sample`): a cosine schedule, ``base_lr`` log-uniform within the range test's
bounds, ``min_lr_ratio``, warmup; the ``parts`` search also draws ``lr_factor_body`` (log-uniform
0.01..1) for the parameters matching ``^body\\.`` (the head stays at factor 1). Each search is an
Optuna TPE study of N trials whose first trial is lrtune's baseline (the finder's suggestion, every
factor 1), repeated with K search seeds. Every search's winner is then retrained on fresh seeds no
trial used, and the table gives the final validation accuracy (mean ± std over the fresh seeds).

The winner is picked on the validation set, so the fresh-seed validation figure still carries that
selection; the test figure (digits' test split of classes 5–9, 89 examples, so coarse) does not.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_part_factors.py            # 83 s measured on 2 cores shared with other jobs
    OMP_NUM_THREADS=1 .venv/bin/python scripts/compare_part_factors.py --quick    # seconds: a smoke run
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from claims_common import positive_int

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lrtune.data import make_loader
from lrtune.finder import LRFinder
from lrtune.finetune import finetune_task
from lrtune.optimizers import OptimizerSpec, build_optimizer
from lrtune.space import LRBounds, SearchSpace, TrialPlan, baseline_params, sample
from lrtune.tasks import Task
from lrtune.trainer import TrainSettings, fit

PARTS = (("body", r"^body\."),)


def final_accuracy(task: Task, plan: TrialPlan, *, epochs: int, seed: int, test: bool = False) -> float:
    """The final validation accuracy (or, with ``test``, the test accuracy) of ``plan`` trained with ``seed``."""
    result = fit(
        task,
        optimizer=plan.optimizer,
        schedule=plan.schedule,
        settings=TrainSettings(epochs=epochs, seed=seed, device="cpu"),
        param_groups=plan.param_groups,
        test=test,
    )
    value = result.test_metric if test else result.final().val_metric
    return 0.0 if result.diverged or value is None else float(value)


def fresh_figures(task: Task, plan: TrialPlan, *, epochs: int, seeds: list[int]) -> tuple[str, str, float]:
    """``plan`` retrained on ``seeds``: val and test accuracy as ``mean ± std``, and the val mean."""
    pairs = [
        (
            final_accuracy(task, plan, epochs=epochs, seed=s),
            final_accuracy(task, plan, epochs=epochs, seed=s, test=True),
        )
        for s in seeds
    ]
    shown = []
    for values in zip(*pairs, strict=True):
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        shown.append(f"{statistics.fmean(values):.4f} ± {std:.4f}")
    return shown[0], shown[1], statistics.fmean(p[0] for p in pairs)


def search(task: Task, space: SearchSpace, *, trials: int, epochs: int, seed: int) -> tuple[TrialPlan, float]:
    """A TPE study over ``space`` starting from the baseline trial; its best plan and value."""
    import optuna

    steps_per_epoch = -(-len(task.train) // task.batch_size)  # type: ignore[arg-type]
    total = epochs * steps_per_epoch
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.enqueue_trial(baseline_params(space))
    plans: dict[int, TrialPlan] = {}

    def objective(trial: optuna.Trial) -> float:
        plan = sample(trial, space, total_steps=total, steps_per_epoch=steps_per_epoch)
        plans[trial.number] = plan
        return final_accuracy(task, plan, epochs=epochs, seed=1000 * seed + trial.number)

    study.optimize(objective, n_trials=trials)
    return plans[study.best_trial.number], float(study.best_value)


def describe(plan: TrialPlan) -> str:
    s = plan.schedule
    text = f"base_lr {s['base_lr']:.3g}, min_lr {s['min_lr']:.2g}, warmup {s['warmup_steps']}"
    for group in plan.param_groups:
        text += f", {group.name} ×{group.factor:.3g}"
    return text


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a tiny smoke run (seconds); its figures mean nothing"
    )
    parser.add_argument(
        "--trials", type=positive_int, default=None, help="trials per search [default: 30, quick 3]"
    )
    parser.add_argument(
        "--searches", type=positive_int, default=None, help="search seeds K [default: 3, quick 1]"
    )
    parser.add_argument(
        "--fresh", type=positive_int, default=None, help="fresh seeds per winner [default: 10, quick 2]"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs per run [default: 20, quick 3]"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
    trials = args.trials or (3 if args.quick else 30)
    searches = args.searches or (1 if args.quick else 3)
    fresh = args.fresh or (2 if args.quick else 10)
    epochs = args.epochs or (3 if args.quick else 20)
    started = time.perf_counter()

    task = finetune_task()
    torch.manual_seed(0)
    model = task.model()
    loader = make_loader(task.train, batch_size=task.batch_size, shuffle=True, device="cpu", seed=0)
    opt = build_optimizer(OptimizerSpec("sgd"), model.parameters(), lr=1e-7)
    found = LRFinder(model, opt, task.loss, device="cpu").range_test(
        loader, num_iter=30 if args.quick else 100, repeats=1 if args.quick else 3, seed=0
    )
    bounds = LRBounds(found.lr_low, found.lr_high, found.suggested_lr)
    spaces = {
        "global LR": SearchSpace(bounds={"sgd": bounds}, schedules=("cosine",)),
        "per-part factors": SearchSpace(bounds={"sgd": bounds}, schedules=("cosine",), param_groups=PARTS),
    }
    fresh_seeds = [100_000 + i for i in range(fresh)]
    print(
        f"digits-finetune: {len(task.train)} training / {len(task.val)} validation examples, SGD momentum 0.9, "
        f"{epochs} epochs, {trials} trials per search, {searches} search seed(s), {fresh} fresh seeds"
    )
    print(
        f"range test: suggested {bounds.suggested_lr:.3g}, bounds {bounds.lr_low:.3g}..{bounds.lr_high:.3g}\n"
    )

    rows: list[list[str]] = []
    means: dict[str, list[float]] = {name: [] for name in spaces}
    steps_per_epoch = -(-len(task.train) // task.batch_size)  # type: ignore[arg-type]
    baseline_plan = sample(
        optuna.trial.FixedTrial(baseline_params(spaces["global LR"])),
        spaces["global LR"],
        total_steps=epochs * steps_per_epoch,
        steps_per_epoch=steps_per_epoch,
    )
    val, test, _ = fresh_figures(task, baseline_plan, epochs=epochs, seeds=fresh_seeds)
    rows.append(["finder only (no search)", "-", describe(baseline_plan), "-", val, test])
    for k in range(searches):
        for name, space in spaces.items():
            plan, value = search(task, space, trials=trials, epochs=epochs, seed=k)
            val, test, mean = fresh_figures(task, plan, epochs=epochs, seeds=fresh_seeds)
            means[name].append(mean)
            rows.append([name, str(k), describe(plan), f"{value:.4f}", val, test])
    widths = [max(len(row[i]) for row in [*rows, _HEADERS]) for i in range(len(_HEADERS))]
    for row in [_HEADERS, ["-" * w for w in widths], *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    print()
    for name, values in means.items():
        print(f"{name:<17} mean over searches of the fresh-seed means: {statistics.fmean(values):.4f}")
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


_HEADERS = ["search", "seed", "winner", "search best", "fresh-seed val acc", "fresh-seed test acc"]


if __name__ == "__main__":
    main()
