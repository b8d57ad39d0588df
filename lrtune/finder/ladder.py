"""The learning-rate ladder of a sweep and the checks on its endpoints, length and step mode."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from lrtune.errors import UsageError

STEP_MODES: tuple[str, ...] = ("exp", "linear")


def _check_ladder(start_lr: float, end_lr: float, num_iter: int, mode: str) -> None:
    for name, value in (("start_lr", start_lr), ("end_lr", end_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise UsageError(f"{name} must be a finite number, got {name}={value!r}")
        if value <= 0:
            raise UsageError(f"{name} must be positive, got {name}={value!r}")
    if start_lr >= end_lr:
        raise UsageError(f"start_lr must be below end_lr, got {start_lr=} and {end_lr=}")
    if isinstance(num_iter, bool) or not isinstance(num_iter, (int, np.integer)) or num_iter < 2:
        raise UsageError(f"num_iter must be an integer of at least 2, got {num_iter=}")
    if mode not in STEP_MODES:
        raise UsageError(f"unknown step mode {mode!r}; choose one of: {', '.join(STEP_MODES)}")


def lr_ladder(start_lr: float, end_lr: float, num_iter: int, mode: str = "exp") -> npt.NDArray[np.float64]:
    """The learning rates of a sweep, endpoints included: ``ladder[0] == start_lr``, ``ladder[-1] == end_lr``.

    ``exp``: ``start · (end/start)^(i/(n-1))``; ``linear``: ``start + (end-start)·i/(n-1)``.

    Raises:
        UsageError: start ≥ end, a non-positive or non-finite LR, ``num_iter < 2`` or an unknown mode.

    Example:
        >>> lr_ladder(1e-3, 1.0, 4).round(12).tolist()
        [0.001, 0.01, 0.1, 1.0]
        >>> lr_ladder(1.0, 2.0, 3, "linear").tolist()
        [1.0, 1.5, 2.0]
    """
    _check_ladder(start_lr, end_lr, num_iter, mode)
    t = np.arange(num_iter, dtype=np.float64) / (num_iter - 1)
    ladder = start_lr * (end_lr / start_lr) ** t if mode == "exp" else start_lr + (end_lr - start_lr) * t
    ladder[0], ladder[-1] = start_lr, end_lr
    return ladder
