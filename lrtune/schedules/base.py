"""The base of every schedule spec: shared keys, validation helpers and the warmup combinator.

A spec is a frozen dataclass holding plain JSON values. Its :meth:`ScheduleSpec.lr` is a
pure closed form: the learning rate in effect after ``k`` calls of the scheduler's
``step()``, for a run of ``total_steps`` optimizer steps. Warmup is handled here, once,
for every type; a type only implements the part after warmup.

Example:
    >>> from lrtune.schedules import parse_spec
    >>> spec = parse_spec({"type": "cosine", "base_lr": 0.1, "min_lr": 0.001, "warmup_steps": 10})
    >>> spec.lr(0, 110), spec.lr(10, 110), spec.lr(110, 110)
    (0.001, 0.1, 0.001)
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, ClassVar

from lrtune.errors import UsageError

#: Keys every schedule type takes, in the order they are written out.
COMMON_KEYS: tuple[str, ...] = ("base_lr", "warmup_steps", "warmup_init_lr", "lr_dropout")

#: ``warmup_init_lr`` defaults to ``base_lr * WARMUP_INIT_RATIO``.
WARMUP_INIT_RATIO = 0.01


def check_total_steps(total_steps: object) -> int:
    """Return ``total_steps`` as an int, or raise :class:`UsageError` unless it is an integer >= 1."""
    if isinstance(total_steps, bool) or not isinstance(total_steps, numbers.Integral) or int(total_steps) < 1:
        raise UsageError(f"total_steps must be an integer >= 1, got {total_steps=}")
    return int(total_steps)


@dataclass(frozen=True, kw_only=True)
class ScheduleSpec:
    """Base class (and union type) of every schedule spec.

    Args:
        base_lr: the peak learning rate (> 0).
        warmup_steps: steps of linear rise from ``warmup_init_lr`` to ``base_lr``; the schedule
            proper then runs over the remaining ``total_steps - warmup_steps`` steps.
        warmup_init_lr: the learning rate at step 0 of the warmup; ``None`` means ``base_lr / 100``.
        lr_dropout: keep probability of Learning Rate Dropout (Lin et al., 2019); 1 is off.
    """

    #: The name in :data:`lrtune.schedules.REGISTRY` and in the ``"type"`` key of a spec.
    type_name: ClassVar[str] = ""
    #: One-line formula of ``lr(k)`` after warmup, for the catalogue.
    formula: ClassVar[str] = ""
    #: True for schedules stepped once per epoch with the validation loss.
    steps_on_metric: ClassVar[bool] = False

    base_lr: float
    warmup_steps: int = 0
    warmup_init_lr: float | None = None
    lr_dropout: float = 1.0

    def __post_init__(self) -> None:
        if not self.type_name:
            raise TypeError("ScheduleSpec is a base class; build a registered type, e.g. with parse_spec()")
        base_lr = self._float("base_lr", lower=0.0)
        self._int("warmup_steps", minimum=0)
        if self.warmup_init_lr is not None:
            warmup_init_lr = self._float("warmup_init_lr", lower=0.0)
            if warmup_init_lr > base_lr:
                raise UsageError(
                    f"schedule {self.type_name!r}: warmup_init_lr must not exceed base_lr, "
                    f"got {warmup_init_lr=}, {base_lr=}"
                )
        self._float("lr_dropout", lower=0.0, upper=1.0)

    # ----------------------------------------------------------------------------------- validation
    def _set(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)

    def _float(
        self,
        name: str,
        *,
        lower: float | None = None,
        upper: float | None = None,
        lower_inclusive: bool = False,
        upper_inclusive: bool = True,
    ) -> float:
        """Validate field ``name`` as a finite number in the given interval, store it as float."""
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"schedule {self.type_name!r}: {name} must be a number, got {name}={value!r}")
        number = float(value)
        too_low = lower is not None and (number < lower if lower_inclusive else number <= lower)
        too_high = upper is not None and (number > upper if upper_inclusive else number >= upper)
        if not math.isfinite(number) or too_low or too_high:
            left = "[" if lower_inclusive else "("
            right = "]" if upper_inclusive else ")"
            low = "-inf" if lower is None else f"{lower:g}"
            high = "inf" if upper is None else f"{upper:g}"
            raise UsageError(
                f"schedule {self.type_name!r}: {name} must lie in {left}{low}, {high}{right}, got {name}={value!r}"
            )
        self._set(name, number)
        return number

    def _int(self, name: str, *, minimum: int) -> int:
        """Validate field ``name`` as an integer >= ``minimum`` (integral floats accepted), store it."""
        value = getattr(self, name)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise UsageError(
                f"schedule {self.type_name!r}: {name} must be an integer >= {minimum}, got {name}={value!r}"
            )
        self._set(name, value)
        return value

    def _bool(self, name: str) -> bool:
        value = getattr(self, name)
        if not isinstance(value, bool):
            raise UsageError(
                f"schedule {self.type_name!r}: {name} must be true or false, got {name}={value!r}"
            )
        return value

    @classmethod
    def derived_default(cls, name: str) -> str | None:
        """How the default of key ``name`` is derived when it is left out (``None`` if it is not)."""
        if name == "warmup_init_lr":
            return f"base_lr/{1 / WARMUP_INIT_RATIO:g}"
        return None

    # -------------------------------------------------------------------------------- closed forms
    @property
    def warmup_start_lr(self) -> float:
        """``warmup_init_lr`` with its default filled in."""
        value = self.warmup_init_lr
        return self.base_lr * WARMUP_INIT_RATIO if value is None else value

    def check_budget(self, total_steps: object) -> int:
        """Return ``total_steps`` as an int, or raise :class:`UsageError` if this schedule cannot run in it."""
        total = check_total_steps(total_steps)
        if total <= self.warmup_steps:
            warmup_steps = self.warmup_steps
            raise UsageError(
                f"schedule {self.type_name!r}: total_steps must exceed warmup_steps, got {total_steps=}, {warmup_steps=}"
            )
        return total

    def lr(self, k: int, total_steps: int) -> float:
        """The learning rate after ``k`` scheduler steps of a run of ``total_steps`` steps.

        Warmup rises linearly from ``warmup_init_lr`` (k = 0) to ``base_lr`` (k = warmup_steps);
        then the type's own formula runs with ``k`` counted from the end of warmup over
        ``T = total_steps - warmup_steps``. Past ``total_steps`` the value is held.
        """
        total = self.check_budget(total_steps)
        step = check_step_index(k)
        step = min(step, total)
        warmup = self.warmup_steps
        if step < warmup:
            start = self.warmup_start_lr
            return start + (self.base_lr - start) * step / warmup
        return self._after_warmup(step - warmup, total - warmup)

    def _after_warmup(self, k: int, horizon: int) -> float:
        """The type's formula at ``0 <= k <= horizon`` steps after warmup (``horizon`` = T >= 1)."""
        raise NotImplementedError

    def momentum(self, k: int, total_steps: int) -> float | None:
        """Momentum (or Adam's beta1) after ``k`` steps, or ``None`` when the schedule leaves it alone."""
        return None

    # ------------------------------------------------------------------------------------ plain JSON
    @classmethod
    def keys(cls) -> tuple[str, ...]:
        """Every key of this type: ``base_lr``, the type's own keys, then the other common keys."""
        own = cls.own_keys()
        return ("base_lr", *own, *(name for name in COMMON_KEYS[1:] if name not in own))

    @classmethod
    def own_keys(cls) -> tuple[str, ...]:
        """Keys beside ``base_lr`` that make this type (including common keys it redefines)."""
        base = {f.name: f for f in dataclasses.fields(ScheduleSpec)}
        own = []
        for f in dataclasses.fields(cls):
            parent = base.get(f.name)
            if parent is None or (f.name != "base_lr" and f.default is not parent.default):
                own.append(f.name)
        return tuple(own)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form, ``{"type": ..., key: value, ...}``; keys left at a derived default are omitted."""
        out: dict[str, Any] = {"type": self.type_name}
        for name in self.keys():
            value = getattr(self, name)
            if value is None:
                continue
            out[name] = list(value) if isinstance(value, tuple) else value
        return out


def check_step_index(k: object) -> int:
    """Return ``k`` as an int, or raise :class:`UsageError` unless it is an integer >= 0."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or int(k) < 0:
        raise UsageError(f"the step index must be an integer >= 0, got {k=}")
    return int(k)
