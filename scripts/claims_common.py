"""What the scripts that check the guides' claims share: MNIST-1D, a small residual 1-D CNN, runs over seeds.

MNIST-1D (the ``mnist1d`` package) is generated offline: 4,000 training and 1,000 test sequences of
length 40 in ten classes. The test sequences are the validation set here. ``--quick`` runs keep a
slice of the data so a smoke test takes seconds.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from lrtune.data import make_loader
from lrtune.finder import LRFinder
from lrtune.optimizers import OptimizerSpec, build_optimizer
from lrtune.tasks import Task
from lrtune.trainer import EpochResult, TrainSettings, fit

DOCS = Path(__file__).resolve().parents[1] / "docs"


class ResBlock(nn.Module):
    """Two 3-tap convolutions with batch norm and an identity (or 1×1, strided) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm1d(cout)
        self.conv2 = nn.Conv1d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm1d(cout)
        self.short: nn.Module = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv1d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm1d(cout))
        )

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet1D(nn.Module):
    """A small residual 1-D CNN: a stem, three residual blocks (the last two strided), pooling, a linear head."""

    def __init__(self, width: int = 32, classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv1d(1, width, 5, padding=2, bias=False), nn.BatchNorm1d(width), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            ResBlock(width, width, 1), ResBlock(width, 2 * width, 2), ResBlock(2 * width, 2 * width, 2)
        )
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.blocks(self.stem(x.unsqueeze(1))).mean(dim=2))


@functools.lru_cache(maxsize=2)
def mnist1d_arrays(seed: int = 42) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """MNIST-1D's training and test tensors (generated offline, about a second)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.seed = seed
    data = make_dataset(args)
    x, x_test = (torch.as_tensor(data[k], dtype=torch.float32) for k in ("x", "x_test"))
    y, y_test = (torch.as_tensor(data[k], dtype=torch.int64) for k in ("y", "y_test"))
    return x, y, x_test, y_test


def mnist1d_task(*, n_train: int | None = None, n_val: int | None = None, width: int = 32) -> Task:
    """MNIST-1D with :class:`ResNet1D`; ``n_train``/``n_val`` keep the first sequences only (quick runs)."""
    x, y, x_test, y_test = mnist1d_arrays()
    return Task(
        name="mnist1d-resnet",
        model=functools.partial(ResNet1D, width),
        train=TensorDataset(x[:n_train], y[:n_train]),
        val=TensorDataset(x_test[:n_val], y_test[:n_val]),
        batch_size=100,
    )


@dataclass(frozen=True)
class Bounds:
    """The range test's answer."""

    lr_low: float
    lr_high: float
    suggested_lr: float


def range_test(task: Task, optimizer: OptimizerSpec, *, num_iter: int, repeats: int, seed: int = 0) -> Bounds:
    """lrtune's range test of ``task``'s model with ``optimizer``."""
    torch.manual_seed(seed)
    model = task.model()
    opt = build_optimizer(optimizer, model.parameters(), lr=1e-7)
    loader = make_loader(task.train, batch_size=task.batch_size, shuffle=True, device="cpu", seed=seed)
    result = LRFinder(model, opt, task.loss, device="cpu").range_test(
        loader, start_lr=1e-5, end_lr=10.0, num_iter=num_iter, repeats=repeats, seed=seed
    )
    return Bounds(result.lr_low, result.lr_high, result.suggested_lr)


@dataclass(frozen=True)
class Run:
    """One training run: validation accuracy after every epoch and the step count there."""

    steps: tuple[int, ...]
    accuracy: tuple[float, ...]
    train_loss: float
    diverged: bool

    @property
    def final(self) -> float:
        return self.accuracy[-1]

    def steps_to(self, target: float) -> int | None:
        """Optimizer steps until the end of the first epoch at or above ``target`` (None: never)."""
        return next((s for s, a in zip(self.steps, self.accuracy, strict=True) if a >= target), None)


def train(task: Task, *, optimizer: OptimizerSpec, schedule: dict[str, Any], epochs: int, seed: int) -> Run:
    """Train ``task`` with ``schedule`` (steps resolved) for ``epochs``, evaluating every epoch."""
    epochs_seen: list[EpochResult] = []
    result = fit(
        task,
        optimizer=optimizer,
        schedule=schedule,
        settings=TrainSettings(epochs=epochs, seed=seed, device="cpu"),
        on_epoch=epochs_seen.append,
    )
    accuracy = tuple(float(e.val_metric) if e.val_metric is not None else 0.0 for e in epochs_seen)
    if result.diverged:  # a diverged run scores chance from the divergence on
        accuracy = tuple(a if not e.diverged else 0.1 for a, e in zip(accuracy, epochs_seen, strict=True))
    steps_per_epoch = epochs_seen[0].steps
    padded = accuracy + (0.1,) * (epochs - len(accuracy))
    return Run(
        steps=tuple(steps_per_epoch * (i + 1) for i in range(epochs)),
        accuracy=padded,
        train_loss=epochs_seen[-1].train_loss,
        diverged=result.diverged,
    )


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def claim_parser(doc: str, plot_name: str) -> argparse.ArgumentParser:
    """The options every claim script takes: ``--quick``, ``--seeds``, ``--epochs``, ``--plot``."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a tiny smoke run (seconds); its figures mean nothing"
    )
    parser.add_argument(
        "--seeds", type=positive_int, default=None, help="seeds per configuration [default: 5, quick 1]"
    )
    parser.add_argument(
        "--epochs", type=positive_int, default=None, help="epochs per run [default: 12, quick 2]"
    )
    parser.add_argument("--plot", type=Path, default=None, help=f"plot file [default: {DOCS / plot_name}]")
    return parser


def mean_std(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    items = list(values)
    return statistics.fmean(items), statistics.stdev(items) if len(items) > 1 else 0.0


def print_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A plain text table, columns padded to their widest cell."""
    widths = [max(len(str(row[i])) for row in (headers, *rows)) for i in range(len(headers))]
    for row in (headers, ["-" * w for w in widths], *rows):
        print("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
