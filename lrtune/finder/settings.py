"""The settings of a range test: one frozen dataclass, validated, the single source of the defaults."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lrtune.errors import UsageError
from lrtune.finder.ladder import _check_ladder


@dataclass(frozen=True)
class SweepSettings:
    """Every setting of :meth:`LRFinder.range_test`, validated; the single source of its defaults.

    Args:
        start_lr, end_lr, num_iter, step_mode: the ladder (:func:`lr_ladder`); ``num_iter`` counts updates.
        accumulation_steps: micro-batches per optimizer update.
        repeats: sweeps, each from the same starting state with a reseeded data order.
        amp: mixed precision on CUDA (ignored elsewhere).
        seed: data-order seed of repeat ``r`` is ``seed + r``; ``None`` keeps the current RNG streams.
        beta: EMA factor of the online smoothing used by the divergence stop.
        diverge_threshold: rise of the smoothed loss over its best, in units of its drop, that is divergence.
        stop_on_divergence: stop the sweep once it diverges (a NaN/inf loss always stops it).
        poll_every: updates between two evaluations of the divergence rule (on accelerators, one
            device-to-host copy of the losses per poll).
        val_batches: batches of ``val_loader`` kept (on the device) as the fixed validation subset.
        val_every: updates between two validation evaluations.
    """

    start_lr: float = 1e-7
    end_lr: float = 10.0
    num_iter: int = 200
    step_mode: str = "exp"
    accumulation_steps: int = 1
    repeats: int = 1
    amp: bool = False
    seed: int | None = 0
    beta: float = 0.98
    diverge_threshold: float = 1.0
    stop_on_divergence: bool = True
    poll_every: int = 10
    val_batches: int = 4
    val_every: int = 5

    def __post_init__(self) -> None:
        _check_ladder(self.start_lr, self.end_lr, self.num_iter, self.step_mode)
        for name in ("accumulation_steps", "repeats", "poll_every", "val_batches", "val_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise UsageError(f"{name} must be an integer of at least 1, got {name}={value!r}")
        if self.poll_every > 1000:
            raise UsageError(f"poll_every must be at most 1000, got {self.poll_every=}")
        if not 0.0 <= self.beta < 1.0:
            raise UsageError(f"beta must be in [0, 1), got {self.beta=}")
        if not (math.isfinite(self.diverge_threshold) and self.diverge_threshold > 0):
            raise UsageError(f"diverge_threshold must be a positive number, got {self.diverge_threshold=}")
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise UsageError(f"seed must be an integer or None, got {self.seed=!r}")


_DEFAULTS = SweepSettings()
