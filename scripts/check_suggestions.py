"""Does the finder's suggestion hold up in real training? A constant-LR grid against the suggestion.

For each task (and optimizer):

1. lrtune's range test (the task's model, its train set via :func:`lrtune.data.make_loader`, the default
   sweep, ``repeats=3``) gives ``suggested_lr``, ``lr_low``, ``lr_high``, flags and the estimators.
2. The task is trained with :func:`lrtune.trainer.fit` at a grid of constant LRs (log-spaced, ``--per-decade``
   per decade from ``--min-lr`` up to where training diverges or stops beating the untrained model) for a few
   epochs with several seeds. A run's score is its final validation metric where the task has one (accuracy),
   else its final validation loss; a diverged run scores as the worst score seen on that task (the untrained
   model included). Scores are averaged over the seeds.
3. The task is trained at the suggested LR with the same seeds.
4. Relative regret of the suggestion: for a maximized metric ``(best - sugg) / |best|``; for a loss
   ``(L_sugg - L_best) / (L_0 - L_best)`` with ``L_0`` the untrained model's validation loss: the fraction of
   the achievable improvement lost (unchanged by shifting the loss, so it works for negative losses).

Goals, per task: regret <= 0.05 and the best grid LR inside ``lr_low .. lr_high``.

Run from the repository root::

    .venv/bin/python scripts/check_suggestions.py --plot suggestions.png   # about 5 minutes on 2 cores
    .venv/bin/python scripts/check_suggestions.py --quick                   # about a minute
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lrtune.data import make_loader, resolve_device
from lrtune.errors import UsageError
from lrtune.finder import FinderResult, LRFinder
from lrtune.optimizers import OPTIMIZER_NAMES, OptimizerSpec, build_optimizer
from lrtune.tasks import TASKS, Task, load_task
from lrtune.trainer import TrainSettings, evaluate, fit

MAX_REGRET = 0.05
ESTIMATORS = ("steepest", "valley", "minimum", "minimum_div10")
DEFAULT_CASES = "digits:sgd:10,digits:adam:10,friedman:sgd:20,friedman-nll:adam:20"
QUICK_CASES = "digits:sgd:4,friedman-nll:adam:5"


@dataclass(frozen=True)
class Case:
    """One task trained with one optimizer for some epochs."""

    task: str
    optimizer: str
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.task}/{self.optimizer}"


@dataclass
class Point:
    """The runs at one learning rate: each seed's final score (``None``: diverged)."""

    lr: float
    raw: list[float | None] = field(default_factory=list)

    @property
    def diverged(self) -> int:
        return sum(v is None for v in self.raw)

    def scores(self, worst: float) -> list[float]:
        return [worst if v is None else v for v in self.raw]

    def mean(self, worst: float) -> float:
        return statistics.fmean(self.scores(worst))


@dataclass
class Outcome:
    """Everything measured on one case."""

    case: Case
    finder: FinderResult
    maximize: bool
    score_name: str
    untrained: float  # mean score of the untrained models (L_0 for a loss)
    grid: list[Point]
    sugg: Point
    worst: float = math.nan
    seconds: float = 0.0

    def better(self, a: float, b: float) -> bool:
        return a > b if self.maximize else a < b

    def best(self) -> Point:
        best = self.grid[0]
        for p in self.grid[1:]:
            if self.better(p.mean(self.worst), best.mean(self.worst)):
                best = p
        return best

    def regret_of(self, score: float) -> float:
        best = self.best().mean(self.worst)
        if self.maximize:
            return (best - score) / abs(best) if best != 0 else math.inf
        achievable = self.untrained - best
        return (score - best) / achievable if achievable > 0 else math.inf

    def regret(self) -> float:
        return self.regret_of(self.sugg.mean(self.worst))

    def best_inside(self) -> bool:
        lr = self.best().lr
        return self.finder.lr_low <= lr <= self.finder.lr_high

    def passed(self) -> bool:
        return self.regret() <= MAX_REGRET and self.best_inside()


# --------------------------------------------------------------------------- measuring


def run_finder(task: Task, case: Case, device: torch.device, repeats: int) -> FinderResult:
    """The range test ``lrtune find`` runs: seed 0, the task's batch size, the default sweep."""
    torch.manual_seed(0)
    model = task.model().to(device)
    optimizer = build_optimizer(OptimizerSpec(case.optimizer), model.parameters(), lr=1e-7)
    loader = make_loader(task.train, batch_size=task.batch_size, shuffle=True, device=device, seed=0)
    return LRFinder(model, optimizer, task.loss, device=device).range_test(loader, repeats=repeats, seed=0)


def untrained_score(task: Task, seeds: Sequence[int], device: torch.device) -> float:
    """Mean validation score of the freshly initialised models (built the way ``fit`` builds them)."""
    values = []
    val = make_loader(task.val, batch_size=2 * task.batch_size, shuffle=False, device=device)
    for seed in seeds:
        torch.manual_seed(seed)
        loss, metric = evaluate(task.model().to(device), val, task)
        values.append(loss if task.metric is None else float(metric if metric is not None else math.nan))
    return statistics.fmean(values)


def train_point(task: Task, case: Case, lr: float, seeds: Sequence[int], device: str) -> Point:
    """Train at a constant ``lr`` once per seed; keep each final score (``None`` when it diverged)."""
    point = Point(lr)
    for seed in seeds:
        result = fit(
            task,
            optimizer=OptimizerSpec(case.optimizer),
            schedule=None,
            base_lr=lr,
            settings=TrainSettings(epochs=case.epochs, seed=seed, device=device),
        )
        final = result.final()
        value = final.val_loss if task.metric is None else final.val_metric
        ok = (
            not result.diverged
            and value is not None
            and math.isfinite(value)
            and math.isfinite(final.val_loss)
        )
        point.raw.append(float(value) if ok and value is not None else None)
    return point


def log_grid(low: float, high: float, per_decade: int) -> list[float]:
    """LRs ``10**(k/per_decade)`` from ``low`` to ``high`` (both rounded onto the lattice)."""
    k0 = math.floor(math.log10(low) * per_decade + 1e-9)
    k1 = math.ceil(math.log10(high) * per_decade - 1e-9)
    return [10.0 ** (k / per_decade) for k in range(k0, k1 + 1)]


def hopeless(point: Point, untrained: float, maximize: bool) -> bool:
    """Every seed diverged, or no seed beat the untrained model."""
    finite = [v for v in point.raw if v is not None]
    if not finite:
        return True
    return all((v <= untrained) if maximize else (v >= untrained) for v in finite)


def measure(case: Case, args: argparse.Namespace, device: torch.device) -> Outcome:
    started = time.perf_counter()
    task = load_task(case.task)
    maximize = task.metric is not None and task.metric_mode == "max"
    score_name = (
        "val accuracy" if task.metric == "accuracy" else ("val metric" if task.metric else "val loss")
    )
    seeds = list(range(args.seeds))
    finder = run_finder(task, case, device, args.finder_repeats)
    untrained = untrained_score(task, seeds, device)
    dev = str(device)

    # The grid: upwards from --min-lr until two LRs in a row are hopeless (or --max-lr), then downwards
    # while the best LR is the lowest one tried.
    grid: list[Point] = []
    run_of_hopeless = 0
    for lr in log_grid(args.min_lr, args.max_lr, args.per_decade):
        point = train_point(task, case, lr, seeds, dev)
        grid.append(point)
        print(f"  {case.label}: lr {lr:.3g}: {fmt_raw(point.raw)}", flush=True)
        run_of_hopeless = run_of_hopeless + 1 if hopeless(point, untrained, maximize) else 0
        if run_of_hopeless >= 2:
            break
    outcome = Outcome(case, finder, maximize, score_name, untrained, grid, Point(finder.suggested_lr))
    outcome.worst = worst_score(outcome)
    floor = args.min_lr / 10**3
    while outcome.best() is grid[0] and grid[0].lr / 10 ** (1 / args.per_decade) >= floor:
        lr = grid[0].lr / 10 ** (1 / args.per_decade)
        grid.insert(0, train_point(task, case, lr, seeds, dev))
        print(f"  {case.label}: lr {lr:.3g}: {fmt_raw(grid[0].raw)}", flush=True)
        outcome.worst = worst_score(outcome)
    outcome.sugg = train_point(task, case, finder.suggested_lr, seeds, dev)
    print(f"  {case.label}: suggested lr {finder.suggested_lr:.3g}: {fmt_raw(outcome.sugg.raw)}", flush=True)
    outcome.worst = worst_score(outcome)
    outcome.seconds = time.perf_counter() - started
    return outcome


def worst_score(outcome: Outcome) -> float:
    """The worst finite score on the task (the untrained model's included): what a diverged run scores."""
    values = [outcome.untrained]
    for p in [*outcome.grid, outcome.sugg]:
        values += [v for v in p.raw if v is not None]
    return min(values) if outcome.maximize else max(values)


# --------------------------------------------------------------------------- reporting


def fmt_raw(raw: Sequence[float | None]) -> str:
    return " ".join("diverged" if v is None else f"{v:.4f}" for v in raw)


def decades(a: float, b: float) -> float:
    """log10(a / b): how many decades a sits above b."""
    return math.log10(a / b)


def good_range(outcome: Outcome) -> tuple[float, float] | None:
    """Lowest and highest grid LR whose mean score is within the regret goal of the best."""
    good = [p.lr for p in outcome.grid if outcome.regret_of(p.mean(outcome.worst)) <= MAX_REGRET]
    return (min(good), max(good)) if good else None


def report_case(outcome: Outcome) -> None:
    f, w = outcome.finder, outcome.worst
    best = outcome.best()
    print()
    print(
        f"{outcome.case.label}: {outcome.case.epochs} epochs, {len(outcome.sugg.raw)} seeds, score = final "
        f"{outcome.score_name} ({'higher' if outcome.maximize else 'lower'} is better); untrained "
        f"{outcome.untrained:.4f}; a diverged run scores {w:.4f}  [{outcome.seconds:.0f} s]"
    )
    print(f"  {'lr':>10}  {'mean':>9}  {'sd':>7}  {'regret':>8}  diverged  note")
    rows = sorted([*outcome.grid, outcome.sugg], key=lambda p: p.lr)
    for p in rows:
        scores = p.scores(w)
        sd = statistics.stdev(scores) if len(scores) > 1 else 0.0
        notes = []
        if p is outcome.sugg:
            notes.append("<- suggested")
        if p is best:
            notes.append("<- best of the grid")
        if f.lr_low <= p.lr <= f.lr_high:
            notes.append("in bounds")
        regret = outcome.regret_of(p.mean(w))
        print(
            f"  {p.lr:>10.3g}  {p.mean(w):>9.4f}  {sd:>7.4f}  {regret:>8.3f}  "
            f"{p.diverged}/{len(p.raw):<6}  {', '.join(notes)}"
        )
    est = ", ".join(f"{k} {f.estimates[k]:.3g}" for k in ESTIMATORS if k in f.estimates)
    print(
        f"  finder: suggested {f.suggested_lr:.3g}, bounds {f.lr_low:.3g} .. {f.lr_high:.3g}, flags "
        f"{','.join(f.flags) or '-'}, confidence {f.confidence or '-'}, spread "
        f"{'-' if f.spread_decades is None else f'{f.spread_decades:.2f}'} decades"
    )
    print(f"  estimators: {est}")
    where = ", ".join(
        f"{decades(best.lr, f.estimates[k]):+.2f} vs {k}" for k in ESTIMATORS if k in f.estimates
    )
    print(
        f"  best grid LR {best.lr:.3g}: {decades(best.lr, f.suggested_lr):+.2f} decades vs suggested, {where}"
    )
    if best.lr > f.lr_high:
        print(f"  best grid LR is {decades(best.lr, f.lr_high):.2f} decades above lr_high")
    elif best.lr < f.lr_low:
        print(f"  best grid LR is {decades(f.lr_low, best.lr):.2f} decades below lr_low")
    good = good_range(outcome)
    if good is not None:
        print(f"  grid LRs within {MAX_REGRET:.0%} regret of the best: {good[0]:.3g} .. {good[1]:.3g}")


def summary_table(outcomes: Sequence[Outcome]) -> None:
    print()
    header = (
        f"{'task/optimizer':<20} {'suggested':>9} {'lr_low':>9} {'lr_high':>9} {'best LR':>9} "
        f"{'best':>8} {'at sugg':>8} {'regret':>7} {'best in':>7}  {'goal':<5} flags"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        f, best = o.finder, o.best()
        print(
            f"{o.case.label:<20} {f.suggested_lr:>9.3g} {f.lr_low:>9.3g} {f.lr_high:>9.3g} {best.lr:>9.3g} "
            f"{best.mean(o.worst):>8.4f} {o.sugg.mean(o.worst):>8.4f} {o.regret():>7.3f} "
            f"{'yes' if o.best_inside() else 'no':>7}  {'PASS' if o.passed() else 'MISS':<5} {','.join(f.flags) or '-'}"
        )
    print("-" * len(header))
    print(
        f"goal per task: regret <= {MAX_REGRET} (accuracy: (best - sugg)/|best|; loss: (L_sugg - L_best)/"
        "(L_0 - L_best)) and the best grid LR inside lr_low .. lr_high"
    )
    regrets = [o.regret() for o in outcomes]
    n = len(outcomes)
    low_regret = sum(r <= MAX_REGRET for r in regrets)
    inside = sum(o.best_inside() for o in outcomes)
    passed = sum(o.passed() for o in outcomes)
    print(
        f"summary: {passed}/{n} tasks PASS; regret <= {MAX_REGRET} on {low_regret}/{n} (worst "
        f"{max(regrets):.3f}, median {statistics.median(regrets):.3f}); best grid LR inside the bounds on "
        f"{inside}/{n}"
    )


def plot(outcomes: Sequence[Outcome], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = min(2, len(outcomes))
    rows = math.ceil(len(outcomes) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6.0 * cols, 4.0 * rows), squeeze=False)
    for ax, o in zip(axes.flat, outcomes, strict=False):
        f, w = o.finder, o.worst
        lrs = [p.lr for p in o.grid]
        ax.plot(lrs, [p.mean(w) for p in o.grid], "o-", color="tab:blue", label="grid (mean over seeds)")
        for p in o.grid:
            ax.scatter([p.lr] * len(p.raw), p.scores(w), s=8, color="tab:blue", alpha=0.35)
        ax.axvspan(f.lr_low, f.lr_high, color="tab:green", alpha=0.12, label="lr_low .. lr_high")
        ax.axvline(f.suggested_lr, color="tab:red", linestyle="--", label=f"suggested {f.suggested_lr:.3g}")
        ax.scatter([f.suggested_lr], [o.sugg.mean(w)], marker="*", s=160, color="tab:red", zorder=5)
        best = o.best()
        ax.scatter([best.lr], [best.mean(w)], marker="D", s=50, facecolor="none", edgecolor="black", zorder=5,
                   label=f"best grid {best.lr:.3g}")  # fmt: skip
        ax.axhline(o.untrained, color="gray", linestyle=":", linewidth=1, label="untrained")
        for name, color in zip(
            ESTIMATORS, ("tab:purple", "tab:orange", "tab:brown", "tab:olive"), strict=True
        ):
            if name in f.estimates:
                ax.axvline(f.estimates[name], color=color, linestyle=":", linewidth=1, label=name)
        ax.set_xscale("log")
        ax.set_xlabel("constant learning rate")
        ax.set_ylabel(o.score_name)
        ax.set_title(f"{o.case.label} ({o.case.epochs} epochs): regret {o.regret():.3f}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(outcomes) :]:
        ax.set_visible(False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --------------------------------------------------------------------------- command line


def parse_cases(text: str, parser: argparse.ArgumentParser) -> list[Case]:
    cases = []
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 3:
            parser.error(f"--tasks entries look like TASK:OPTIMIZER:EPOCHS, got {item!r}")
        name, opt, epochs = parts
        if name not in TASKS:
            parser.error(f"unknown task {name!r}; built-in tasks: {', '.join(TASKS)}")
        if opt not in OPTIMIZER_NAMES:
            parser.error(f"unknown optimizer {opt!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}")
        if not epochs.isdigit() or int(epochs) < 1:
            parser.error(f"epochs must be a positive integer, got {item!r}")
        cases.append(Case(name, opt, int(epochs)))
    return cases


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Check lrtune's suggested LR against a grid of constant-LR training runs: regret of the "
        "suggestion and whether the best grid LR lies inside the finder's bounds.",
    )
    parser.add_argument(
        "--tasks",
        default=None,
        help=f"comma-separated TASK:OPTIMIZER:EPOCHS (default {DEFAULT_CASES})",
    )
    parser.add_argument("--seeds", type=int, default=3, help="training seeds per LR (default 3)")
    parser.add_argument("--per-decade", type=int, default=3, help="grid LRs per decade (default 3)")
    parser.add_argument("--min-lr", type=float, default=1e-4, help="lowest grid LR (default 1e-4)")
    parser.add_argument("--max-lr", type=float, default=10.0, help="highest grid LR (default 10)")
    parser.add_argument("--finder-repeats", type=int, default=3, help="range-test repeats (default 3)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--plot", type=Path, default=None, help="save score vs LR per task to this PNG")
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"a short run ({QUICK_CASES}, 2 seeds, 2 LRs per decade from 1e-3): about a minute",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.tasks = args.tasks or QUICK_CASES
        args.seeds, args.per_decade, args.min_lr = 2, 2, 1e-3
    args.cases = parse_cases(args.tasks or DEFAULT_CASES, parser)
    for name in ("seeds", "per_decade", "finder_repeats", "threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if not (0 < args.min_lr < args.max_lr and math.isfinite(args.max_lr)):
        parser.error(f"need 0 < --min-lr < --max-lr, got {args.min_lr} and {args.max_lr}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    wall_start = time.perf_counter()
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except UsageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(
        f"suggestion check: torch {torch.__version__}, numpy {np.__version__}, device {device}, "
        f"torch threads {torch.get_num_threads()}; {args.seeds} seeds, {args.per_decade} LRs per decade from "
        f"{args.min_lr:g}, finder repeats {args.finder_repeats} (default sweep)",
        flush=True,
    )
    outcomes = []
    for case in args.cases:
        print(f"{case.label}: range test, then the grid", flush=True)
        outcomes.append(measure(case, args, device))
    for o in outcomes:
        report_case(o)
    summary_table(outcomes)
    if args.plot is not None:
        plot(outcomes, args.plot)
        print(f"plot: {args.plot}")
    print(f"wall time {time.perf_counter() - wall_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
