"""Batches from any loader, moved to the device; an endless stream for the sweep.

A batch is an ``(inputs, targets)`` pair or a mapping (see :mod:`lrtune.forward`; a mapping travels as
``(Kwargs(batch), batch["labels"])``). A pair whose two tensors are already on the device (device-resident batches,
or CPU tensors for a CPU sweep) is passed through as is: the per-step cost of a ``.to()`` call that has
nothing to move is skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import torch
from torch import Tensor

from lrtune.errors import UsageError
from lrtune.finder.snapshot import _rebuild_mapping
from lrtune.forward import split_batch

Batch = tuple[Any, Any]


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, Mapping):
        return _rebuild_mapping(obj, [(k, _to_device(v, device)) for k, v in obj.items()])
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):
        return type(obj)(*(_to_device(v, device) for v in obj))
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(v, device) for v in obj)
    return obj


def _moved(batch: Any, device: torch.device, what: str) -> Batch:
    """``(inputs, targets)`` of one batch with every tensor on ``device`` (a mapping is moved as a whole)."""
    if isinstance(batch, Mapping):
        return split_batch(_to_device(batch, device), what)
    inputs, targets = split_batch(batch, what)
    return _to_device(inputs, device), _to_device(targets, device)


def _on_device(device: torch.device) -> Callable[[Tensor], bool]:
    """A cheap test of whether a tensor already lives on ``device`` (no ``torch.device`` built per call)."""
    if device.type == "cpu":
        return lambda t: t.is_cpu
    if device.type == "cuda" and device.index is not None:
        index = device.index
        return lambda t: t.is_cuda and t.get_device() == index
    return lambda t: t.device == device


class _Batches:
    """Endless batches on the device: restarts the loader when it runs out."""

    def __init__(self, loader: Iterable[Any], device: torch.device) -> None:
        self.loader, self.device = loader, device
        self.it: Iterator[Any] = iter(loader)
        self.on_device = _on_device(device)

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
        inputs, targets = split_batch(batch, "train_loader")
        if type(inputs) is Tensor and type(targets) is Tensor:  # the common case, checked cheaply
            on_device = self.on_device
            if on_device(inputs) and on_device(targets):
                return inputs, targets
            return inputs.to(self.device, non_blocking=True), targets.to(self.device, non_blocking=True)
        return _moved(batch, self.device, "train_loader")
