"""The device-side divergence monitor: EMA, best loss and the divergence rule, with no per-update sync.

- **No host sync per step**: the raw losses go into a preallocated device tensor; every ``poll_every``
  updates the bias-corrected EMA, the best smoothed loss and the divergence step are computed on the device
  for the last chunk, and a single ``.tolist()`` reads back two integers. Up to ``poll_every - 1`` updates
  past a divergence are run and dropped from the result.
- **Divergence works for any sign and scale of loss**: with ``s`` the bias-corrected EMA (β = 0.98) and
  ``best`` its minimum, the sweep diverges at the first update where
  ``s - best > diverge_threshold · max(start - best, 3·σ)``; ``start`` and ``σ`` are the mean and noise of
  the first few raw losses. With the default threshold 1 this means "the smoothed loss has climbed back
  above where it started" (or, on a flat curve, 3 noise σ above its best). A NaN/inf loss always stops the
  sweep. The rule is invariant to ``a·loss + b`` (``a > 0``), so Gaussian NLL or ELBO losses work.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

NOISE_SIGMAS = 3.0  # on a flat curve, a rise of this many noise σ (times the threshold) is divergence


def _fetch(t: Tensor) -> list[int]:
    """The only device→host read of a sweep without fp16 AMP: one call per poll."""
    return [int(v) for v in t.tolist()]


class _Monitor:
    """Raw losses in a device buffer; EMA, best and divergence computed per chunk on the device.

    ``check(end)`` processes the updates since the last check with tensor ops only and returns a 2-element
    device tensor: the first diverged update and the first non-finite one (``num_iter`` when none).
    """

    def __init__(
        self, num_iter: int, device: torch.device, *, beta: float, threshold: float, chunk: int
    ) -> None:
        f32: dict[str, Any] = {"device": device, "dtype": torch.float32}
        self.n, self.beta, self.threshold = num_iter, beta, threshold
        self.warm = min(max(8, min(20, num_iter // 10)), num_iter)
        self.buf = torch.full((num_iter,), math.nan, **f32)
        self.done = 0
        self.ema = torch.zeros((), **f32)
        self.best = torch.full((), math.inf, **f32)
        self.start = torch.zeros((), **f32)
        self.floor = torch.zeros((), **f32)
        self.stop = torch.full((2,), num_iter, device=device, dtype=torch.int64)
        self.steps = torch.arange(num_iter, device=device)
        steps64 = np.arange(num_iter, dtype=np.float64)
        self.debias = torch.tensor(1.0 - beta ** (steps64 + 1), **f32)
        lag = np.arange(chunk)[:, None] - np.arange(chunk)[None, :]
        weights = np.where(lag >= 0, (1.0 - beta) * beta ** np.maximum(lag, 0), 0.0)
        self.weights = torch.tensor(weights, **f32)  # ema_j = Σ_t w[j, t]·l_t + β^(j+1)·ema_prev
        self.carry = torch.tensor(beta ** (np.arange(chunk) + 1.0), **f32)

    def record(self, i: int, loss: Tensor) -> None:
        self.buf[i] = loss

    def check(self, end: int) -> Tensor:
        a, b = self.done, end
        if b <= a:
            return self.stop
        m = b - a
        raw = self.buf[a:b]
        finite = torch.isfinite(raw)
        clean = torch.where(finite, raw, torch.zeros_like(raw))
        ema = (self.weights[:m, :m] * clean).sum(dim=1) + self.carry[:m] * self.ema
        self.ema.copy_(ema[-1])
        smooth = ema / self.debias[a:b]
        steps = self.steps[a:b]
        if a < self.warm <= b:
            head = self.buf[: self.warm]
            self.start.copy_(head.mean())
            sigma = 1.2533 * (head - self.start).abs().mean()
            self.floor.copy_(
                torch.clamp(torch.maximum(NOISE_SIGMAS * sigma, 1e-3 * self.start.abs()), min=1e-12)
            )
        tracked = torch.where(steps >= self.warm - 1, smooth, torch.full_like(smooth, math.inf))
        best = torch.fmin(torch.cummin(tracked, dim=0).values, self.best)
        self.best.copy_(best[-1])
        rise = smooth - best
        span = torch.maximum(self.start - best, self.floor)
        rising = (steps >= self.warm) & (rise > self.threshold * span)
        never = torch.full_like(steps, self.n)
        first_bad = torch.where(rising | ~finite, steps, never).min()
        first_nonfinite = torch.where(~finite, steps, never).min()
        self.stop.copy_(torch.minimum(self.stop, torch.stack([first_bad, first_nonfinite])))
        self.done = b
        return self.stop
