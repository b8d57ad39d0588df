"""Does Learning Rate Dropout help? (Lin et al., 2019) Measured against the same schedule without it.

LR dropout keeps each coordinate's update with probability p (lrtune's ``lr_dropout`` key, p = 1 is
off). The paper reports gains on several tasks; on ResNet-34 / CIFAR-10 its own table shows 95.45 %
without and 94.43 % with it. Here: MNIST-1D with a small residual 1-D CNN, batch 100, a cosine
schedule from the range test's suggested rate down to 1 % of it, for SGD (momentum 0.9) and Adam,
with keep probabilities 0.9, 0.7 and 0.5 against 1 (off); every configuration over the same seeds.

The table gives the final and the best-epoch validation accuracy and the final training loss
(mean ± std over seeds), and the difference of the final accuracy to p = 1 with the seeds paired.

Run from the repository root::

    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_lr_dropout.py            # 2,662 s measured on 2 cores shared with other jobs
    OMP_NUM_THREADS=1 .venv/bin/python scripts/check_lr_dropout.py --quick    # seconds: a smoke run, no claim
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
from claims_common import DOCS, Run, claim_parser, mean_std, mnist1d_task, print_table, range_test, train

from lrtune.optimizers import OptimizerSpec

KEEPS = (1.0, 0.9, 0.7, 0.5)


def main(argv: list[str] | None = None) -> None:
    parser = claim_parser(__doc__, "lr-dropout.png")
    parser.add_argument(
        "--optimizers", default=None, help="comma-separated optimizers [default: sgd,adam, quick sgd]"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    seeds = args.seeds or (1 if args.quick else 5)
    epochs = args.epochs or (2 if args.quick else 12)
    optimizers = (args.optimizers or ("sgd" if args.quick else "sgd,adam")).split(",")
    keeps = (1.0, 0.5) if args.quick else KEEPS
    plot_path = args.plot or DOCS / "lr-dropout.png"
    task = mnist1d_task(n_train=400, n_val=200) if args.quick else mnist1d_task()
    started = time.perf_counter()

    print(
        f"MNIST-1D, residual 1-D CNN, batch {task.batch_size}, cosine to 1 % over {epochs} epochs, "
        f"{seeds} seed(s), torch threads {torch.get_num_threads()}"
    )
    results: dict[str, dict[float, list[Run]]] = {}
    rows = []
    for name in optimizers:
        spec = OptimizerSpec(name)
        bounds = range_test(task, spec, num_iter=30 if args.quick else 100, repeats=1 if args.quick else 3)
        base = bounds.suggested_lr
        print(f"{name}: range test suggests {base:.3g} (bounds {bounds.lr_low:.3g}..{bounds.lr_high:.3g})")
        results[name] = {}
        for keep in keeps:
            schedule = {"type": "cosine", "base_lr": base, "min_lr": base / 100, "lr_dropout": keep}
            results[name][keep] = [
                train(task, optimizer=spec, schedule=schedule, epochs=epochs, seed=seed)
                for seed in range(seeds)
            ]
        off = results[name][1.0]
        for keep, items in results[name].items():
            final_mean, final_std = mean_std(r.final for r in items)
            best_mean, best_std = mean_std(max(r.accuracy) for r in items)
            loss_mean, loss_std = mean_std(r.train_loss for r in items)
            diff_mean, diff_std = mean_std(r.final - o.final for r, o in zip(items, off, strict=True))
            rows.append(
                [
                    name,
                    "off" if keep == 1.0 else f"{keep:g}",
                    f"{final_mean:.4f} ± {final_std:.4f}",
                    f"{best_mean:.4f} ± {best_std:.4f}",
                    f"{loss_mean:.4f} ± {loss_std:.4f}",
                    "-" if keep == 1.0 else f"{diff_mean:+.4f} ± {diff_std:.4f}",
                    f"{sum(1 for r, o in zip(items, off, strict=True) if r.final > o.final)}/{len(items)}",
                ]
            )
    print()
    print_table(
        [
            "optimizer",
            "keep p",
            "final val acc",
            "best-epoch acc",
            "final train loss",
            "Δ final vs off",
            "wins",
        ],
        rows,
    )
    print(f"\nwall time {time.perf_counter() - started:.0f} s")
    _plot(results, plot_path)
    print(f"plot: {plot_path}")


def _plot(results: dict[str, dict[float, list[Run]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2), squeeze=False)
    for ax, (name, by_keep) in zip(axes[0], results.items(), strict=True):
        for keep, items in by_keep.items():
            steps = items[0].steps
            mean = [statistics.fmean(r.accuracy[i] for r in items) for i in range(len(steps))]
            ax.plot(
                steps,
                mean,
                marker="o",
                markersize=3,
                label="no LR dropout" if keep == 1.0 else f"keep {keep:g}",
            )
        finals = [statistics.fmean(r.final for r in items) for items in by_keep.values()]
        ax.set_ylim(max(0.0, min(finals) - 0.25), min(1.0, max(finals) + 0.03))
        ax.set_title(f"{name}: LR dropout vs none (mean over seeds)")
        ax.set_xlabel("iterations")
        ax.set_ylabel("validation accuracy")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
