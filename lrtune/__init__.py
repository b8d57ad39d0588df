"""lrtune: learning-rate range tests you can trust, and schedules tuned with Optuna and MLflow.

The public API is imported lazily, so ``import lrtune`` (and ``lrtune --help``)
stays fast and pulls in no torch until a name is used.

Example:
    >>> import lrtune
    >>> sorted(lrtune.__all__)[:3]
    ['FinderResult', 'LRFinder', 'ScheduleSpec']
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "LRFinder": "lrtune.finder",
    "FinderResult": "lrtune.finder",
    "Task": "lrtune.tasks",
    "load_task": "lrtune.tasks",
    "load_schedule": "lrtune.schedules",
    "build_schedule": "lrtune.schedules",
    "ScheduleSpec": "lrtune.schedules",
    "tune": "lrtune.study",
    "param_groups": "lrtune.parts",
}

__all__ = [
    "FinderResult",
    "LRFinder",
    "ScheduleSpec",
    "Task",
    "__version__",
    "build_schedule",
    "load_schedule",
    "load_task",
    "param_groups",
    "tune",
]

if TYPE_CHECKING:
    from lrtune.finder import FinderResult, LRFinder
    from lrtune.parts import param_groups
    from lrtune.schedules import ScheduleSpec, load_schedule
    from lrtune.schedules import build as build_schedule
    from lrtune.study import tune
    from lrtune.tasks import Task, load_task


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'lrtune' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = getattr(module, "build" if name == "build_schedule" else name)
    globals()[name] = value
    return value
