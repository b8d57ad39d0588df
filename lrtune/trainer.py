"""The train/evaluate loop behind study trials and constant-LR checks.

:func:`fit` trains a fresh model of a :class:`~lrtune.tasks.Task` for some epochs with an
optimizer and, optionally, a learning-rate schedule, evaluating after every epoch. It never
reads a value back from the device inside an epoch (the loss is summed on the device and read
once per epoch), seeds everything it uses, stops by itself when the loss diverges, and calls
``on_epoch`` after every epoch so a caller can log, report to Optuna or stop early.

Example:
    >>> from lrtune.optimizers import OptimizerSpec
    >>> from lrtune.tasks import load_task
    >>> result = fit(load_task("digits"), optimizer=OptimizerSpec("sgd"), base_lr=0.05,
    ...              settings=TrainSettings(epochs=2, device="cpu"))
    >>> len(result.epochs), result.final().steps, result.diverged
    (2, 46, False)
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lrtune.data import check_device_name, make_loader, resolve_device
from lrtune.errors import TaskError, UsageError
from lrtune.forward import Kwargs, forward_loss, samples_in, split_batch
from lrtune.optimizers import OptimizerSpec, build_optimizer
from lrtune.parts import GroupSpec, optimizer_groups
from lrtune.tasks import Task, batch_metric

logger = logging.getLogger(__name__)

EpochCallback = Callable[["EpochResult"], "bool | None"]


@dataclass(frozen=True)
class TrainSettings:
    """How :func:`fit` trains.

    Args:
        epochs: passes over the training set.
        seed: seeds the model's initialisation, the data order and every global RNG.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        amp: mixed precision on CUDA (bfloat16 autocast where supported, else float16 with a
            GradScaler); ignored on other devices.
        grad_clip: clip the gradients' global norm to this value; ``None`` leaves them alone.
        diverge_factor: an epoch diverges when its mean training loss is NaN/inf or rises above the
            best loss so far by more than ``diverge_factor × S``, where ``S`` is the larger of the
            first batch's loss magnitude and how far the loss has fallen since. It is a rise in
            loss units, not a ratio, so it works for losses that go negative.
        batch_size: training batch size; ``None`` uses the task's.
    """

    epochs: int = 10
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    grad_clip: float | None = None
    diverge_factor: float = 4.0
    batch_size: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise UsageError(f"epochs must be an integer >= 1, got {self.epochs=!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise UsageError(f"seed must be an integer in [0, 2**32), got {self.seed=!r}")
        check_device_name(self.device)
        if not isinstance(self.amp, bool):
            raise UsageError(f"amp must be true or false, got {self.amp=!r}")
        if self.grad_clip is not None and not _positive(self.grad_clip):
            raise UsageError(f"grad_clip must be a positive number or None, got {self.grad_clip=!r}")
        if not _positive(self.diverge_factor):
            raise UsageError(f"diverge_factor must be a positive number, got {self.diverge_factor=!r}")
        if self.batch_size is not None and (
            isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1
        ):
            raise UsageError(f"batch_size must be an integer >= 1 or None, got {self.batch_size=!r}")


def _positive(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


@dataclass(frozen=True)
class EpochResult:
    """What one epoch did.

    Args:
        epoch: 1-based epoch number.
        train_loss: mean training loss over the epoch's batches.
        val_loss: mean validation loss (weighted by batch size).
        val_metric: the task's validation metric, or ``None`` when it has none.
        lrs: the learning rate (param group 0, over its ``lr_factor`` with named parts: the base
            rate) each optimizer step of this epoch used.
        steps: optimizer steps taken so far, this epoch included.
        diverged: the loss diverged in this epoch; training stopped after it.
    """

    epoch: int
    train_loss: float
    val_loss: float
    val_metric: float | None
    lrs: tuple[float, ...]
    steps: int
    diverged: bool


@dataclass(frozen=True)
class FitResult:
    """Every epoch of a :func:`fit` run and how it ended.

    ``test_loss`` and ``test_metric`` are the trained model's figures on ``task.test`` when ``fit``
    was asked for them (``test=True``), else ``None``; ``test_metric`` is also ``None`` for a task
    without a metric.
    """

    epochs: tuple[EpochResult, ...]
    diverged: bool
    stopped_early: bool
    test_loss: float | None = None
    test_metric: float | None = None

    def final(self) -> EpochResult:
        """The last epoch trained."""
        if not self.epochs:
            raise ValueError("no epoch was trained")
        return self.epochs[-1]


def is_diverged(loss: float, *, initial: float, best: float, factor: float) -> bool:
    """The divergence rule of :class:`TrainSettings` (``diverge_factor``).

    Args:
        loss: this epoch's mean training loss.
        initial: the loss of the very first batch, before any update.
        best: the lowest loss so far (``initial`` and earlier epochs' means).
        factor: ``diverge_factor``.

    Example:
        >>> is_diverged(-0.5, initial=1.4, best=-1.0, factor=4.0)  # a negative loss, still fine
        False
        >>> is_diverged(12.0, initial=1.4, best=-1.0, factor=4.0)  # rose 13 > 4 × 2.4 above best
        True
    """
    if not math.isfinite(loss):
        return True
    scale = max(initial - best, abs(initial), 1e-12)
    return loss > best + factor * scale


def _lr_of(optimizer: torch.optim.Optimizer) -> float:
    """The base rate: group 0's LR, over its ``lr_factor`` when it has one (named parts)."""
    group = optimizer.param_groups[0]
    lr = group["lr"]
    return (lr if isinstance(lr, float) else float(lr)) / float(group.get("lr_factor", 1.0))


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch, numpy and Python for the block; restore their previous states afterwards."""
    py_state, np_state = random.getstate(), np.random.get_state()
    cuda_devices: list[int] = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=cuda_devices):
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


def _autocast_and_scaler(
    device: torch.device, amp: bool
) -> tuple[Callable[[], contextlib.AbstractContextManager[Any]], torch.amp.GradScaler | None]:
    if not amp:
        return contextlib.nullcontext, None
    if device.type != "cuda":
        logger.info("mixed precision is only used on CUDA; training in float32 on %s", device)
        return contextlib.nullcontext, None
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    return functools.partial(torch.autocast, device_type="cuda", dtype=dtype), scaler


def _build_scheduler(schedule: Any, optimizer: torch.optim.Optimizer, total_steps: int, seed: int) -> Any:
    """A schedule spec (dict or ScheduleSpec) via lrtune.schedules.build, or a ``factory(opt, total_steps)``."""
    if schedule is None:
        return None
    from lrtune import schedules

    if isinstance(schedule, (Mapping, schedules.ScheduleSpec)) or not callable(schedule):
        return schedules.build(schedule, optimizer, total_steps=total_steps, seed=seed)
    scheduler = schedule(optimizer, total_steps)
    if not callable(getattr(scheduler, "step", None)):
        raise UsageError(
            f"the schedule factory returned {type(scheduler).__name__}, which has no step() method"
        )
    return scheduler


def _task_loss(task: Task, model: nn.Module, inputs: Any, targets: Any) -> tuple[Any, Tensor]:
    """The model's outputs and the task's loss on one batch (a pair or a mapping), as a checked scalar."""
    try:
        outputs, loss = forward_loss(model, task.loss, inputs, targets)
    except UsageError as exc:
        raise TaskError(f"task {task.name!r}: {exc}") from None
    if not isinstance(loss, Tensor) or loss.ndim != 0:
        shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
        raise TaskError(f"task {task.name!r}: the loss must be a scalar, got shape {shape}")
    return outputs, loss


def evaluate(
    model: nn.Module,
    batches: Iterable[Any],
    task: Task,
    *,
    autocast: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> tuple[float, float | None]:
    """Mean loss and metric of ``model`` over ``batches`` (weighted by batch size), in eval mode.

    Batches are ``(inputs, targets)`` pairs or mappings (see :mod:`lrtune.forward`). The sums stay on
    the device; one value is read back at the end.
    """
    model.eval()
    loss_sum: Tensor | None = None
    metric_sum: Tensor | None = None
    count = 0
    with torch.no_grad(), autocast():
        for batch in batches:
            inputs, targets = split_batch(batch, "the validation set")
            outputs, loss = _task_loss(task, model, inputs, targets)
            n = samples_in(inputs, targets)
            loss = loss.detach().float() * n
            loss_sum = loss if loss_sum is None else loss_sum + loss
            metric = batch_metric(task, outputs, targets, mapping=isinstance(inputs, Kwargs))
            if metric is not None:
                metric_sum = metric * n if metric_sum is None else metric_sum + metric * n
            count += n
    if loss_sum is None:
        raise TaskError(f"task {task.name!r}: the validation set gave no batches")
    if metric_sum is None:
        return float(loss_sum.item()) / count, None
    loss_total, metric_total = torch.stack([loss_sum, metric_sum.to(loss_sum.device)]).tolist()
    return loss_total / count, metric_total / count


def fit(
    task: Task,
    *,
    optimizer: OptimizerSpec,
    schedule: Mapping[str, Any] | object | None = None,
    base_lr: float | None = None,
    settings: TrainSettings = TrainSettings(),
    on_epoch: EpochCallback | None = None,
    test: bool = False,
    param_groups: Sequence[GroupSpec] = (),
) -> FitResult:
    """Train a fresh ``task.model()`` and evaluate it after every epoch.

    Args:
        task: the model factory, data, loss and metric.
        optimizer: which optimizer, with its torch keyword arguments.
        schedule: a schedule spec (plain dict or :class:`lrtune.schedules.ScheduleSpec`) built with
            :func:`lrtune.schedules.build` over ``epochs × steps per epoch`` steps; or a factory
            ``f(optimizer, total_steps)`` returning any scheduler with ``step()`` (stepped once per
            optimizer step, or once per epoch with the validation loss when its ``steps_on_metric``
            is true); ``None`` keeps the learning rate at ``base_lr``.
        base_lr: the constant learning rate when ``schedule`` is ``None`` (required then); with a
            factory, the optimizer's initial learning rate (default 1.0); ignored by schedule specs.
        settings: epochs, seed, device, AMP, gradient clipping, divergence rule.
        on_epoch: called with each :class:`EpochResult` (the diverged one included); returning
            true stops training after that epoch. Its exceptions (e.g. Optuna's pruning) propagate.
        test: also evaluate the model as training left it on ``task.test`` (the held-out split no
            study selects on) into ``test_loss``/``test_metric``; training is the same either way.
        param_groups: named parts of the model with their LR factors (:mod:`lrtune.parts`);
            each part trains at the schedule's rate × its factor, the rest at factor 1.

    Returns:
        every epoch's result; ``diverged`` when the loss blew up (training stops, nothing raises).
    """
    if test and task.test is None:
        raise UsageError(f"task {task.name!r} has no test split; give the Task a test dataset")
    if schedule is None and base_lr is None:
        raise UsageError("fit needs base_lr when no schedule is given (the learning rate stays at base_lr)")
    if base_lr is not None and not _positive(base_lr):
        raise UsageError(f"base_lr must be a positive number, got {base_lr=!r}")
    device = resolve_device(settings.device)
    autocast, scaler = _autocast_and_scaler(device, settings.amp)
    with _seeded(settings.seed, device):
        model = task.model().to(device)
        initial_lr = base_lr if base_lr is not None else 1.0
        opt = build_optimizer(
            optimizer,
            optimizer_groups(model, param_groups, base_lr=initial_lr) if param_groups else model.parameters(),
            lr=initial_lr,
        )
        batch_size = settings.batch_size or task.batch_size
        train_batches = make_loader(
            task.train, batch_size=batch_size, shuffle=True, device=device, seed=settings.seed
        )
        val_batches = make_loader(
            task.val, batch_size=2 * batch_size, shuffle=False, device=device, seed=settings.seed
        )
        total_steps = settings.epochs * len(train_batches)
        scheduler = _build_scheduler(schedule, opt, total_steps, settings.seed)
        steps_on_metric = bool(getattr(scheduler, "steps_on_metric", False))
        params = [p for group in opt.param_groups for p in group["params"]]

        results: list[EpochResult] = []
        initial = best = math.nan
        steps = 0
        stopped_early = False
        for epoch in range(1, settings.epochs + 1):
            model.train()
            loss_sum = torch.zeros((), device=device)
            first: Tensor | None = None
            lrs: list[float] = []
            for batch in train_batches:
                inputs, targets = split_batch(batch, "the training set")
                opt.zero_grad(set_to_none=True)
                with autocast():
                    loss = _task_loss(task, model, inputs, targets)[1]
                if scaler is not None:
                    scaler.scale(loss).backward()
                    if settings.grad_clip is not None:
                        scaler.unscale_(opt)
                        nn.utils.clip_grad_norm_(params, settings.grad_clip)
                    scaler.step(opt)
                    scaler.update()
                else:
                    loss.backward()
                    if settings.grad_clip is not None:
                        nn.utils.clip_grad_norm_(params, settings.grad_clip)
                    opt.step()
                steps += 1
                lrs.append(_lr_of(opt))
                if scheduler is not None and not steps_on_metric:
                    scheduler.step()
                detached = loss.detach().float()
                loss_sum += detached
                if first is None:
                    first = detached
            if not lrs:
                raise TaskError(f"task {task.name!r}: the training set gave no batches")
            # One read back per epoch: the loss sum (and, in epoch 1, the very first batch's loss).
            read = torch.stack([loss_sum, first if first is not None else loss_sum]).tolist()
            train_loss = read[0] / len(lrs)
            if epoch == 1:
                initial = best = read[1]
            diverged = is_diverged(train_loss, initial=initial, best=best, factor=settings.diverge_factor)
            val_loss, val_metric = evaluate(model, val_batches, task, autocast=autocast)
            diverged = diverged or not math.isfinite(val_loss)
            if math.isfinite(train_loss):
                best = min(best, train_loss)
            result = EpochResult(epoch, train_loss, val_loss, val_metric, tuple(lrs), steps, diverged)
            results.append(result)
            logger.debug("%s epoch %d: %s", task.name, epoch, result)
            if scheduler is not None and steps_on_metric and not diverged:
                scheduler.step(val_loss)
            stop = on_epoch(result) if on_epoch is not None else None
            if diverged:
                logger.info("%s: the loss diverged in epoch %d; training stopped", task.name, epoch)
                break
            if stop:
                stopped_early = True
                break
        test_loss = test_metric = None
        if test and task.test is not None:
            test_batches = make_loader(
                task.test, batch_size=2 * batch_size, shuffle=False, device=device, seed=settings.seed
            )
            test_loss, test_metric = evaluate(model, test_batches, task, autocast=autocast)
    return FitResult(
        epochs=tuple(results),
        diverged=results[-1].diverged,
        stopped_early=stopped_early,
        test_loss=test_loss,
        test_metric=test_metric,
    )
