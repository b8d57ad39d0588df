"""Does a cyclical learning rate reach a fixed rate's accuracy in fewer iterations? (Smith, 2015/2017)

Smith's claim: a triangular cyclical LR between bounds found by the range test reaches the accuracy of
the best fixed learning rate in fewer iterations, and ends at least as well. Measured here on MNIST-1D
with a small residual 1-D CNN (SGD, momentum 0.9, batch 100), every configuration over the same seeds:

- ``fixed``: a constant LR on a log-spaced grid from the range test's ``lr_low`` to its ``lr_high``;
- ``CLR``: lrtune's ``cyclic`` schedule in ``triangular`` mode from ``lr_low`` up to ``lr_high`` and back,
  with Smith's step size (half a cycle) of 2 and of E/2 epochs' worth of iterations (E = epochs).

The target accuracy is the mean final accuracy of the best fixed rate. For every configuration the
table gives the final validation accuracy (mean ± std over seeds) and the iterations until the end of
the first epoch at or above the target (median over seeds; runs that never reach it are counted
apart). Accuracy is measured once per epoch, so iteration counts are multiples of an epoch.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_clr.py            # 2,559 s measured on 2 cores shared with other jobs
    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_clr.py --quick    # seconds: a smoke run, no claim
"""

from __future__ import annotations

import math
import statistics
import time
from pathlib import Path

import torch
from claims_common import (
    DOCS,
    claim_parser,
    mean_std,
    mnist1d_task,
    positive_int,
    print_table,
    range_test,
    train,
)

from lrtune.optimizers import OptimizerSpec


def main(argv: list[str] | None = None) -> None:
    parser = claim_parser(__doc__, "clr-vs-fixed.png")
    parser.add_argument(
        "--grid", type=positive_int, default=None, help="fixed rates in the grid [default: 5, quick 2]"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or (1 if args.quick else 5)
    epochs = args.epochs or (2 if args.quick else 12)
    grid_size = args.grid or (2 if args.quick else 5)
    plot_path = args.plot or DOCS / "clr-vs-fixed.png"
    task = mnist1d_task(n_train=400, n_val=200) if args.quick else mnist1d_task()
    sgd = OptimizerSpec("sgd")
    started = time.perf_counter()

    bounds = range_test(task, sgd, num_iter=30 if args.quick else 100, repeats=1 if args.quick else 3)
    steps_per_epoch = math.ceil(len(task.train) / task.batch_size)  # type: ignore[arg-type]
    total = epochs * steps_per_epoch
    ratio = bounds.lr_high / bounds.lr_low
    grid = [bounds.lr_low * ratio ** (i / max(1, grid_size - 1)) for i in range(grid_size)]
    configs: dict[str, dict[str, object]] = {
        f"fixed {lr:.3g}": {"type": "constant", "base_lr": lr} for lr in grid
    }
    for step_epochs in sorted({min(2, max(1, epochs // 2)), max(1, epochs // 2)}):
        configs[f"CLR step {step_epochs} ep"] = {
            "type": "cyclic",
            "base_lr": bounds.lr_high,
            "min_lr": bounds.lr_low,
            "cycle_steps": 2 * step_epochs * steps_per_epoch,
            "mode": "triangular",
        }
    runs = {
        name: [
            train(task, optimizer=sgd, schedule=dict(spec), epochs=epochs, seed=seed) for seed in range(seeds)
        ]
        for name, spec in configs.items()
    }
    fixed = [name for name in configs if name.startswith("fixed")]
    best_fixed = max(fixed, key=lambda name: statistics.fmean(r.final for r in runs[name]))
    target = statistics.fmean(r.final for r in runs[best_fixed])

    print(
        f"MNIST-1D, residual 1-D CNN, SGD momentum 0.9, batch {task.batch_size}, {epochs} epochs × "
        f"{steps_per_epoch} iterations, {seeds} seed(s), torch threads {torch.get_num_threads()}"
    )
    print(
        f"range test: lr_low {bounds.lr_low:.3g}, lr_high {bounds.lr_high:.3g}, suggested {bounds.suggested_lr:.3g}"
    )
    print(f"target: {target:.4f} = mean final accuracy of the best fixed rate ({best_fixed})\n")
    rows = []
    for name, items in runs.items():
        mean, std = mean_std(r.final for r in items)
        reached = [s for s in (r.steps_to(target) for r in items) if s is not None]
        median = f"{statistics.median(reached):.0f}" if reached else "never"
        rows.append(
            [
                name + (" (best fixed)" if name == best_fixed else ""),
                f"{mean:.4f} ± {std:.4f}",
                median,
                f"{len(reached)}/{len(items)}",
                f"{sum(r.diverged for r in items)}",
            ]
        )
    print_table(["configuration", "final val acc", "iters to target", "reached", "diverged"], rows)
    print(f"\n{total} iterations per run; wall time {time.perf_counter() - started:.0f} s")
    _plot(runs, best_fixed, target, plot_path)
    print(f"plot: {plot_path}")


def _plot(runs: dict[str, list], best_fixed: str, target: float, path: Path) -> None:  # type: ignore[type-arg]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for name, items in runs.items():
        if name.startswith("fixed") and name != best_fixed:
            style = {"color": "0.75", "linewidth": 1}
        else:
            style = {"linewidth": 2}
        steps = items[0].steps
        mean = [statistics.fmean(r.accuracy[i] for r in items) for i in range(len(steps))]
        ax.plot(steps, mean, marker="o", markersize=3, label=name, **style)
    ax.axhline(target, color="k", linestyle=":", linewidth=1, label=f"target {target:.3f}")
    ax.set_xlabel("iterations")
    ax.set_ylabel("validation accuracy (mean over seeds)")
    ax.set_ylim(max(0.0, target - 0.35), min(1.0, target + 0.08))
    ax.set_title("Triangular CLR vs fixed learning rates (MNIST-1D, residual CNN)")
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
