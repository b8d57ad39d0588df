"""One sweep of the ladder: the inner loop of a range test, from the first update to the divergence stop.

**One multiplier for all param groups**: group 0 follows the ladder, group ``i`` gets the ladder times its
initial LR over group 0's, so discriminative ratios between groups are kept.

The loop does per update only what a plain training loop does plus handing the loss to the monitor
(:mod:`lrtune.finder.monitor`): batches already on the device are not moved, no autocast context is entered
without mixed precision, the loss is neither detached nor cast unless micro-batches are summed, and the
learning rates come from a list of floats through a setter built once per sweep.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from lrtune.errors import UsageError
from lrtune.finder.amp import MAX_AMP_SKIPS, _AmpPlan
from lrtune.finder.batches import Batch, _Batches
from lrtune.finder.monitor import _monitor_for
from lrtune.finder.settings import SweepSettings
from lrtune.forward import forward_loss, samples_in

logger = logging.getLogger(__name__)

_NO_GRAD = "the loss does not require grad: does the model have trainable parameters?"


@dataclass
class _Sweep:
    """The raw curves of one sweep (validation curve only with a val_loader) and whether it diverged."""

    raw: npt.NDArray[np.float64]
    val_raw: npt.NDArray[np.float64] | None
    diverged: bool


def _val_steps(num_iter: int, every: int) -> list[int]:
    """Updates after which the validation subset is evaluated: every ``every``-th, and the last."""
    return [i for i in range(num_iter) if (i + 1) % every == 0 or i == num_iter - 1]


def _lr_setter(optimizer: torch.optim.Optimizer, ratios: Sequence[float]) -> Callable[[float], None]:
    """Sets group ``g``'s LR to ``lr · ratios[g]`` (in place for tensor LRs); built once per sweep."""
    pairs = list(zip(optimizer.param_groups, ratios, strict=True))
    if any(isinstance(group["lr"], Tensor) for group, _ in pairs):

        def set_any(lr: float) -> None:
            for group, ratio in pairs:
                if isinstance(group["lr"], Tensor):
                    group["lr"].fill_(lr * ratio)
                else:
                    group["lr"] = lr * ratio

        return set_any

    def set_floats(lr: float) -> None:
        for group, ratio in pairs:
            group["lr"] = lr * ratio

    return set_floats


@dataclass(frozen=True)
class _Sweeper:
    """Runs sweeps of one model, optimizer and loss on a device; see :meth:`run`."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    criterion: Callable[[Any, Any], Tensor] | None
    device: torch.device

    def _loss(self, inputs: Any, targets: Any, plan: _AmpPlan) -> Tensor:
        if plan.dtype is None:
            loss = forward_loss(self.model, self.criterion, inputs, targets)[1]
        else:
            with plan.autocast():
                loss = forward_loss(self.model, self.criterion, inputs, targets)[1]
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            who = "criterion" if self.criterion is not None else "model"
            raise UsageError(f"the {who} must return a scalar loss tensor, got {shape}")
        return loss

    def _evaluate(
        self, cache: Sequence[Batch], plan: _AmpPlan, train_modes: Sequence[tuple[nn.Module, bool]]
    ) -> Tensor:
        self.model.eval()
        total = torch.zeros((), device=self.device)
        count = 0
        with torch.no_grad():
            for inputs, targets in cache:
                n = samples_in(inputs, targets)
                total = total + self._loss(inputs, targets, plan).float() * n
                count += n
        for module, mode in train_modes:
            module.training = mode
        return total / count

    def run(
        self,
        loader: Iterable[Any],
        ladder: npt.NDArray[np.float64],
        ratios: Sequence[float],
        cfg: SweepSettings,
        plan: _AmpPlan,
        scaler: torch.amp.GradScaler | None,
        params: Sequence[Tensor],
        val_cache: Sequence[Batch] | None,
        progress: Callable[[int], None] | None,
    ) -> _Sweep:
        """One sweep from the current training state; stops at the end of the ladder or on divergence."""
        n, acc, every = cfg.num_iter, cfg.accumulation_steps, cfg.poll_every
        if not self.model.training:
            self.model.train()  # a model already in training mode keeps its per-module modes (frozen BN, ...)
        train_modes = [(m, m.training) for m in self.model.modules()]
        monitor = _monitor_for(n, self.device, beta=cfg.beta, threshold=cfg.diverge_threshold)
        val_steps = _val_steps(n, cfg.val_every) if val_cache else []
        val_slot = {step: k for k, step in enumerate(val_steps)}
        val_buf = torch.full((len(val_steps),), math.nan, device=self.device) if val_cache else None
        next_batch, loss_of, record = _Batches(loader, self.device).next, self._loss, monitor.record
        set_lr = _lr_setter(self.optimizer, ratios)
        lrs: list[float] = ladder.tolist()
        scale = scaler.get_scale() if scaler is not None else 0.0
        skips, i, polled, stop = 0, 0, 0, (n, n)
        while i < n:
            for p in params:
                p.grad = None
            if acc == 1:
                value = loss = loss_of(*next_batch(), plan)
                if not loss.requires_grad:
                    raise UsageError(_NO_GRAD)
                (scaler.scale(loss) if scaler is not None else loss).backward()
            else:
                total: Tensor | None = None
                for _ in range(acc):
                    loss = loss_of(*next_batch(), plan)
                    if not loss.requires_grad:
                        raise UsageError(_NO_GRAD)
                    part = loss.detach().float()
                    total = part if total is None else total + part
                    scaled = loss / acc
                    (scaler.scale(scaled) if scaler is not None else scaled).backward()
                assert total is not None
                value = total / acc
            set_lr(lrs[i])
            if scaler is not None:
                scaler.step(self.optimizer)
                scaler.update()
                new_scale = scaler.get_scale()  # fp16 only: one host read per update
                skipped, scale = new_scale < scale, new_scale
                if skipped:
                    skips += 1
                    if skips <= MAX_AMP_SKIPS:
                        continue  # the update did not happen: same rung again
                    logger.warning(
                        "fp16 gradients overflowed %d times in a row: counted as divergence", skips
                    )
                    value = torch.full((), math.nan, device=value.device)
                skips = 0
            else:
                self.optimizer.step()
            record(i, value)
            if val_buf is not None and val_cache is not None and i in val_slot:
                val_buf[val_slot[i]] = self._evaluate(val_cache, plan, train_modes)
            i += 1
            if i % every == 0 or i == n:
                stop = monitor.poll(i, last=i == n)
                if progress is not None:
                    progress(i - polled)
                polled = i
                if stop[1] < n or (cfg.stop_on_divergence and stop[0] < n):
                    break
        diverged_at, nonfinite_at = stop
        keep = min(i, nonfinite_at, diverged_at + 1 if cfg.stop_on_divergence else n)
        if diverged_at < n:
            logger.info("diverged at update %d (lr %.3g)", diverged_at, ladder[diverged_at])
        raw = monitor.losses(keep)
        val_raw = None
        if val_buf is not None:
            kept = sum(1 for step in val_steps if step < keep)
            val_raw = val_buf[:kept].double().cpu().numpy()
            bad = np.flatnonzero(~np.isfinite(val_raw))
            val_raw = val_raw[: bad[0]] if len(bad) else val_raw
        return _Sweep(raw=raw, val_raw=val_raw, diverged=diverged_at < n)
