"""The divergence monitor: EMA, best loss and the divergence rule, with no host sync per step on accelerators.

- **Divergence works for any sign and scale of loss**: with ``s`` the bias-corrected EMA (β = 0.98) and
  ``best`` its minimum, the sweep diverges at the first update where
  ``s - best > diverge_threshold · max(start - best, 3·σ)``; ``start`` and ``σ`` are the mean and noise of
  the first few raw losses. With the default threshold 1 this means "the smoothed loss has climbed back
  above where it started" (or, on a flat curve, 3 noise σ above its best). A NaN/inf loss always stops the
  sweep. The rule is invariant to ``a·loss + b`` (``a > 0``), so Gaussian NLL or ELBO losses work.
- **One rule, two ways to bring the losses to the host** (:func:`_monitor_for` picks by device). The rule
  (:class:`_DivergenceRule`) runs on the host in float64 over the float32 raw losses, a chunk of
  ``poll_every`` updates at a time:

  - CPU (:class:`_HostMonitor`): reading a CPU loss costs well under a microsecond and stalls nothing, so
    every loss is read into a float32 array as it comes, and each poll runs the rule over the new chunk.
  - Accelerators (:class:`_DeviceMonitor`): the losses stay on the device until a poll stacks the chunk and
    copies it to host memory in one transfer. On CUDA the copy is asynchronous (pinned memory, an event)
    and the chunk is judged one poll later, when the copy is long done, so the GPU queue never drains; the
    last poll waits for everything. Up to ``2·poll_every - 1`` updates past a divergence are run and dropped
    from the result. Other devices copy synchronously and judge the chunk at once.

  Both give the same stop steps and the same recorded losses for the same losses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor

NOISE_SIGMAS = 3.0  # on a flat curve, a rise of this many noise σ (times the threshold) is divergence


def _warm_in(num_iter: int) -> int:
    """Updates whose raw losses give the start level and the noise σ."""
    return min(max(8, min(20, num_iter // 10)), num_iter)


class _DivergenceRule:
    """The divergence rule, fed raw losses in update order; ``stop`` is (first diverged, first non-finite).

    Both entries are ``num_iter`` while nothing happened; a non-finite loss counts as divergence too.
    """

    def __init__(self, num_iter: int, *, beta: float, threshold: float) -> None:
        self.n, self.beta, self.threshold = num_iter, beta, threshold
        self.warm = _warm_in(num_iter)
        self.head: list[float] = []
        self.ema, self.best, self.start, self.floor = 0.0, math.inf, 0.0, 0.0
        self.diverged_at, self.nonfinite_at = num_iter, num_iter

    @property
    def stop(self) -> tuple[int, int]:
        return self.diverged_at, self.nonfinite_at

    def feed(self, losses: Sequence[float], first: int) -> None:
        """Take the raw losses of updates ``first, first + 1, ...``."""
        n, beta, warm, threshold = self.n, self.beta, self.warm, self.threshold
        ema, best = self.ema, self.best
        for i, loss in enumerate(losses, first):
            if self.nonfinite_at < n:
                break  # nothing after the first non-finite loss matters
            if not math.isfinite(loss):
                self.nonfinite_at = i
                self.diverged_at = min(self.diverged_at, i)
                break
            if self.diverged_at < n:
                continue  # diverged already: only a non-finite loss changes the outcome now
            ema = beta * ema + (1.0 - beta) * loss
            smooth = ema / (1.0 - beta ** (i + 1))
            if i < warm:
                self.head.append(loss)
                if i == warm - 1:
                    head = np.asarray(self.head, dtype=np.float64)
                    self.start = float(np.mean(head))
                    sigma = 1.2533 * float(np.mean(np.abs(head - self.start)))
                    self.floor = max(NOISE_SIGMAS * sigma, 1e-3 * abs(self.start), 1e-12)
            if i >= warm - 1:
                best = min(best, smooth)
            if i >= warm and smooth - best > threshold * max(self.start - best, self.floor):
                self.diverged_at = i
        self.ema, self.best = ema, best


class _Monitor(Protocol):
    """What a sweep needs from a monitor.

    ``record(i, loss)`` takes the loss of update ``i`` (a scalar tensor, possibly requiring grad; it is
    neither modified nor kept in the graph). ``poll(end, last=...)`` is called after update ``end - 1`` every
    ``poll_every`` updates and returns (first diverged, first non-finite) as known so far, ``num_iter`` for
    none; ``last`` asks for every recorded update to be judged. ``losses(keep)`` is the raw curve of the
    first ``keep`` updates in float64.
    """

    rule: _DivergenceRule

    def record(self, i: int, loss: Tensor) -> None: ...

    def poll(self, end: int, *, last: bool) -> tuple[int, int]: ...

    def losses(self, keep: int) -> npt.NDArray[np.float64]: ...


class _HostMonitor:
    """CPU losses: each is read as it comes (no queue to stall) and judged at the next poll."""

    def __init__(self, num_iter: int, *, beta: float, threshold: float) -> None:
        self.rule = _DivergenceRule(num_iter, beta=beta, threshold=threshold)
        self.buf = np.full(num_iter, np.nan, dtype=np.float32)
        self.judged = 0

    def record(self, i: int, loss: Tensor) -> None:
        self.buf[i] = loss.item()  # float32, as the device buffer would hold it

    def poll(self, end: int, *, last: bool) -> tuple[int, int]:
        if end > self.judged:
            self.rule.feed(self.buf[self.judged : end].tolist(), self.judged)
            self.judged = end
        return self.rule.stop

    def losses(self, keep: int) -> npt.NDArray[np.float64]:
        return self.buf[:keep].astype(np.float64)


def _copy_to_host(dst: Tensor, chunk: Tensor, *, non_blocking: bool) -> None:
    """The only device→host transfer of a sweep without fp16 AMP: one call per poll."""
    dst.copy_(chunk, non_blocking=non_blocking)


class _DeviceMonitor:
    """Accelerator losses: kept on the device, one transfer per poll, judged on the host.

    With ``lagged`` (CUDA) the transfer is asynchronous and a chunk is judged at the poll after its copy
    was queued (or at the last poll); otherwise the chunk is copied synchronously and judged at once.
    """

    def __init__(
        self, num_iter: int, device: torch.device, *, beta: float, threshold: float, lagged: bool
    ) -> None:
        self.rule = _DivergenceRule(num_iter, beta=beta, threshold=threshold)
        self.device, self.lagged = device, lagged
        pin = lagged and device.type == "cuda"
        self.host = torch.full((num_iter,), math.nan, dtype=torch.float32, pin_memory=pin)
        self.host_np = self.host.numpy()  # the same memory, read without going through torch
        self.pending: list[Tensor] = []
        self.copied = 0
        self.in_flight: tuple[int, int, torch.cuda.Event | None] | None = None

    def record(self, i: int, loss: Tensor) -> None:
        self.pending.append(loss.detach())

    def poll(self, end: int, *, last: bool) -> tuple[int, int]:
        if self.pending:
            a, b = self.copied, self.copied + len(self.pending)
            chunk = torch.stack(self.pending)
            self.pending = []
            _copy_to_host(self.host[a:b], chunk, non_blocking=self.lagged)
            event = None
            if self.lagged and chunk.device.type == "cuda":
                event = torch.cuda.Event()
                event.record()
            self._judge()  # the previous chunk, copied a poll ago
            self.in_flight, self.copied = (a, b, event), b
        if last or not self.lagged:
            self._judge()
        return self.rule.stop

    def _judge(self) -> None:
        if self.in_flight is None:
            return
        a, b, event = self.in_flight
        if event is not None:
            event.synchronize()
        self.rule.feed(self.host_np[a:b].tolist(), a)
        self.in_flight = None

    def losses(self, keep: int) -> npt.NDArray[np.float64]:
        if self.in_flight is not None and self.in_flight[2] is not None:
            self.in_flight[2].synchronize()
        return self.host_np[:keep].astype(np.float64)


def _monitor_for(num_iter: int, device: torch.device, *, beta: float, threshold: float) -> _Monitor:
    """The host monitor on CPU, the device monitor (asynchronous on CUDA) elsewhere."""
    if device.type == "cpu":
        return _HostMonitor(num_iter, beta=beta, threshold=threshold)
    return _DeviceMonitor(num_iter, device, beta=beta, threshold=threshold, lagged=device.type == "cuda")
