"""The closed forms: one frozen dataclass per schedule type.

Every type's :meth:`~lrtune.schedules.base.ScheduleSpec.lr` gives the learning rate after ``k``
scheduler steps. After warmup, ``k`` counts from the end of warmup and
``T = total_steps - warmup_steps`` (``inverse_sqrt`` alone counts from step 0).

Example:
    >>> CosineSchedule(base_lr=1.0, min_lr=0.1).lr(50, 100)
    0.55
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

from lrtune.errors import UsageError
from lrtune.schedules.base import ScheduleSpec, check_step_index

CYCLIC_MODES: tuple[str, ...] = ("triangular", "triangular2", "exp_range")


def _cosine(start: float, end: float, fraction: float) -> float:
    """Half a cosine from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    return end + (start - end) / 2.0 * (math.cos(math.pi * fraction) + 1.0)


@dataclass(frozen=True, kw_only=True)
class ConstantSchedule(ScheduleSpec):
    """``base_lr`` throughout (after warmup)."""

    type_name: ClassVar[str] = "constant"
    formula: ClassVar[str] = "base_lr"

    def _after_warmup(self, k: int, horizon: int) -> float:
        return self.base_lr


@dataclass(frozen=True, kw_only=True)
class StepSchedule(ScheduleSpec):
    """Multiply by ``decay_rate`` every ``decay_steps`` steps (torch's StepLR)."""

    type_name: ClassVar[str] = "step"
    formula: ClassVar[str] = "base_lr · decay_rate^⌊k/decay_steps⌋"

    decay_steps: int
    decay_rate: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        self._int("decay_steps", minimum=1)
        self._float("decay_rate", lower=0.0, upper=1.0)

    def _after_warmup(self, k: int, horizon: int) -> float:
        return self.base_lr * self.decay_rate ** (k // self.decay_steps)


@dataclass(frozen=True, kw_only=True)
class MultiStepSchedule(ScheduleSpec):
    """Multiply by ``decay_rate`` at each milestone (torch's MultiStepLR)."""

    type_name: ClassVar[str] = "multistep"
    formula: ClassVar[str] = "base_lr · decay_rate^(milestones passed)"

    milestones: tuple[int, ...]
    decay_rate: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        milestones = self.milestones
        if (
            isinstance(milestones, (str, bytes))
            or not isinstance(milestones, (list, tuple))
            or not milestones
        ):
            raise UsageError(
                f"schedule 'multistep': milestones must be a non-empty list of steps, got {milestones=}"
            )
        values: list[int] = []
        for value in milestones:
            number: object = value
            if isinstance(number, float) and number.is_integer():
                number = int(number)
            if isinstance(number, bool) or not isinstance(number, int) or number < 1:
                raise UsageError(f"schedule 'multistep': milestones must be integers >= 1, got {milestones=}")
            if values and number <= values[-1]:
                raise UsageError(f"schedule 'multistep': milestones must be increasing, got {milestones=}")
            values.append(number)
        self._set("milestones", tuple(values))
        self._float("decay_rate", lower=0.0, upper=1.0)

    def _after_warmup(self, k: int, horizon: int) -> float:
        passed = sum(1 for milestone in self.milestones if milestone <= k)
        return self.base_lr * self.decay_rate**passed


@dataclass(frozen=True, kw_only=True)
class _Annealed(ScheduleSpec):
    """A schedule with a ``min_lr`` (default ``base_lr * min_lr_ratio``).

    ``min_lr`` may be 0 (torch's ``eta_min`` default, SGDR's floor) wherever the formula allows it.
    """

    min_lr_ratio: ClassVar[float] = 1e-3
    #: Whether ``min_lr = 0`` is allowed (not where the formula divides by or takes a power of it).
    zero_floor: ClassVar[bool] = True

    min_lr: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.min_lr is not None:
            min_lr = self.min_lr
            if not self.zero_floor and not isinstance(min_lr, bool) and min_lr == 0:
                raise UsageError(
                    f"schedule {self.type_name!r}: min_lr must be > 0 (a geometric decay never reaches 0; "
                    f"anneal to 0 with 'cosine' or 'linear'), got {min_lr=}"
                )
            min_lr = self._float("min_lr", lower=0.0, lower_inclusive=self.zero_floor)
            base_lr = self.base_lr
            if min_lr > base_lr:
                raise UsageError(
                    f"schedule {self.type_name!r}: min_lr must not exceed base_lr, got {min_lr=}, {base_lr=}"
                )

    @property
    def floor_lr(self) -> float:
        """``min_lr`` with its default filled in."""
        return self.base_lr * self.min_lr_ratio if self.min_lr is None else self.min_lr

    @classmethod
    def derived_default(cls, name: str) -> str | None:
        if name == "min_lr":
            return f"base_lr/{1 / cls.min_lr_ratio:g}"
        return super().derived_default(name)


@dataclass(frozen=True, kw_only=True)
class ExponentialSchedule(_Annealed):
    """Geometric decay from ``base_lr`` to ``min_lr`` at T (torch's ExponentialLR, gamma=(min/base)^(1/T))."""

    type_name: ClassVar[str] = "exponential"
    formula: ClassVar[str] = "base_lr · (min_lr/base_lr)^(k/T)"
    #: A geometric decay never reaches 0: ``min_lr = 0`` would pin the LR at 0 from the first step.
    zero_floor: ClassVar[bool] = False

    def _after_warmup(self, k: int, horizon: int) -> float:
        return self.base_lr * (self.floor_lr / self.base_lr) ** (k / horizon)


@dataclass(frozen=True, kw_only=True)
class LinearSchedule(_Annealed):
    """A straight line from ``base_lr`` to ``min_lr`` at T (torch's LinearLR)."""

    type_name: ClassVar[str] = "linear"
    formula: ClassVar[str] = "base_lr + (min_lr − base_lr) · k/T"

    def _after_warmup(self, k: int, horizon: int) -> float:
        return self.base_lr + (self.floor_lr - self.base_lr) * k / horizon


@dataclass(frozen=True, kw_only=True)
class PolynomialSchedule(_Annealed):
    """Polynomial decay to ``min_lr`` at T (torch's PolynomialLR, plus a floor)."""

    type_name: ClassVar[str] = "polynomial"
    formula: ClassVar[str] = "min_lr + (base_lr − min_lr)(1 − k/T)^power"

    power: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._float("power", lower=0.0)

    def _after_warmup(self, k: int, horizon: int) -> float:
        floor = self.floor_lr
        return floor + (self.base_lr - floor) * (1.0 - k / horizon) ** self.power


@dataclass(frozen=True, kw_only=True)
class CosineSchedule(_Annealed):
    """Half a cosine from ``base_lr`` to ``min_lr`` at T, then held (torch's CosineAnnealingLR)."""

    type_name: ClassVar[str] = "cosine"
    formula: ClassVar[str] = "min_lr + ½(base_lr − min_lr)(1 + cos πk/T)"

    def _after_warmup(self, k: int, horizon: int) -> float:
        return _cosine(self.base_lr, self.floor_lr, k / horizon)


@dataclass(frozen=True, kw_only=True)
class CosineRestartsSchedule(_Annealed):
    """SGDR: cosine cycles restarting at a peak; cycle i lasts cycle_steps·cycle_mult^i steps
    and peaks at base_lr·cycle_decay^i (torch's CosineAnnealingWarmRestarts when cycle_decay = 1)."""

    type_name: ClassVar[str] = "cosine_restarts"
    formula: ClassVar[str] = (
        "SGDR: in cycle i = 0, 1, … of cycle_steps·cycle_mult^i steps, cosine from base_lr·cycle_decay^i to min_lr"
    )

    cycle_steps: int
    cycle_mult: float = 1.0
    cycle_decay: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._int("cycle_steps", minimum=2)
        self._float("cycle_mult", lower=1.0, lower_inclusive=True, upper=None)
        self._float("cycle_decay", lower=0.0, upper=1.0)

    def cycle_at(self, k: int) -> tuple[int, float, float]:
        """``(index, steps into the cycle, cycle length)`` of the cycle holding step ``k`` after warmup."""
        first = self.cycle_steps
        mult = self.cycle_mult
        if mult == 1.0:
            index = k // first
            return index, float(k - index * first), float(first)

        def start(i: int) -> float:
            return first * (mult**i - 1.0) / (mult - 1.0)

        index = int(math.log(1.0 + k * (mult - 1.0) / first, mult))
        while index > 0 and start(index) > k:
            index -= 1
        while start(index + 1) <= k:
            index += 1
        return index, k - start(index), first * mult**index

    def _after_warmup(self, k: int, horizon: int) -> float:
        index, t, length = self.cycle_at(k)
        peak = self.base_lr * self.cycle_decay**index
        return _cosine(peak, self.floor_lr, t / length)


@dataclass(frozen=True, kw_only=True)
class CyclicSchedule(_Annealed):
    """Smith's cyclical learning rate: triangles from ``min_lr`` up to ``base_lr`` and back.

    Without warmup, step 0 is at ``min_lr`` (torch's CyclicLR with step_size_up = cycle_steps/2).
    With warmup, the warmup is the first rise: the cycles start at their peak when it ends.
    """

    type_name: ClassVar[str] = "cyclic"
    formula: ClassVar[str] = (
        "triangles min_lr → base_lr → min_lr of cycle_steps, height × 1 (triangular), "
        "2^−i in cycle i (triangular2), gamma^k (exp_range)"
    )
    min_lr_ratio: ClassVar[float] = 0.25

    cycle_steps: int
    mode: str = "triangular"
    gamma: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self._int("cycle_steps", minimum=2)
        mode = self.mode
        if mode not in CYCLIC_MODES:
            raise UsageError(
                f"schedule 'cyclic': unknown mode, choose one of {', '.join(CYCLIC_MODES)}; got {mode=}"
            )
        self._float("gamma", lower=0.0, upper=1.0)

    def _after_warmup(self, k: int, horizon: int) -> float:
        position = k + (self.cycle_steps / 2.0 if self.warmup_steps > 0 else 0.0)
        cycle = math.floor(1.0 + position / self.cycle_steps)
        x = 1.0 + position / self.cycle_steps - cycle
        height = x / 0.5 if x <= 0.5 else (x - 1.0) / (0.5 - 1.0)
        if self.mode == "triangular":
            scale = 1.0
        elif self.mode == "triangular2":
            scale = 1.0 / (2.0 ** (cycle - 1))
        else:
            scale = self.gamma**k
        floor = self.floor_lr
        return floor + (self.base_lr - floor) * height * scale


@dataclass(frozen=True, kw_only=True)
class OneCycleSchedule(_Annealed):
    """One cycle: the warmup is the rise to ``base_lr``, then half a cosine down to ``min_lr`` at T.

    With ``cycle_momentum``, momentum (SGD) or beta1 (Adam-like) moves inversely to the learning
    rate: ``max_momentum`` → ``base_momentum`` during the rise, back to ``max_momentum`` at T.
    """

    type_name: ClassVar[str] = "one_cycle"
    formula: ClassVar[str] = "warmup rise, then min_lr + ½(base_lr − min_lr)(1 + cos πk/T); momentum inverse"

    cycle_momentum: bool = True
    max_momentum: float = 0.95
    base_momentum: float = 0.85

    def __post_init__(self) -> None:
        super().__post_init__()
        self._bool("cycle_momentum")
        max_momentum = self._float(
            "max_momentum", lower=0.0, lower_inclusive=True, upper=1.0, upper_inclusive=False
        )
        base_momentum = self._float("base_momentum", lower=0.0, lower_inclusive=True, upper=1.0)
        if base_momentum > max_momentum:
            raise UsageError(
                f"schedule 'one_cycle': base_momentum must not exceed max_momentum, "
                f"got {base_momentum=}, {max_momentum=}"
            )

    def _after_warmup(self, k: int, horizon: int) -> float:
        return _cosine(self.base_lr, self.floor_lr, k / horizon)

    def momentum(self, k: int, total_steps: int) -> float | None:
        if not self.cycle_momentum:
            return None
        total = self.check_budget(total_steps)
        step = min(check_step_index(k), total)
        warmup = self.warmup_steps
        if step < warmup:
            return self.max_momentum + (self.base_momentum - self.max_momentum) * step / warmup
        return _cosine(self.base_momentum, self.max_momentum, (step - warmup) / (total - warmup))


@dataclass(frozen=True, kw_only=True)
class InverseSqrtSchedule(ScheduleSpec):
    """The "Noam" schedule: linear warmup, then ``base_lr · sqrt(warmup_steps/k)`` with k counted from step 0."""

    type_name: ClassVar[str] = "inverse_sqrt"
    formula: ClassVar[str] = "base_lr · sqrt(warmup_steps/k) for k ≥ warmup_steps (k counted from step 0)"

    warmup_steps: int = dataclasses.field()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._int("warmup_steps", minimum=1)

    def _after_warmup(self, k: int, horizon: int) -> float:
        return self.base_lr * math.sqrt(self.warmup_steps / (k + self.warmup_steps))


@dataclass(frozen=True, kw_only=True)
class PlateauSchedule(_Annealed):
    """Reduce on plateau: multiply by ``decay_rate`` when the validation loss has not improved
    (relative ``threshold``) for more than ``patience`` epochs; never below ``min_lr``.

    Stepped once per epoch with the validation loss (torch's ReduceLROnPlateau, mode "min"). The
    closed form :meth:`lr` is the schedule before any cut; :meth:`lr_after_cuts` applies cuts.
    Epochs that end during warmup update the best loss but never count as bad.
    """

    type_name: ClassVar[str] = "plateau"
    formula: ClassVar[str] = (
        "max(min_lr, base_lr · decay_rate^cuts); a cut after > patience epochs without improvement"
    )
    steps_on_metric: ClassVar[bool] = True

    decay_rate: float = 0.1
    patience: int = 10
    threshold: float = 1e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        self._float("decay_rate", lower=0.0, upper=1.0)
        self._int("patience", minimum=0)
        self._float("threshold", lower=0.0, lower_inclusive=True, upper=1.0, upper_inclusive=False)

    def _after_warmup(self, k: int, horizon: int) -> float:
        return self.base_lr

    def lr_after_cuts(self, k: int, total_steps: int, cuts: int) -> float:
        """The learning rate after ``k`` optimizer steps and ``cuts`` reductions."""
        value = self.lr(k, total_steps)
        if k < self.warmup_steps:
            return value
        return max(self.floor_lr, self.base_lr * self.decay_rate**cuts)

    def is_improvement(self, loss: float, best: float) -> bool:
        """Whether ``loss`` beats ``best`` by more than the relative threshold (NaN never does)."""
        return loss < best * (1.0 - self.threshold)
