"""Tests for lrtune.trainer: learning, determinism, divergence, callbacks and schedules."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from lrtune.errors import TaskError, UsageError
from lrtune.optimizers import OptimizerSpec
from lrtune.tasks import Task, load_task, mlp
from lrtune.trainer import EpochResult, FitResult, TrainSettings, fit, is_diverged

SGD = OptimizerSpec("sgd")
CPU = {"device": "cpu"}


@pytest.fixture(scope="module")
def digits() -> Task:
    return load_task("digits")


def settings(**kwargs: Any) -> TrainSettings:
    return TrainSettings(**{**CPU, **kwargs})


# --------------------------------------------------------------------------- learning and bookkeeping


def test_constant_lr_learns_digits(digits: Task) -> None:
    result = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=5))
    assert [e.epoch for e in result.epochs] == [1, 2, 3, 4, 5]
    assert not result.diverged and not result.stopped_early
    final = result.final()
    assert final.val_metric is not None and final.val_metric > 0.9
    assert final.train_loss < result.epochs[0].train_loss < math.log(10)
    assert all(len(e.lrs) == 23 for e in result.epochs)  # ceil(1437 / 64) steps per epoch
    assert [e.steps for e in result.epochs] == [23, 46, 69, 92, 115]
    assert sum(len(e.lrs) for e in result.epochs) == final.steps
    assert {lr for e in result.epochs for lr in e.lrs} == {0.1}


def test_same_seed_same_result_other_seed_differs(digits: Task) -> None:
    torch_state, py_state = torch.random.get_rng_state(), random.getstate()
    np_state = np.random.get_state(legacy=False)
    first = fit(digits, optimizer=SGD, base_lr=0.05, settings=settings(epochs=2, seed=1))
    assert torch.equal(torch.random.get_rng_state(), torch_state)  # global RNGs restored afterwards
    assert (
        np.array_equal(np.random.get_state(legacy=False)["state"]["key"], np_state["state"]["key"])
        and random.getstate() == py_state
    )
    torch.manual_seed(123)  # the caller's RNG state does not matter
    assert fit(digits, optimizer=SGD, base_lr=0.05, settings=settings(epochs=2, seed=1)) == first
    other = fit(digits, optimizer=SGD, base_lr=0.05, settings=settings(epochs=2, seed=2))
    assert other.final().train_loss != first.final().train_loss


def test_validation_loss_is_weighted_by_batch_size(digits: Task) -> None:
    from lrtune.trainer import evaluate

    torch.manual_seed(0)
    model = digits.model()
    x, y = digits.val.tensors  # type: ignore[attr-defined]
    batches = [(x[:7], y[:7]), (x[7:], y[7:])]  # 7 + 353 samples
    loss, metric = evaluate(model, batches, digits)
    with torch.no_grad():
        outputs = model(x)
    assert loss == pytest.approx(torch.nn.functional.cross_entropy(outputs, y).item(), rel=1e-5)
    assert metric == pytest.approx((outputs.argmax(1) == y).float().mean().item())


def test_friedman_nll_loss_goes_negative() -> None:
    result = fit(
        load_task("friedman-nll"), optimizer=OptimizerSpec("adam"), base_lr=3e-3, settings=settings(epochs=6)
    )
    assert not result.diverged
    assert result.epochs[0].train_loss > 0 > result.final().train_loss
    assert result.final().val_metric is None


# --------------------------------------------------------------------------- divergence


def test_absurd_learning_rate_diverges_without_raising(digits: Task) -> None:
    seen: list[EpochResult] = []
    result = fit(digits, optimizer=SGD, base_lr=1e4, settings=settings(epochs=5), on_epoch=seen.append)
    assert result.diverged and not result.stopped_early
    assert len(result.epochs) == 1 and result.final().diverged and seen == list(result.epochs)


def test_nan_loss_diverges() -> None:
    result = fit(
        load_task("friedman-nll"), optimizer=OptimizerSpec("adam"), base_lr=1.0, settings=settings(epochs=3)
    )
    assert result.diverged and len(result.epochs) == 1
    assert math.isnan(result.final().train_loss)


@pytest.mark.parametrize(
    ("loss", "initial", "best", "expected"),
    [
        (math.nan, 2.3, 2.3, True),
        (math.inf, 2.3, 0.1, True),
        (2.35, 2.3, 2.3, False),  # a tiny learning rate: noise around the start
        (11.4, 2.3, 2.3, False),  # below 2.3 + 4 × 2.3
        (11.6, 2.3, 2.3, True),
        (-0.9, 1.4, -1.5, False),  # negative losses: measured as a rise, not a ratio
        (-1.5 + 4 * 2.9 + 0.1, 1.4, -1.5, True),
        (0.5, -10.0, -12.0, False),  # a loss negative from the start
        (30.1, -10.0, -12.0, True),  # rose 42.1 > 4 × 10 above the best
    ],
)
def test_divergence_rule(loss: float, initial: float, best: float, expected: bool) -> None:
    assert is_diverged(loss, initial=initial, best=best, factor=4.0) is expected


# --------------------------------------------------------------------------- callbacks


def test_on_epoch_can_stop_training(digits: Task) -> None:
    calls: list[int] = []

    def stop_after_two(result: EpochResult) -> bool:
        calls.append(result.epoch)
        return result.epoch == 2

    result = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=6), on_epoch=stop_after_two)
    assert calls == [1, 2] and len(result.epochs) == 2
    assert result.stopped_early and not result.diverged


def test_on_epoch_exceptions_propagate(digits: Task) -> None:
    class Pruned(Exception):
        pass

    def prune(result: EpochResult) -> None:
        raise Pruned(result.epoch)

    with pytest.raises(Pruned, match="1"):
        fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=3), on_epoch=prune)


# --------------------------------------------------------------------------- schedules


def test_scheduler_factory_is_stepped_every_optimizer_step(digits: Task) -> None:
    def step_lr(optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        assert total_steps == 3 * 23
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.5)

    result = fit(digits, optimizer=SGD, schedule=step_lr, base_lr=0.2, settings=settings(epochs=3))
    lrs = [lr for e in result.epochs for lr in e.lrs]
    assert lrs == pytest.approx([0.2 * 0.5 ** (k // 10) for k in range(69)])


def test_metric_stepped_scheduler_gets_the_validation_loss(digits: Task) -> None:
    class Recorder:
        steps_on_metric = True

        def __init__(self) -> None:
            self.metrics: list[float] = []

        def step(self, metric: float) -> None:
            self.metrics.append(metric)

    recorder = Recorder()
    result = fit(
        digits, optimizer=SGD, schedule=lambda opt, n: recorder, base_lr=0.1, settings=settings(epochs=3)
    )
    assert recorder.metrics == [e.val_loss for e in result.epochs]


def test_schedule_spec_is_built_over_the_whole_run(digits: Task) -> None:
    from lrtune.schedules import lr_at

    spec = {"type": "cosine", "base_lr": 0.2, "min_lr": 0.002, "warmup_steps": 5}
    result = fit(digits, optimizer=SGD, schedule=spec, settings=settings(epochs=2))
    lrs = [lr for e in result.epochs for lr in e.lrs]
    assert lrs == pytest.approx([lr_at(spec, k, 46) for k in range(46)])
    accuracy = result.final().val_metric
    assert accuracy is not None and accuracy > 0.8


def test_plateau_spec_changes_the_rate_only_between_epochs(digits: Task) -> None:
    spec = {"type": "plateau", "base_lr": 0.1, "decay_rate": 0.5, "patience": 0, "threshold": 0.99}
    result = fit(digits, optimizer=SGD, schedule=spec, settings=settings(epochs=4))
    per_epoch = [set(e.lrs) for e in result.epochs]
    # Epoch 1 sets the best validation loss; no later epoch improves on it by 99%: a cut after each.
    assert per_epoch == [{0.1}, {0.1}, {0.05}, {0.025}]


# --------------------------------------------------------------------------- settings and odd inputs


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"epochs": 0}, "epochs must be an integer >= 1"),
        ({"epochs": 2.5}, "epochs must be an integer >= 1"),
        ({"seed": -1}, r"seed must be an integer in \[0, 2\*\*32\)"),
        ({"device": "gpu"}, "unknown device 'gpu'"),
        ({"amp": "yes"}, "amp must be true or false"),
        ({"grad_clip": 0.0}, "grad_clip must be a positive number or None"),
        ({"grad_clip": math.inf}, "grad_clip must be a positive number or None"),
        ({"diverge_factor": -1}, "diverge_factor must be a positive number"),
        ({"batch_size": 0}, "batch_size must be an integer >= 1 or None"),
    ],
)
def test_settings_are_validated(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        TrainSettings(**kwargs)


def test_batch_size_override(digits: Task) -> None:
    result = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=1, batch_size=500))
    assert len(result.final().lrs) == 3  # ceil(1437 / 500)


def test_fit_needs_a_learning_rate(digits: Task) -> None:
    with pytest.raises(UsageError, match="fit needs base_lr when no schedule is given"):
        fit(digits, optimizer=SGD, settings=settings(epochs=1))
    with pytest.raises(UsageError, match="base_lr must be a positive number"):
        fit(digits, optimizer=SGD, base_lr=-0.1, settings=settings(epochs=1))


def test_gradient_clipping_limits_the_steps(digits: Task) -> None:
    free = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=1))
    clipped = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=1, grad_clip=1e-6))
    assert clipped.final().train_loss == pytest.approx(math.log(10), abs=0.1)
    assert free.final().train_loss < clipped.final().train_loss - 0.3


def test_amp_is_ignored_on_cpu(digits: Task) -> None:
    plain = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=1))
    assert fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=1, amp=True)) == plain


def test_non_scalar_loss_is_a_task_error(digits: Task) -> None:
    task = Task(
        name="bad",
        model=digits.model,
        train=digits.train,
        val=digits.val,
        loss=lambda o, t: torch.nn.functional.cross_entropy(o, t, reduction="none"),
    )
    with pytest.raises(TaskError, match=r"the loss must be a scalar, got shape \(128,\)"):
        fit(task, optimizer=SGD, base_lr=0.1, settings=settings(epochs=1))


def test_test_split_is_scored_after_training_without_changing_it(digits: Task) -> None:
    plain = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=2))
    assert plain.test_loss is None and plain.test_metric is None  # not asked for
    scored = fit(digits, optimizer=SGD, base_lr=0.1, settings=settings(epochs=2), test=True)
    assert scored.epochs == plain.epochs  # the same training, bit for bit
    assert scored.test_metric is not None and 0.8 < scored.test_metric <= 1.0
    assert scored.test_loss is not None and 0.0 < scored.test_loss < 1.0
    assert scored.test_metric * len(digits.test) == pytest.approx(round(scored.test_metric * 180))  # type: ignore[arg-type]
    # With the validation set as its test set, the test figures are the final validation figures.
    mirror = Task(
        name="mirror", model=digits.model, train=digits.train, val=digits.val, test=digits.val, batch_size=64
    )
    again = fit(mirror, optimizer=SGD, base_lr=0.1, settings=settings(epochs=2), test=True)
    assert again.test_loss == pytest.approx(again.final().val_loss, rel=1e-6)
    assert again.test_metric == again.final().val_metric
    no_metric = load_task("friedman")
    result = fit(no_metric, optimizer=SGD, base_lr=0.01, settings=settings(epochs=1), test=True)
    assert result.test_metric is None and result.test_loss is not None and math.isfinite(result.test_loss)


def test_test_needs_a_test_split(digits: Task) -> None:
    task = Task(name="no-test", model=digits.model, train=digits.train, val=digits.val)
    with pytest.raises(UsageError, match="task 'no-test' has no test split"):
        fit(task, optimizer=SGD, base_lr=0.1, settings=settings(epochs=1), test=True)


class NoisyBlobs(Dataset[tuple[Tensor, int]]):
    """Two Gaussian blobs with fresh noise on every read: streamed through a DataLoader."""

    def __len__(self) -> int:
        return 96

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        label = i % 2
        return torch.full((4,), 2.0 * label - 1.0) + 0.3 * torch.randn(4), label


def test_streamed_datasets_train_deterministically() -> None:
    val = TensorDataset(torch.cat([torch.full((8, 4), -1.0), torch.full((8, 4), 1.0)]), torch.arange(16) // 8)
    task = Task(name="blobs", model=lambda: mlp(4, (8,), 2), train=NoisyBlobs(), val=val, batch_size=32)
    first = fit(task, optimizer=SGD, base_lr=0.1, settings=settings(epochs=3))
    assert isinstance(first, FitResult) and first.final().val_metric == 1.0
    assert [len(e.lrs) for e in first.epochs] == [3, 3, 3]
    assert fit(task, optimizer=SGD, base_lr=0.1, settings=settings(epochs=3)) == first
