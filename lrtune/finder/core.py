"""The range test's entry point: :class:`LRFinder`.

:meth:`LRFinder.range_test` checks its settings, takes a snapshot of the training state, runs the sweeps
(each repeat from the same state, reseeded), puts the state back exactly and reads the suggestion from the
curves.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from lrtune.errors import UsageError
from lrtune.finder.amp import _amp_plan, _AmpPlan
from lrtune.finder.batches import Batch, _moved
from lrtune.finder.ladder import lr_ladder
from lrtune.finder.result import FinderResult, _floats
from lrtune.finder.rng import _reseed
from lrtune.finder.settings import _DEFAULTS, SweepSettings
from lrtune.finder.snapshot import _Snapshot
from lrtune.finder.sweep import _Sweep, _Sweeper, _val_steps
from lrtune.suggest import MIN_POINTS, consensus

logger = logging.getLogger(__name__)


class LRFinder:
    """Learning-rate range test on a model, its optimizer and a loss.

    Args:
        model: the model; its parameters must already be on ``device``.
        optimizer: a torch optimizer over the model's parameters (any number of param groups; an attached
            LR scheduler is fine).
        criterion: ``criterion(outputs, targets) -> scalar loss`` (any sign); ``None`` for a model that
            returns its loss on mapping batches (``model(**batch).loss`` or ``["loss"]``).
        device: where batches go; ``None`` uses the device of the model's parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: Callable[[Any, Any], Tensor] | None,
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise UsageError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if criterion is not None and not callable(criterion):
            raise UsageError(f"criterion must be callable or None, got {type(criterion).__name__}")
        self.model, self.optimizer, self.criterion = model, optimizer, criterion
        self.device = self._resolve_device(device)

    def _resolve_device(self, device: str | torch.device | None) -> torch.device:
        tensors = [*self.model.parameters(), *self.model.buffers()]
        if device is None:
            return tensors[0].device if tensors else torch.device("cpu")
        try:
            wanted = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise UsageError(f"bad device {device!r}: {exc}") from None
        for t in tensors:
            same = t.device.type == wanted.type and (wanted.index is None or t.device.index == wanted.index)
            if not same:
                raise UsageError(
                    f"the model is on {t.device} but device={str(wanted)!r}; move it with model.to(device) "
                    "before building the optimizer"
                )
        return tensors[0].device if tensors else wanted

    def range_test(
        self,
        train_loader: Iterable[Any],
        *,
        start_lr: float = _DEFAULTS.start_lr,
        end_lr: float = _DEFAULTS.end_lr,
        num_iter: int = _DEFAULTS.num_iter,
        step_mode: str = _DEFAULTS.step_mode,
        accumulation_steps: int = _DEFAULTS.accumulation_steps,
        val_loader: Iterable[Any] | None = None,
        repeats: int = _DEFAULTS.repeats,
        amp: bool = _DEFAULTS.amp,
        seed: int | None = _DEFAULTS.seed,
        beta: float = _DEFAULTS.beta,
        diverge_threshold: float = _DEFAULTS.diverge_threshold,
        stop_on_divergence: bool = _DEFAULTS.stop_on_divergence,
        poll_every: int = _DEFAULTS.poll_every,
        val_batches: int = _DEFAULTS.val_batches,
        val_every: int = _DEFAULTS.val_every,
        grad_scaler: torch.amp.GradScaler | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> FinderResult:
        """Run the sweep(s) and return the suggestion; the model, optimizer and RNGs end as they started.

        Args:
            train_loader: any iterable of ``(inputs, targets)`` batches or of mappings (passed as
                ``model(**batch)``, targets ``batch["labels"]``); restarted when exhausted. A loader with
                ``reseed(seed)`` is reseeded per repeat.
            val_loader: if given, its first ``val_batches`` batches are evaluated every ``val_every`` updates
                and the suggestion reads the validation curve.
            grad_scaler: a GradScaler to use for fp16 AMP (its state is restored); one is made if needed.
            progress: called with the number of updates advanced at each poll.
            Others: see :class:`SweepSettings`.

        A model in eval mode is put in train mode for the sweep; one already in train mode keeps its
        per-module modes (a frozen batch norm stays frozen). Validation runs under ``eval()`` and ``no_grad``.

        Raises:
            UsageError: bad settings, bad batches (a mapping without ``labels`` for a criterion, pairs without
                one), a loss that is not a scalar (or missing from the output with no criterion), or a curve
                too short to read (diverged at once).
        """
        cfg = SweepSettings(
            start_lr=start_lr,
            end_lr=end_lr,
            num_iter=num_iter,
            step_mode=step_mode,
            accumulation_steps=accumulation_steps,
            repeats=repeats,
            amp=amp,
            seed=seed,
            beta=beta,
            diverge_threshold=diverge_threshold,
            stop_on_divergence=stop_on_divergence,
            poll_every=poll_every,
            val_batches=val_batches,
            val_every=val_every,
        )
        ladder = lr_ladder(cfg.start_lr, cfg.end_lr, cfg.num_iter, cfg.step_mode)
        points = len(_val_steps(cfg.num_iter, cfg.val_every)) if val_loader is not None else cfg.num_iter
        if points < MIN_POINTS:
            what = (
                "validation points (num_iter / val_every)" if val_loader is not None else "updates (num_iter)"
            )
            raise UsageError(f"a suggestion needs at least {MIN_POINTS} {what}, got {points}")
        plan = _amp_plan(cfg.amp, self.device)
        if grad_scaler is not None and not plan.use_scaler:
            logger.warning("grad_scaler is not used: the sweep runs without fp16 mixed precision")
        ratios = self._group_ratios()
        modules = [self.model] + ([self.criterion] if isinstance(self.criterion, nn.Module) else [])
        params = self._params(modules)
        logger.info(
            "range test: %d update(s) × %d repeat(s), lr %.3g → %.3g (%s), amp=%s, device %s",
            cfg.num_iter,
            cfg.repeats,
            cfg.start_lr,
            cfg.end_lr,
            cfg.step_mode,
            plan.name,
            self.device,
        )
        started = time.perf_counter()
        snapshot = _Snapshot(
            modules,
            self.optimizer,
            params,
            [train_loader, val_loader],
            grad_scaler,
            self.device.type == "cuda",
        )
        sweeper = _Sweeper(self.model, self.optimizer, self.criterion, self.device)
        sweeps: list[_Sweep] = []
        try:
            val_cache = self._cache_val(val_loader, cfg.val_batches, plan) if val_loader is not None else None
            for r in range(cfg.repeats):
                if r > 0:
                    snapshot.restore_training_state()
                if cfg.seed is not None:
                    _reseed(train_loader, cfg.seed + r)
                scaler = None
                if plan.use_scaler:  # the user's scaler (restored between repeats) or a fresh one per repeat
                    scaler = grad_scaler or torch.amp.GradScaler(plan.device_type)
                sweep = sweeper.run(
                    train_loader, ladder, ratios, cfg, plan, scaler, params, val_cache, progress
                )
                sweeps.append(sweep)
        finally:
            snapshot.restore()
        return self._result(ladder, sweeps, cfg, plan, time.perf_counter() - started)

    # -- pieces of range_test ---------------------------------------------------------------------------

    def _group_ratios(self) -> list[float]:
        from lrtune.parts import group_ratios

        factors = group_ratios(self.optimizer.param_groups)  # groups from lrtune.param_groups
        if factors is not None:
            return factors
        lrs = [float(g["lr"]) for g in self.optimizer.param_groups]
        if not lrs or not (math.isfinite(lrs[0]) and lrs[0] > 0):
            raise UsageError(
                f"param group 0 needs a positive learning rate to scale the others from, got lr={lrs[:1]}"
            )
        return [lr / lrs[0] for lr in lrs]

    def _params(self, modules: Sequence[nn.Module]) -> list[Tensor]:
        seen: dict[int, Tensor] = {}
        for module in modules:
            for param in module.parameters():
                seen.setdefault(id(param), param)
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                seen.setdefault(id(p), p)
        for p in seen.values():
            if isinstance(p, nn.parameter.UninitializedParameter):
                raise UsageError("the model has uninitialized (lazy) parameters; run one forward pass first")
        return list(seen.values())

    def _cache_val(self, loader: Iterable[Any], count: int, plan: _AmpPlan) -> list[Batch]:
        cache: list[Batch] = []
        for batch in loader:
            cache.append(_moved(batch, self.device, "val_loader"))
            if len(cache) == count:
                break
        if not cache:
            raise UsageError("val_loader yields no batches")
        return cache

    def _result(
        self,
        ladder: npt.NDArray[np.float64],
        sweeps: Sequence[_Sweep],
        cfg: SweepSettings,
        plan: _AmpPlan,
        seconds: float,
    ) -> FinderResult:
        diverged = [s.diverged for s in sweeps]
        train = consensus(ladder, [s.raw for s in sweeps], diverged=diverged)
        train_lrs = ladder[: len(train.median_losses)]
        main, xs, curves = train, ladder, [s.raw for s in sweeps]
        if sweeps[0].val_raw is not None:
            xs = ladder[_val_steps(cfg.num_iter, cfg.val_every)]
            curves = [s.val_raw for s in sweeps if s.val_raw is not None]
            main = consensus(xs, curves, diverged=diverged)
        lrs = xs[: len(main.median_losses)]
        s = main.suggestion
        settings = {
            **asdict(cfg),
            "amp_dtype": plan.name,
            "optimizer": type(self.optimizer).__name__,
            "param_groups": len(self.optimizer.param_groups),
            "device": str(self.device),
        }
        is_val = sweeps[0].val_raw is not None
        longest = max(len(c) for c in curves)
        return FinderResult(
            suggested_lr=s.suggested_lr,
            lr_low=s.lr_low,
            lr_high=s.lr_high,
            lrs=_floats(lrs),
            losses=_floats(main.smoothed_losses),
            diverged=2 * sum(diverged) >= len(diverged),
            num_iter=cfg.num_iter,
            repeats=cfg.repeats,
            spread_decades=main.spread_decades,
            flags=tuple(s.flags),
            method=s.method,
            confidence=s.confidence,
            estimates=dict(s.estimates),
            raw_losses=_floats(main.median_losses),
            curves=tuple(_floats(c) for c in curves),
            curve_lrs=_floats(xs[:longest]),
            per_repeat=tuple(p.suggested_lr for p in main.per_repeat),
            diverged_repeats=tuple(diverged),
            loss_source="val" if is_val else "train",
            train_lrs=_floats(train_lrs) if is_val else None,
            train_losses=_floats(train.smoothed_losses) if is_val else None,
            train_raw_losses=_floats(train.median_losses) if is_val else None,
            settings=settings,
            seconds=seconds,
        )
