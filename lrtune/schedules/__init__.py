"""Learning-rate schedules: closed forms, a registry, and real torch schedulers.

A schedule is plain JSON, e.g. ``{"type": "cosine", "base_lr": 0.1, "min_lr": 0.001,
"warmup_steps": 100}``. :func:`build` turns it into a ``torch.optim.lr_scheduler.LRScheduler``
stepped once per optimizer step (``plateau``: once per epoch with the validation loss).
The torch adapter is imported on first use, so listing the catalogue needs no torch.

Example:
    >>> from lrtune.schedules import REGISTRY, lr_at
    >>> "one_cycle" in REGISTRY
    True
    >>> lr_at({"type": "inverse_sqrt", "base_lr": 1.0, "warmup_steps": 100}, 400, 1000)
    0.5
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from lrtune.schedules.base import COMMON_KEYS, ScheduleSpec, check_total_steps
from lrtune.schedules.files import load_schedule
from lrtune.schedules.formulas import (
    CYCLIC_MODES,
    ConstantSchedule,
    CosineRestartsSchedule,
    CosineSchedule,
    CyclicSchedule,
    ExponentialSchedule,
    InverseSqrtSchedule,
    LinearSchedule,
    MultiStepSchedule,
    OneCycleSchedule,
    PlateauSchedule,
    PolynomialSchedule,
    StepSchedule,
)
from lrtune.schedules.registry import (
    REGISTRY,
    CatalogueEntry,
    catalogue,
    common_keys,
    describe,
    examples,
    lr_at,
    parse_spec,
    schedule_class,
)

if TYPE_CHECKING:
    from lrtune.schedules.lr_dropout import LRDropout
    from lrtune.schedules.torch_adapter import PlateauScheduleLR, ScheduleLR, build

_LAZY: dict[str, str] = {
    "build": "lrtune.schedules.torch_adapter",
    "ScheduleLR": "lrtune.schedules.torch_adapter",
    "PlateauScheduleLR": "lrtune.schedules.torch_adapter",
    "LRDropout": "lrtune.schedules.lr_dropout",
}

__all__ = [
    "COMMON_KEYS",
    "CYCLIC_MODES",
    "REGISTRY",
    "CatalogueEntry",
    "ConstantSchedule",
    "CosineRestartsSchedule",
    "CosineSchedule",
    "CyclicSchedule",
    "ExponentialSchedule",
    "InverseSqrtSchedule",
    "LRDropout",
    "LinearSchedule",
    "MultiStepSchedule",
    "OneCycleSchedule",
    "PlateauSchedule",
    "PlateauScheduleLR",
    "PolynomialSchedule",
    "ScheduleLR",
    "ScheduleSpec",
    "StepSchedule",
    "build",
    "catalogue",
    "check_total_steps",
    "common_keys",
    "describe",
    "examples",
    "load_schedule",
    "lr_at",
    "parse_spec",
    "schedule_class",
]


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lrtune.schedules' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
