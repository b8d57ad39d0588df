"""The learning-rate range test: sweep, online divergence stop, exact state restore, repeats.

:class:`LRFinder` trains a model for ``num_iter`` optimizer updates while the learning rate climbs a ladder
from ``start_lr`` to ``end_lr`` (:func:`lr_ladder`), records the raw loss of every update, and hands the raw
curves to :func:`lrtune.suggest.consensus`, which proposes a rate and the bounds of the useful region.

How it works:

- **One multiplier for all param groups**: group 0 follows the ladder, group ``i`` gets the ladder times its
  initial LR over group 0's, so discriminative ratios between groups are kept.
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
- **Exact restore**: model and optimizer state are copied to CPU (pinned with CUDA; never a second copy on
  the accelerator), together with ``param.grad``, every RNG (python, numpy, torch CPU, each CUDA device),
  the generators found on the loaders, per-module train/eval flags and a user GradScaler. Everything is put
  back in a ``finally``: after a normal return, an exception, or KeyboardInterrupt.
- **AMP** (``amp=True``, CUDA only): bf16 autocast where supported (no scaler), else fp16 autocast with a
  GradScaler; an update the scaler skips (its scale went down) does not advance the sweep. In fp16 mode the
  scale is read on the host after every update (one sync per update), the only per-step sync there is.

Example:
    >>> import torch
    >>> from torch import nn
    >>> _ = torch.manual_seed(0)
    >>> x = torch.randn(256, 4)
    >>> y = x @ torch.tensor([1.0, -2.0, 0.5, 3.0]) + 0.1 * torch.randn(256)
    >>> batches = [(x[i : i + 32], y[i : i + 32, None]) for i in range(0, 256, 32)]
    >>> model = nn.Linear(4, 1)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.01)
    >>> result = LRFinder(model, opt, nn.functional.mse_loss).range_test(batches, num_iter=100)
    >>> result.diverged, 1e-3 < result.suggested_lr < 1.0
    (True, True)
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

from lrtune.errors import UsageError
from lrtune.suggest import MIN_POINTS, consensus, smooth

logger = logging.getLogger(__name__)

STEP_MODES: tuple[str, ...] = ("exp", "linear")
NOISE_SIGMAS = 3.0  # on a flat curve, a rise of this many noise σ (times the threshold) is divergence
MAX_AMP_SKIPS = 50  # consecutive fp16 overflow skips after which the sweep counts as diverged

Batch = tuple[Any, Any]
_MISSING = object()


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
        poll_every: updates between two reads of the device-side divergence flag.
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


# ---------------------------------------------------------------------------------------------------------
# Result


def _json_float(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@dataclass(frozen=True)
class FinderResult:
    """What a range test found. ``lrs``/``losses`` are the curve the suggestion was read from.

    Attributes:
        suggested_lr, lr_low, lr_high: the suggestion and the bounds of the useful region.
        lrs: learning rate of each point (group 0's); ``losses``: the smoothed (median) loss there.
        diverged: whether the sweep (at least half of the repeats) stopped on divergence.
        num_iter, repeats: as requested. ``spread_decades``: spread of the repeats' suggestions, or None.
        flags, method, confidence, estimates: from :mod:`lrtune.suggest`.
        raw_losses: the median raw curve behind ``losses``; ``curves``: every repeat's raw curve, each a
            prefix over ``curve_lrs``; ``per_repeat``: each usable repeat's suggested LR;
            ``diverged_repeats``: whether each repeat diverged.
        loss_source: ``"train"``, or ``"val"`` when the suggestion used the validation curve; then
            ``train_lrs``/``train_losses``/``train_raw_losses`` keep the training curve.
        settings: the sweep's settings (ladder, accumulation, AMP, seed, optimizer, device, ...).
        seconds: wall-clock time of the sweeps.
    """

    suggested_lr: float
    lr_low: float
    lr_high: float
    lrs: tuple[float, ...]
    losses: tuple[float, ...]
    diverged: bool
    num_iter: int
    repeats: int
    spread_decades: float | None
    flags: tuple[str, ...]
    method: str
    confidence: str = ""
    estimates: Mapping[str, float] = field(default_factory=dict)
    raw_losses: tuple[float, ...] = ()
    curves: tuple[tuple[float, ...], ...] = ()
    curve_lrs: tuple[float, ...] = ()
    per_repeat: tuple[float, ...] = ()
    diverged_repeats: tuple[bool, ...] = ()
    loss_source: str = "train"
    train_lrs: tuple[float, ...] | None = None
    train_losses: tuple[float, ...] | None = None
    train_raw_losses: tuple[float, ...] | None = None
    settings: Mapping[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict: floats, lists, strings, null (non-finite floats become null)."""

        def plain(value: Any) -> Any:
            if isinstance(value, float):
                return _json_float(value)
            if isinstance(value, (tuple, list)):
                return [plain(v) for v in value]
            if isinstance(value, Mapping):
                return {str(k): plain(v) for k, v in value.items()}
            return value

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """Write :meth:`to_dict` as JSON; parent folders are created, the file is replaced atomically."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")  # same folder: rename is atomic
        try:
            with open(tmp, "x", encoding="utf-8") as fh:  # "x": a fresh file with the usual permissions
                json.dump(self.to_dict(), fh, indent=2, allow_nan=False)
                fh.write("\n")
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FinderResult:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        missing = [k for k in ("suggested_lr", "lr_low", "lr_high", "lrs", "losses") if k not in data]
        if missing:
            raise UsageError(f"not a finder result: missing {', '.join(missing)}")

        def num(value: Any) -> float:
            return math.nan if value is None else float(value)

        def seq(value: Any) -> tuple[float, ...]:
            return tuple(num(v) for v in value)

        known = {f.name for f in fields(cls)}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key in ("suggested_lr", "lr_low", "lr_high", "seconds"):
            if key in kwargs:
                kwargs[key] = num(kwargs[key])
        for key in ("lrs", "losses", "raw_losses", "curve_lrs", "per_repeat"):
            if key in kwargs:
                kwargs[key] = seq(kwargs[key])
        for key in ("train_lrs", "train_losses", "train_raw_losses"):
            if kwargs.get(key) is not None:
                kwargs[key] = seq(kwargs[key])
        if "curves" in kwargs:
            kwargs["curves"] = tuple(seq(c) for c in kwargs["curves"])
        if "flags" in kwargs:
            kwargs["flags"] = tuple(str(f) for f in kwargs["flags"])
        if "diverged_repeats" in kwargs:
            kwargs["diverged_repeats"] = tuple(bool(d) for d in kwargs["diverged_repeats"])
        if kwargs.get("spread_decades") is not None:
            kwargs["spread_decades"] = float(kwargs["spread_decades"])
        if "estimates" in kwargs:
            kwargs["estimates"] = {str(k): num(v) for k, v in kwargs["estimates"].items()}
        kwargs.setdefault("diverged", False)
        kwargs.setdefault("num_iter", len(kwargs["lrs"]))
        kwargs.setdefault("repeats", 1)
        kwargs.setdefault("spread_decades", None)
        kwargs.setdefault("flags", ())
        kwargs.setdefault("method", "")
        return cls(**kwargs)

    @classmethod
    def load_json(cls, path: str | os.PathLike[str]) -> FinderResult:
        """Read a file written by :meth:`save_json`."""
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise UsageError(f"cannot read finder result {str(path)!r}: {exc}") from None
        if not isinstance(data, dict):
            raise UsageError(f"finder result {str(path)!r} is not a JSON object")
        return cls.from_dict(data)

    def plot(self, path: str | os.PathLike[str]) -> None:
        """Draw the curve with the suggestion and bounds to a PNG (:func:`lrtune.plots.plot_finder`)."""
        from lrtune.plots import plot_finder

        plot_finder(self, path)


# ---------------------------------------------------------------------------------------------------------
# State snapshot and restore


def _host_copy(t: Tensor, pin: bool) -> Tensor:
    """A CPU copy of ``t`` (pinned when asked), never an alias of it."""
    t = t.detach()
    if t.layout != torch.strided:
        return t.to("cpu", copy=True)
    out = torch.empty(t.shape, dtype=t.dtype, device="cpu", pin_memory=pin and t.device.type == "cuda")
    out.copy_(t)
    return out


def _rebuild_mapping(obj: Mapping[Any, Any], items: list[tuple[Any, Any]]) -> Any:
    try:
        return type(obj)(items)  # type: ignore[call-arg]
    except TypeError:  # e.g. defaultdict
        return dict(items)


def _copy_tree(
    obj: Any, copy_tensor: Callable[[Tensor], Tensor], memo: dict[int, Tensor] | None = None
) -> Any:
    """Copy nested dicts/lists/tuples, copying every tensor once (shared tensors stay shared)."""
    memo = {} if memo is None else memo
    if isinstance(obj, Tensor):
        if id(obj) not in memo:
            memo[id(obj)] = copy_tensor(obj)
        return memo[id(obj)]
    if isinstance(obj, dict):
        out = _rebuild_mapping(obj, [(k, _copy_tree(v, copy_tensor, memo)) for k, v in obj.items()])
        if hasattr(obj, "_metadata"):  # module state dicts carry per-module versions
            out._metadata = obj._metadata
        return out
    if isinstance(obj, list):
        return [_copy_tree(v, copy_tensor, memo) for v in obj]
    if isinstance(obj, tuple) and not hasattr(obj, "_fields"):
        return tuple(_copy_tree(v, copy_tensor, memo) for v in obj)
    return obj


def _loader_generators(objects: Iterable[Any]) -> list[Any]:
    """Every RNG object found on the loaders (and their samplers), one attribute level deep."""
    found: dict[int, Any] = {}
    for obj in objects:
        if obj is None:
            continue
        holders = [obj, getattr(obj, "sampler", None), getattr(obj, "batch_sampler", None)]
        holders.append(getattr(holders[2], "sampler", None))
        for holder in holders:
            if holder is None or isinstance(holder, (list, tuple, Tensor)):
                continue
            try:
                values = list(vars(holder).values())
            except TypeError:
                continue
            for value in values:
                if isinstance(value, (torch.Generator, np.random.Generator, random.Random)):
                    found.setdefault(id(value), value)
    return list(found.values())


def _generator_states(objects: Iterable[Any]) -> list[tuple[Any, Any]]:
    """(generator, state) for every RNG found on the loaders."""
    states: list[tuple[Any, Any]] = []
    for gen in _loader_generators(objects):
        if isinstance(gen, torch.Generator):
            states.append((gen, gen.get_state()))
        elif isinstance(gen, np.random.Generator):
            states.append((gen, gen.bit_generator.state))
        else:
            states.append((gen, gen.getstate()))
    return states


def _restore_generator(gen: Any, state: Any) -> None:
    if isinstance(gen, torch.Generator):
        gen.set_state(state)
    elif isinstance(gen, np.random.Generator):
        gen.bit_generator.state = state
    else:
        gen.setstate(state)


class _Snapshot:
    """Everything a sweep changes, copied to host memory; :meth:`restore` puts it back bit for bit."""

    def __init__(
        self,
        modules: Sequence[nn.Module],
        optimizer: torch.optim.Optimizer,
        params: Sequence[Tensor],
        loaders: Sequence[Any],
        scaler: Any,
        pin: bool,
    ) -> None:
        self.modules, self.optimizer, self.params, self.scaler = modules, optimizer, params, scaler
        copy = lambda t: _host_copy(t, pin)  # noqa: E731
        self.module_states = [_copy_tree(m.state_dict(), copy) for m in modules]
        self.extra_buffers: list[dict[str, Tensor]] = []
        for module, state in zip(modules, self.module_states, strict=True):
            self.extra_buffers.append(
                {name: copy(buf) for name, buf in module.named_buffers() if name not in state}
            )
        model_ids = {id(p) for m in modules for p in m.parameters()}
        self.loose_params = [(p, copy(p)) for p in params if id(p) not in model_ids]
        self.optimizer_state = _copy_tree(optimizer.state_dict(), copy)
        self.opt_called = optimizer.__dict__.get("_opt_called", _MISSING)  # set by an attached LR scheduler
        self.grads = [
            None if p.grad is None else (copy(p.grad), p.grad.stride(), p.grad.dtype) for p in params
        ]
        self.modes = [(m, m.training) for root in modules for m in root.modules()]
        self.scaler_state = scaler.state_dict() if scaler is not None else None
        self.python_rng = random.getstate()
        self.numpy_rng = np.random.get_state()
        self.torch_rng = torch.get_rng_state()
        self.cuda_rng = (
            torch.cuda.get_rng_state_all()
            if torch.cuda.is_available() and torch.cuda.is_initialized()
            else None
        )
        self.generators = _generator_states(loaders)

    def restore_training_state(self, *, final: bool = False) -> None:
        """Model, optimizer, grads, modes and scaler (the RNGs are left alone)."""
        clone = (lambda t: t) if final else (lambda t: t.clone())
        with torch.no_grad():
            for module, state, extra in zip(
                self.modules, self.module_states, self.extra_buffers, strict=True
            ):
                module.load_state_dict(state)
                for name, saved in extra.items():
                    module.get_buffer(name).copy_(saved)
            for p, saved in self.loose_params:
                p.copy_(saved)
            self.optimizer.state.clear()  # free the sweep's state before loading (no second device copy)
            self.optimizer.load_state_dict(_copy_tree(self.optimizer_state, clone))
            if self.opt_called is _MISSING:
                self.optimizer.__dict__.pop("_opt_called", None)
            else:
                self.optimizer.__dict__["_opt_called"] = self.opt_called
            for p, grad in zip(self.params, self.grads, strict=True):
                if grad is None:
                    p.grad = None
                else:
                    saved, stride, dtype = grad
                    restored = torch.empty_strided(saved.shape, stride, dtype=dtype, device=p.device)
                    p.grad = restored.copy_(saved)
        for module, mode in self.modes:
            module.training = mode
        if self.scaler is not None and self.scaler_state is not None:
            self.scaler.load_state_dict(self.scaler_state)
            per_optimizer = getattr(self.scaler, "_per_optimizer_states", None)
            if isinstance(per_optimizer, dict):
                per_optimizer.clear()

    def restore(self) -> None:
        """Everything, RNGs included."""
        self.restore_training_state(final=True)
        random.setstate(self.python_rng)
        np.random.set_state(self.numpy_rng)
        torch.set_rng_state(self.torch_rng)
        if self.cuda_rng is not None:
            torch.cuda.set_rng_state_all(self.cuda_rng)
        for gen, state in self.generators:
            _restore_generator(gen, state)


# ---------------------------------------------------------------------------------------------------------
# Data


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return _rebuild_mapping(obj, [(k, _to_device(v, device)) for k, v in obj.items()])
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _pair(batch: Any, what: str) -> Batch:
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    size = f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else ""
    raise UsageError(
        f"each batch of {what} must be an (inputs, targets) pair, got a {type(batch).__name__}{size}"
    )


class _Batches:
    """Endless batches on the device: restarts the loader when it runs out."""

    def __init__(self, loader: Iterable[Any], device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.it: Iterator[Any] = iter(loader)

    def next(self) -> Batch:
        try:
            batch = next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            try:
                batch = next(self.it)
            except StopIteration:
                if self.it is self.loader:
                    raise UsageError(
                        "train_loader is a one-shot iterator that ran out; pass a loader or a list of batches "
                        "that can be iterated again"
                    ) from None
                raise UsageError("train_loader yields no batches") from None
        inputs, targets = _pair(batch, "train_loader")
        return _to_device(inputs, self.device), _to_device(targets, self.device)


def _batch_size(targets: Any) -> int:
    return int(targets.shape[0]) if isinstance(targets, Tensor) and targets.ndim > 0 else 1


# ---------------------------------------------------------------------------------------------------------
# Device-side divergence monitor


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


# ---------------------------------------------------------------------------------------------------------
# The finder


@dataclass(frozen=True)
class _AmpPlan:
    dtype: torch.dtype | None  # None: no autocast
    use_scaler: bool
    device_type: str

    @property
    def name(self) -> str | None:
        return None if self.dtype is None else str(self.dtype).removeprefix("torch.")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)


def _amp_plan(amp: bool, device: torch.device) -> _AmpPlan:
    if not amp:
        return _AmpPlan(None, False, device.type)
    if device.type != "cuda":
        logger.warning("amp=True is ignored on %s: mixed precision runs on CUDA only", device)
        return _AmpPlan(None, False, device.type)
    if torch.cuda.is_bf16_supported(including_emulation=False):  # native bf16 (Ampere and later)
        return _AmpPlan(torch.bfloat16, False, "cuda")
    return _AmpPlan(torch.float16, True, "cuda")


@dataclass
class _Sweep:
    raw: npt.NDArray[np.float64]
    val_raw: npt.NDArray[np.float64] | None
    diverged: bool


class LRFinder:
    """Learning-rate range test on a model, its optimizer and a loss.

    Args:
        model: the model; its parameters must already be on ``device``.
        optimizer: a torch optimizer over the model's parameters (any number of param groups; an attached
            LR scheduler is fine).
        criterion: ``criterion(outputs, targets) -> scalar loss`` (any sign).
        device: where batches go; ``None`` uses the device of the model's parameters.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        criterion: Callable[[Any, Any], Tensor],
        device: str | torch.device | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise UsageError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise UsageError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not callable(criterion):
            raise UsageError(f"criterion must be callable, got {type(criterion).__name__}")
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
            train_loader: any iterable of ``(inputs, targets)`` batches; restarted when exhausted. A loader
                with ``reseed(seed)`` is reseeded per repeat.
            val_loader: if given, its first ``val_batches`` batches are evaluated every ``val_every`` updates
                and the suggestion reads the validation curve.
            grad_scaler: a GradScaler to use for fp16 AMP (its state is restored); one is made if needed.
            progress: called with the number of updates advanced at each poll.
            Others: see :class:`SweepSettings`.

        A model in eval mode is put in train mode for the sweep; one already in train mode keeps its
        per-module modes (a frozen batch norm stays frozen). Validation runs under ``eval()`` and ``no_grad``.

        Raises:
            UsageError: bad settings, bad batches, a criterion that does not return a scalar loss, or a curve
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
                sweep = self._sweep(
                    train_loader, ladder, ratios, cfg, plan, scaler, params, val_cache, progress
                )
                sweeps.append(sweep)
        finally:
            snapshot.restore()
        return self._result(ladder, sweeps, cfg, plan, time.perf_counter() - started)

    # -- pieces of range_test ---------------------------------------------------------------------------

    def _group_ratios(self) -> list[float]:
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
            inputs, targets = _pair(batch, "val_loader")
            cache.append((_to_device(inputs, self.device), _to_device(targets, self.device)))
            if len(cache) == count:
                break
        if not cache:
            raise UsageError("val_loader yields no batches")
        return cache

    def _set_lr(self, lr: float, ratios: Sequence[float]) -> None:
        for group, ratio in zip(self.optimizer.param_groups, ratios, strict=True):
            value = lr * ratio
            if isinstance(group["lr"], Tensor):
                group["lr"].fill_(value)
            else:
                group["lr"] = value

    def _loss(self, inputs: Any, targets: Any, plan: _AmpPlan) -> Tensor:
        with plan.autocast():
            loss = self.criterion(self.model(inputs), targets)
        if not isinstance(loss, Tensor) or loss.ndim != 0:
            shape = tuple(loss.shape) if isinstance(loss, Tensor) else type(loss).__name__
            raise UsageError(f"the criterion must return a scalar loss tensor, got {shape}")
        return loss

    def _evaluate(
        self, cache: Sequence[Batch], plan: _AmpPlan, train_modes: Sequence[tuple[nn.Module, bool]]
    ) -> Tensor:
        self.model.eval()
        total = torch.zeros((), device=self.device)
        count = 0
        with torch.no_grad():
            for inputs, targets in cache:
                n = _batch_size(targets)
                total = total + self._loss(inputs, targets, plan).float() * n
                count += n
        for module, mode in train_modes:
            module.training = mode
        return total / count

    def _sweep(
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
        n, acc = cfg.num_iter, cfg.accumulation_steps
        if not self.model.training:
            self.model.train()  # a model already in training mode keeps its per-module modes (frozen BN, ...)
        train_modes = [(m, m.training) for m in self.model.modules()]
        monitor = _Monitor(
            n, self.device, beta=cfg.beta, threshold=cfg.diverge_threshold, chunk=cfg.poll_every
        )
        val_steps = _val_steps(n, cfg.val_every)
        val_slot = {step: k for k, step in enumerate(val_steps)}
        val_buf = torch.full((len(val_steps),), math.nan, device=self.device) if val_cache else None
        batches = _Batches(loader, self.device)
        scale = scaler.get_scale() if scaler is not None else 0.0
        skips, i, polled, stop = 0, 0, 0, [n, n]
        while i < n:
            for p in params:
                p.grad = None
            total: Tensor | None = None
            for _ in range(acc):
                inputs, targets = batches.next()
                loss = self._loss(inputs, targets, plan)
                if not loss.requires_grad:
                    raise UsageError(
                        "the loss does not require grad: does the model have trainable parameters?"
                    )
                part = loss.detach().float()
                total = part if total is None else total + part
                scaled = loss / acc if acc > 1 else loss
                (scaler.scale(scaled) if scaler is not None else scaled).backward()
            assert total is not None
            self._set_lr(float(ladder[i]), ratios)
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
                    total = torch.full_like(total, math.nan)
                skips = 0
            else:
                self.optimizer.step()
            monitor.record(i, total / acc if acc > 1 else total)
            if val_buf is not None and val_cache is not None and i in val_slot:
                val_buf[val_slot[i]] = self._evaluate(val_cache, plan, train_modes)
            i += 1
            if i % cfg.poll_every == 0 or i == n:
                stop = _fetch(monitor.check(i))
                if progress is not None:
                    progress(i - polled)
                polled = i
                if stop[1] < n or (cfg.stop_on_divergence and stop[0] < n):
                    break
        diverged_at, nonfinite_at = stop
        keep = min(i, nonfinite_at, diverged_at + 1 if cfg.stop_on_divergence else n)
        if diverged_at < n:
            logger.info("diverged at update %d (lr %.3g)", diverged_at, ladder[diverged_at])
        raw = monitor.buf[:keep].double().cpu().numpy()
        val_raw = None
        if val_buf is not None:
            kept = sum(1 for step in val_steps if step < keep)
            val_raw = val_buf[:kept].double().cpu().numpy()
            bad = np.flatnonzero(~np.isfinite(val_raw))
            val_raw = val_raw[: bad[0]] if len(bad) else val_raw
        return _Sweep(raw=raw, val_raw=val_raw, diverged=diverged_at < n)

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
            losses=_floats(smooth(lrs, main.median_losses)),
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
            train_losses=_floats(smooth(train_lrs, train.median_losses)) if is_val else None,
            train_raw_losses=_floats(train.median_losses) if is_val else None,
            settings=settings,
            seconds=seconds,
        )


def _val_steps(num_iter: int, every: int) -> list[int]:
    """Updates after which the validation subset is evaluated: every ``every``-th, and the last."""
    return [i for i in range(num_iter) if (i + 1) % every == 0 or i == num_iter - 1]


def _reseed(loader: Any, seed: int) -> None:
    """Reseed the data order (and dropout) of one repeat; the caller restores every RNG afterwards.

    A loader with ``reseed(seed)`` reseeds itself; otherwise the generators found on it (a DataLoader's
    ``generator``) are reseeded. The global RNGs are always reseeded (a default DataLoader's shuffling draws
    from torch's).
    """
    reseed = getattr(loader, "reseed", None)
    if callable(reseed):
        reseed(seed)
    else:
        for gen in _loader_generators([loader]):
            if isinstance(gen, torch.Generator):
                gen.manual_seed(seed)
            elif isinstance(gen, np.random.Generator):
                gen.bit_generator.state = type(gen.bit_generator)(seed).state
            else:
                gen.seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.manual_seed_all(seed)


__all__ = ["STEP_MODES", "FinderResult", "LRFinder", "SweepSettings", "lr_ladder"]
