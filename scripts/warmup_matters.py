"""How much does warmup matter? The sort-transformer task trained with and without it, on fresh seeds.

For each layer-norm placement (post-LN, the task's default, and pre-LN):

1. lrtune's range test (Adam, the task's train set, ``repeats`` sweeps) gives ``suggested_lr`` and
   ``lr_high``.
2. For each peak LR (by default ``lr_high`` and three times ``lr_high``; ``--peaks suggested`` adds the
   suggestion, where a short run needs no warmup), the task is trained for ``--epochs`` epochs on
   ``--seeds`` fresh seeds with three schedules that share that peak:

   - ``cosine``: cosine decay to peak/100 from the first step (no warmup);
   - ``cosine+warmup``: the same after a linear warmup over ``--warmup-frac`` of the steps;
   - ``inverse_sqrt``: the "Noam" schedule, warmup over the same steps, then peak·sqrt(warmup/k).

3. The final validation token accuracy and loss are printed as mean ± std over the seeds, side by side,
   with how many runs diverged. "Warmup gain" is cosine+warmup minus cosine.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/warmup_matters.py            # about 7 minutes on one core
    OMP_NUM_THREADS=1 .venv/bin/python scripts/warmup_matters.py --quick    # well under a minute
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lrtune.data import make_loader, resolve_device
from lrtune.finder import LRFinder
from lrtune.models import TinyTransformer
from lrtune.optimizers import OptimizerSpec, build_optimizer
from lrtune.tasks import Task, load_task
from lrtune.trainer import TrainSettings, fit

SCHEDULES = ("cosine", "cosine+warmup", "inverse_sqrt")
NORMS = {"post": False, "pre": True}
PEAKS = ("suggested", "lr_high", "3x_lr_high")


def with_norm(task: Task, norm: str) -> Task:
    """The sort-transformer task with post-LN or pre-LN layers (everything else unchanged)."""
    built = task.model
    if not isinstance(built, functools.partial) or built.func is not TinyTransformer:
        raise SystemExit(f"error: the {task.name} task no longer builds a TinyTransformer")
    model = functools.partial(TinyTransformer, *built.args, **{**built.keywords, "norm_first": NORMS[norm]})
    return dataclasses.replace(task, name=f"{task.name}-{norm}-ln", model=model)


def find_peaks(task: Task, args: argparse.Namespace) -> tuple[float, float]:
    """The range test's suggested_lr and lr_high for this task with Adam."""
    import torch

    device = resolve_device(args.device)
    torch.manual_seed(0)
    model = task.model().to(device)
    optimizer = build_optimizer(OptimizerSpec("adam"), model.parameters(), lr=1e-7)
    loader = make_loader(task.train, batch_size=task.batch_size, shuffle=True, device=device, seed=0)
    result = LRFinder(model, optimizer, None, device=device).range_test(
        loader, num_iter=args.num_iter, repeats=args.repeats, seed=0
    )
    return result.suggested_lr, result.lr_high


def schedule(name: str, peak: float, warmup: int) -> dict[str, Any]:
    """The spec of one compared schedule at a given peak LR."""
    if name == "cosine":
        return {"type": "cosine", "base_lr": peak, "min_lr": peak / 100}
    if name == "cosine+warmup":
        return {"type": "cosine", "base_lr": peak, "min_lr": peak / 100, "warmup_steps": warmup}
    return {"type": "inverse_sqrt", "base_lr": peak, "warmup_steps": warmup}


def mean_std(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.3f} ± {std:.3f}"


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = load_task("sort-transformer")
    if args.train_size is not None:
        base = dataclasses.replace(base, train=_subset(base.train, args.train_size))
    steps_per_epoch = -(-len(base.train) // base.batch_size)  # type: ignore[arg-type]
    warmup = max(1, round(args.warmup_frac * args.epochs * steps_per_epoch))
    rows: list[dict[str, Any]] = []
    for norm in args.norms:
        task = with_norm(base, norm)
        started = time.perf_counter()
        suggested, high = find_peaks(task, args)
        print(
            f"{norm}-LN: finder suggested_lr {suggested:.3g}, lr_high {high:.3g} "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        peaks = {"suggested": suggested, "lr_high": high, "3x_lr_high": 3 * high}
        for peak_name in args.peaks:
            peak = peaks[peak_name]
            for name in SCHEDULES:
                accs: list[float] = []
                losses: list[float] = []
                diverged = 0
                for seed in range(1, args.seeds + 1):  # fresh seeds: the finder used seed 0
                    result = fit(
                        task,
                        optimizer=OptimizerSpec("adam"),
                        schedule=schedule(name, peak, warmup),
                        settings=TrainSettings(epochs=args.epochs, seed=seed, device=args.device),
                    )
                    final = result.final()
                    diverged += result.diverged
                    losses.append(final.val_loss)
                    accs.append(final.val_metric if final.val_metric is not None else float("nan"))
                row = {
                    "norm": norm,
                    "peak": peak_name,
                    "lr": peak,
                    "schedule": name,
                    "acc": accs,
                    "loss": losses,
                    "diverged": diverged,
                }
                rows.append(row)
                print(
                    f"  {norm}-LN peak={peak_name} ({peak:.3g}) {name:<14} acc {mean_std(accs)}  "
                    f"loss {mean_std(losses)}  diverged {diverged}/{args.seeds}",
                    flush=True,
                )
    return rows


def _subset(dataset: Any, size: int) -> Any:
    from torch.utils.data import Subset

    return Subset(dataset, range(min(size, len(dataset))))


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace, warmup_note: str) -> None:
    print()
    print(
        f"final val token accuracy / val loss, mean ± std over {args.seeds} fresh seeds, {args.epochs} epochs"
    )
    print(warmup_note)
    header = f"{'LN':<5} {'peak LR':<19} " + " ".join(f"{s:<30}" for s in SCHEDULES) + " warmup gain (acc)"
    print(header)
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["norm"], row["peak"]), {})[row["schedule"]] = row
    for (norm, peak_name), by_schedule in groups.items():
        lr = next(iter(by_schedule.values()))["lr"]
        cells = []
        for name in SCHEDULES:
            row = by_schedule[name]
            cells.append(f"{mean_std(row['acc'])} / {statistics.fmean(row['loss']):.3f}".ljust(30))
        gain = statistics.fmean(by_schedule["cosine+warmup"]["acc"]) - statistics.fmean(
            by_schedule["cosine"]["acc"]
        )
        print(f"{norm:<5} {peak_name + f' {lr:.3g}':<19} " + " ".join(cells) + f" {gain:+.3f}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (default 3)")
    parser.add_argument("--seeds", type=int, default=3, help="fresh seeds per cell (default 3)")
    parser.add_argument("--warmup-frac", type=float, default=0.1, help="warmup, as a fraction of all steps")
    parser.add_argument("--norms", default="post,pre", help="layer-norm placements: post,pre")
    parser.add_argument(
        "--peaks",
        default="lr_high,3x_lr_high",
        help=f"peak LRs from the finder, some of {', '.join(PEAKS)} (default: lr_high,3x_lr_high)",
    )
    parser.add_argument("--num-iter", type=int, default=200, help="range-test updates per sweep")
    parser.add_argument("--repeats", type=int, default=3, help="range-test sweeps")
    parser.add_argument("--train-size", type=int, default=None, help="use only this many training sequences")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="1 epoch, 2 seeds, post-LN, 3x lr_high: seconds")
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.seeds, args.norms, args.peaks = 1, 2, "post", "3x_lr_high"
        args.num_iter, args.repeats, args.train_size = 100, 1, 2000
    args.norms = [n.strip() for n in args.norms.split(",") if n.strip()]
    args.peaks = [p.strip() for p in args.peaks.split(",") if p.strip()]
    if args.epochs < 1 or args.seeds < 1 or args.num_iter < 10 or args.repeats < 1:
        parser.error("--epochs, --seeds and --repeats must be >= 1 and --num-iter >= 10")
    if not 0 < args.warmup_frac < 1:
        parser.error(f"--warmup-frac must lie in (0, 1), got {args.warmup_frac}")
    if not args.norms or any(n not in NORMS for n in args.norms):
        parser.error(f"--norms must name some of {', '.join(NORMS)}, got {','.join(args.norms)!r}")
    if not args.peaks or any(p not in PEAKS for p in args.peaks):
        parser.error(f"--peaks must name some of {', '.join(PEAKS)}, got {','.join(args.peaks)!r}")
    if args.train_size is not None and args.train_size < 64:
        parser.error("--train-size must be at least 64")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    rows = run(args)
    note = f"warmup: {args.warmup_frac:.0%} of the steps (cosine+warmup and inverse_sqrt)"
    print_table(rows, args, note)
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
