"""``digits-finetune``: fine-tune a pretrained body with a new head, the task behind per-part LR factors.

A small MLP body is pretrained on scikit-learn's digits of classes 0–4 (offline, about a second on
one CPU core, cached in memory per seed); the task is to learn classes 5–9 from a few examples
each (:data:`SHOTS`) with that body and a fresh head. Parameter names start with ``body.`` and
``head.``, so ``--param-group body=^body\\.`` gives the pretrained part its own LR factor.

Example:
    >>> task = finetune_task()
    >>> len(task.train), len(task.val), len(task.test), task.batch_size
    (100, 707, 89, 20)
    >>> sorted({name.split(".")[0] for name, _ in task.model().named_parameters()})
    ['body', 'head']
"""

from __future__ import annotations

import copy
import functools

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import TensorDataset

from lrtune.tasks import Task

#: Classes the body is pretrained on, and the classes fine-tuned (relabelled 0..4).
PRETRAIN_CLASSES = (0, 1, 2, 3, 4)
FINETUNE_CLASSES = (5, 6, 7, 8, 9)
#: Training examples per fine-tuned class.
SHOTS = 20
PRETRAIN_EPOCHS = 30
HIDDEN = (128, 64)


class BodyHead(nn.Module):
    """An MLP body (``body.*``) and a linear head (``head.*``)."""

    def __init__(self, in_features: int = 64, hidden: tuple[int, int] = HIDDEN, classes: int = 5) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Linear(in_features, hidden[0]), nn.ReLU(), nn.Linear(hidden[0], hidden[1]), nn.ReLU()
        )
        self.head = nn.Linear(hidden[1], classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


def _digits() -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    from lrtune.datasets import digits_splits

    return digits_splits()


def _classes(dataset: TensorDataset, classes: tuple[int, ...]) -> tuple[Tensor, Tensor]:
    x, y = dataset.tensors
    keep = torch.isin(y, torch.tensor(classes))
    return x[keep], y[keep] - min(classes)


@functools.lru_cache(maxsize=4)
def pretrained_body(seed: int = 0) -> dict[str, Tensor]:
    """The body's state after pretraining on classes 0–4 (deterministic for a seed; cached)."""
    train, _, _ = _digits()
    x, y = _classes(train, PRETRAIN_CLASSES)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = BodyHead(x.shape[1], HIDDEN, len(PRETRAIN_CLASSES))
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        order = torch.Generator().manual_seed(seed)
        for _ in range(PRETRAIN_EPOCHS):
            for batch in torch.randperm(len(x), generator=order).split(64):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(model(x[batch]), y[batch]).backward()
                opt.step()
    return {key: value.detach().clone() for key, value in model.body.state_dict().items()}


def finetune_splits(shots: int = SHOTS, seed: int = 0) -> tuple[TensorDataset, TensorDataset, TensorDataset]:
    """Classes 5–9 (labels 0–4): ``shots`` training examples per class from digits' training split;
    validation = the rest of those classes (the training split's leftovers and the validation split);
    test = those classes of digits' test split."""
    train, val, test = _digits()
    x, y = _classes(train, FINETUNE_CLASSES)
    rng = np.random.default_rng(seed)
    picked = np.concatenate([rng.permutation(np.flatnonzero(y.numpy() == c))[:shots] for c in range(5)])
    rest = np.setdiff1d(np.arange(len(y)), picked)
    x_val, y_val = _classes(val, FINETUNE_CLASSES)
    x_test, y_test = _classes(test, FINETUNE_CLASSES)
    return (
        TensorDataset(x[torch.from_numpy(picked)], y[torch.from_numpy(picked)]),
        TensorDataset(
            torch.cat([x[torch.from_numpy(rest)], x_val]), torch.cat([y[torch.from_numpy(rest)], y_val])
        ),
        TensorDataset(x_test, y_test),
    )


def finetune_model(body: dict[str, Tensor]) -> BodyHead:
    """The pretrained body (a copy) under a fresh head for the five new classes."""
    model = BodyHead(classes=len(FINETUNE_CLASSES))
    model.body.load_state_dict(copy.deepcopy(body))
    return model


def finetune_task(seed: int = 0) -> Task:
    """The ``digits-finetune`` task: pretrained body + fresh head on a few examples of classes 5–9."""
    train, val, test = finetune_splits(SHOTS, seed)
    return Task(
        name="digits-finetune",
        model=functools.partial(finetune_model, pretrained_body(seed)),
        train=train,
        val=val,
        batch_size=20,
        test=test,
    )


__all__ = ["BodyHead", "finetune_model", "finetune_splits", "finetune_task", "pretrained_body"]
