"""Exact restore: everything a sweep changes, copied to host memory and put back bit for bit.

Model and optimizer state are copied to CPU (pinned with CUDA; never a second copy on the accelerator),
together with ``param.grad``, every RNG (python, numpy, torch CPU, each CUDA device), the generators found on
the loaders, per-module train/eval flags and a user GradScaler. :class:`~lrtune.finder.LRFinder` puts
everything back in a ``finally``: after a normal return, an exception, or KeyboardInterrupt.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lrtune.finder.rng import _generator_states, _restore_generator

_MISSING = object()


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
