"""A thin torch ``LRScheduler`` over a schedule spec, with exact ``state_dict`` resume.

Example:
    >>> import torch
    >>> from lrtune.schedules import build
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=1.0, momentum=0.9)
    >>> sched = build({"type": "cosine", "base_lr": 0.1, "min_lr": 0.001}, opt, 100)
    >>> sched.get_last_lr()
    [0.1]
    >>> for _ in range(100):
    ...     opt.step()
    ...     sched.step()
    >>> round(sched.get_last_lr()[0], 12)
    0.001
"""

from __future__ import annotations

import logging
import math
import weakref
from collections.abc import Callable, Mapping
from typing import Any, SupportsFloat, cast

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler
from torch.utils.hooks import RemovableHandle

from lrtune.errors import UsageError
from lrtune.parts import group_ratios
from lrtune.schedules.base import ScheduleSpec
from lrtune.schedules.formulas import PlateauSchedule
from lrtune.schedules.lr_dropout import LRDropout
from lrtune.schedules.registry import parse_spec

logger = logging.getLogger(__name__)


def _set_group_value(group: dict[str, Any], key: str, value: float) -> None:
    if isinstance(group[key], torch.Tensor):
        group[key].fill_(value)
    else:
        group[key] = value


def _group_lrs(optimizer: Optimizer) -> list[float | torch.Tensor]:
    return [
        group["lr"].clone() if isinstance(group["lr"], torch.Tensor) else group["lr"]
        for group in optimizer.param_groups
    ]


def _momentum_key(group: Mapping[str, Any]) -> str | None:
    """``betas`` for Adam-like groups, ``momentum`` where it is in use (> 0), else ``None``."""
    if "betas" in group:
        return "betas"
    if "momentum" in group and float(group["momentum"]) > 0.0:
        return "momentum"
    return None


def _remove_handles(handles: list[RemovableHandle]) -> None:
    for handle in handles:
        handle.remove()
    handles.clear()


class ScheduleLR(LRScheduler):
    """Sets every param group's LR from a spec's closed form; step once per optimizer step.

    Group ``i`` gets ``spec.lr(k) * lr_i / lr_0`` with ``lr_i`` the group's LR at construction,
    so ratios between groups are kept while the optimizer's own LR is otherwise ignored; when every
    group carries an ``lr_factor`` (groups from :func:`lrtune.param_groups`), group ``i`` gets
    ``spec.lr(k) * lr_factor_i`` instead, so ``base_lr`` is the rate of factor 1. Use
    :func:`build` rather than this class directly.

    Args:
        optimizer: the torch optimizer.
        spec: a spec object or its plain-JSON dict.
        total_steps: optimizer steps in the run (> warmup_steps).
        seed: seed of the learning-rate-dropout masks (unused when ``lr_dropout`` is 1).
    """

    #: False: ``step()`` once per optimizer step. True (plateau): ``step(val_loss)`` once per epoch.
    steps_on_metric: bool = False

    def __init__(
        self,
        optimizer: Optimizer,
        spec: ScheduleSpec | Mapping[str, Any],
        total_steps: int,
        *,
        seed: int = 0,
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise UsageError(f"build() needs a torch optimizer, got {type(optimizer).__name__}")
        self.spec: ScheduleSpec = parse_spec(spec)
        self.total_steps: int = self.spec.check_budget(total_steps)
        lrs = [float(group["lr"]) for group in optimizer.param_groups]
        first_lr = lrs[0]
        if not (math.isfinite(first_lr) and first_lr > 0.0):
            raise UsageError(
                f"the first param group's lr sets the ratios between groups and must be > 0, got {first_lr=}"
            )
        for index, group_lr in enumerate(lrs):
            if not (math.isfinite(group_lr) and group_lr >= 0.0):
                raise UsageError(f"param group {index} has a negative or non-finite lr, got {group_lr=}")
        factors = group_ratios(optimizer.param_groups)  # lrtune.param_groups' own factors win
        self.group_ratios: list[float] = factors or [group_lr / first_lr for group_lr in lrs]
        self._momentum_keys = [_momentum_key(group) for group in optimizer.param_groups]
        self._hooks: list[RemovableHandle] = []
        self._finalizer = weakref.finalize(self, _remove_handles, self._hooks)
        self._dropout: LRDropout | None = None
        if self.spec.lr_dropout < 1.0:
            self._dropout = LRDropout(optimizer, self.spec.lr_dropout, seed=seed)
            self._hooks.extend(self._dropout.handles)
        if self.spec.momentum(0, self.total_steps) is not None and not any(self._momentum_keys):
            logger.debug("schedule %r: the optimizer has no momentum or betas to cycle", self.spec.type_name)
        super().__init__(optimizer)

    def step(self, metrics: SupportsFloat | None = None) -> None:
        """Advance one optimizer step. Takes no argument (``plateau`` alone is stepped with the val loss)."""
        if metrics is not None:
            raise UsageError(
                f"schedule {self.spec.type_name!r} is stepped once per optimizer step without arguments: "
                "scheduler.step(); only 'plateau' takes the validation loss"
            )
        super().step()

    # ---------------------------------------------------------------------------------- the values
    def _steps_done(self) -> int:
        """Optimizer steps the schedule has seen (``k``)."""
        return self.last_epoch

    def _value_now(self) -> float:
        return self.spec.lr(self._steps_done(), self.total_steps)

    def get_lr(self) -> list[float | torch.Tensor]:
        """The LR of every group at the current step (also sets momentum where the spec cycles it)."""
        momentum = self.spec.momentum(self._steps_done(), self.total_steps)
        if momentum is not None:
            for group, key in zip(self.optimizer.param_groups, self._momentum_keys, strict=True):
                if key == "betas":
                    group["betas"] = (momentum, *tuple(group["betas"])[1:])
                elif key == "momentum":
                    group["momentum"] = momentum
        value = self._value_now()
        return [value * ratio for ratio in self.group_ratios]

    def _apply_now(self) -> None:
        """Write the current values into the optimizer's param groups."""
        for group, value in zip(self.optimizer.param_groups, self.get_lr(), strict=True):
            _set_group_value(group, "lr", float(value))
        self._last_lr = _group_lrs(self.optimizer)

    # --------------------------------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Remove the hooks this scheduler put on the optimizer (idempotent; also done on garbage collection)."""
        self._finalizer()

    # ------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Plain state (numbers, lists, tensors): loadable with ``torch.load(weights_only=True)``."""
        state: dict[str, Any] = {
            "spec": self.spec.to_dict(),
            "total_steps": self.total_steps,
            "last_epoch": self.last_epoch,
            "_step_count": self._step_count,
            "group_ratios": list(self.group_ratios),
            "_last_lr": list(self._last_lr),
        }
        if self._dropout is not None:
            state["lr_dropout"] = self._dropout.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Resume exactly from :meth:`state_dict`; the group LRs are set to the restored values."""
        if not isinstance(state_dict, Mapping) or "spec" not in state_dict or "last_epoch" not in state_dict:
            raise UsageError("not the state of an lrtune scheduler: it has no 'spec' or 'last_epoch'")
        saved = parse_spec(state_dict["spec"])
        if saved != self.spec or state_dict.get("total_steps") != self.total_steps:
            raise UsageError(
                f"the scheduler state was saved for {saved.to_dict()} over {state_dict.get('total_steps')} steps, "
                f"not {self.spec.to_dict()} over {self.total_steps}; build the scheduler from the saved spec"
            )
        ratios = [float(ratio) for ratio in state_dict.get("group_ratios", self.group_ratios)]
        if len(ratios) != len(self.optimizer.param_groups):
            raise UsageError(
                f"the scheduler state has {len(ratios)} param groups, the optimizer has "
                f"{len(self.optimizer.param_groups)}"
            )
        self.group_ratios = ratios
        self.last_epoch = int(state_dict["last_epoch"])
        self._step_count = int(state_dict.get("_step_count", self.last_epoch + 1))
        if self._dropout is not None:
            self._dropout.load_state_dict(state_dict.get("lr_dropout", {}))
        self._load_extra(state_dict)
        self._apply_now()

    def _load_extra(self, state_dict: Mapping[str, Any]) -> None:
        """Hook for subclasses with more state."""


class PlateauScheduleLR(ScheduleLR):
    """Reduce-on-plateau: ``step(val_loss)`` once per epoch; warmup follows optimizer steps.

    Optimizer steps are counted by a step hook on the optimizer, so warmup runs per optimizer
    step although the scheduler itself is stepped per epoch.
    """

    steps_on_metric: bool = True
    spec: PlateauSchedule

    def __init__(
        self,
        optimizer: Optimizer,
        spec: ScheduleSpec | Mapping[str, Any],
        total_steps: int,
        *,
        seed: int = 0,
    ) -> None:
        parsed = parse_spec(spec)
        if not isinstance(parsed, PlateauSchedule):
            raise UsageError(f"PlateauScheduleLR needs a 'plateau' spec, got {parsed.type_name!r}")
        self.optimizer_steps = 0
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cuts = 0
        self._initialising = True
        super().__init__(optimizer, parsed, total_steps, seed=seed)
        self._initialising = False
        self._hooks.append(optimizer.register_step_post_hook(_count_steps(weakref.ref(self))))

    def _steps_done(self) -> int:
        return self.optimizer_steps

    def _value_now(self) -> float:
        return self.spec.lr_after_cuts(self.optimizer_steps, self.total_steps, self.cuts)

    def _on_optimizer_step(self) -> None:
        self.optimizer_steps += 1
        if self.optimizer_steps <= self.spec.warmup_steps:
            self._apply_now()

    def step(self, metrics: SupportsFloat | None = None) -> None:
        """Record one epoch's validation loss; cut the LR when it has stalled for more than ``patience`` epochs."""
        if metrics is None:
            if self._initialising:
                self.last_epoch = 0
                self._step_count = 1
                self._apply_now()
                return
            raise UsageError(
                "the plateau schedule is stepped once per epoch with the validation loss: scheduler.step(val_loss)"
            )
        current = float(metrics)
        self.last_epoch += 1
        self._step_count += 1
        improved = self.spec.is_improvement(current, self.best)
        if improved:
            self.best = current
        if improved or self.optimizer_steps < self.spec.warmup_steps:
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.num_bad_epochs > self.spec.patience:
            self.num_bad_epochs = 0
            level = self.spec.lr_after_cuts(self.optimizer_steps, self.total_steps, self.cuts)
            if self.spec.lr_after_cuts(self.optimizer_steps, self.total_steps, self.cuts + 1) < level:
                self.cuts += 1
        self._apply_now()

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state.update(
            optimizer_steps=self.optimizer_steps,
            best=self.best,
            num_bad_epochs=self.num_bad_epochs,
            cuts=self.cuts,
        )
        return state

    def _load_extra(self, state_dict: Mapping[str, Any]) -> None:
        self.optimizer_steps = int(state_dict.get("optimizer_steps", 0))
        self.best = float(state_dict.get("best", math.inf))
        self.num_bad_epochs = int(state_dict.get("num_bad_epochs", 0))
        self.cuts = int(state_dict.get("cuts", 0))


def _count_steps(ref: weakref.ReferenceType[PlateauScheduleLR]) -> Callable[..., None]:
    """An optimizer post-step hook that tells the scheduler behind ``ref`` (if still alive)."""

    def hook(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        scheduler = ref()
        if scheduler is not None:
            scheduler._on_optimizer_step()

    return hook


def build(
    spec: ScheduleSpec | Mapping[str, Any],
    optimizer: Optimizer,
    total_steps: int,
    *,
    seed: int = 0,
) -> ScheduleLR:
    """Build the torch scheduler for ``spec`` over ``total_steps`` optimizer steps.

    The group LRs are set to ``lr(0)`` at once. Step the result once per optimizer step, or, when
    ``scheduler.steps_on_metric`` is true (``plateau``), once per epoch with ``step(val_loss)``.

    Args:
        spec: a spec object or a plain-JSON dict like ``{"type": "cosine", "base_lr": 0.1}``.
        optimizer: the torch optimizer; its LRs only give the ratios between param groups.
        total_steps: optimizer steps in the run; must exceed the spec's warmup_steps.
        seed: seed of the learning-rate-dropout masks.
    """
    parsed = parse_spec(spec)
    cls = PlateauScheduleLR if parsed.steps_on_metric else ScheduleLR
    return cast(ScheduleLR, cls(optimizer, parsed, total_steps, seed=seed))
