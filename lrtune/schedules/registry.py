"""The registry of schedule types: lookup, parsing plain JSON, the printed catalogue, examples.

Example:
    >>> from lrtune.schedules import lr_at
    >>> lr_at({"type": "step", "base_lr": 0.1, "decay_rate": 0.5, "decay_steps": 10}, 25, 100)
    0.025
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lrtune.errors import UsageError
from lrtune.schedules.base import COMMON_KEYS, ScheduleSpec
from lrtune.schedules.formulas import (
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

#: Every schedule type by name. Iterate it to cover new types automatically.
REGISTRY: dict[str, type[ScheduleSpec]] = {
    cls.type_name: cls
    for cls in (
        ConstantSchedule,
        StepSchedule,
        MultiStepSchedule,
        ExponentialSchedule,
        LinearSchedule,
        PolynomialSchedule,
        CosineSchedule,
        CosineRestartsSchedule,
        CyclicSchedule,
        OneCycleSchedule,
        InverseSqrtSchedule,
        PlateauSchedule,
    )
}


def schedule_class(name: object) -> type[ScheduleSpec]:
    """The spec class registered as ``name``; :class:`UsageError` listing the known types otherwise."""
    cls = REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise UsageError(f"unknown schedule type {name!r}; choose one of: {', '.join(REGISTRY)}")
    return cls


def parse_spec(spec: Mapping[str, Any] | ScheduleSpec) -> ScheduleSpec:
    """Validate a plain-JSON spec (``{"type": ..., ...}``) and return its spec object.

    A :class:`ScheduleSpec` is returned as it is.

    Example:
        >>> parse_spec({"type": "cosine", "base_lr": 0.1, "min_lr": 0.001}).to_dict()
        {'type': 'cosine', 'base_lr': 0.1, 'min_lr': 0.001, 'warmup_steps': 0, 'lr_dropout': 1.0}
    """
    if isinstance(spec, ScheduleSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise UsageError(
            f'a schedule spec must be a mapping like {{"type": "cosine", "base_lr": 0.1}}, got {type(spec).__name__}'
        )
    data = dict(spec)
    if "type" not in data:
        raise UsageError(f"the schedule spec has no 'type'; choose one of: {', '.join(REGISTRY)}")
    name = data.pop("type")
    cls = schedule_class(name)
    keys = cls.keys()
    for key in data:
        if key not in keys:
            raise UsageError(f"unknown key {key!r} for schedule {name!r}; its keys are: {', '.join(keys)}")
    for field in dataclasses.fields(cls):
        required = field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING
        if required and field.name not in data:
            raise UsageError(
                f"schedule {name!r} needs the key {field.name!r}; its keys are: {', '.join(keys)}"
            )
    return cls(**data)


def lr_at(spec: Mapping[str, Any] | ScheduleSpec, k: int, total_steps: int) -> float:
    """The learning rate of ``spec`` after ``k`` steps of a ``total_steps`` run."""
    return parse_spec(spec).lr(k, total_steps)


# ------------------------------------------------------------------------------------------ catalogue
@dataclass(frozen=True)
class CatalogueEntry:
    """One schedule type as the ``lrtune schedules`` command lists it.

    Args:
        type_name: the registered name.
        keys: ``(key, default)`` for the type's own keys; default is JSON text, a derived rule
            like ``base_lr/1000``, or ``required``.
        formula: ``lr(k)`` after warmup, one line.
    """

    type_name: str
    keys: tuple[tuple[str, str], ...]
    formula: str


def _default_text(cls: type[ScheduleSpec], field: dataclasses.Field[Any]) -> str:
    if field.default is dataclasses.MISSING:
        return "required"
    if field.default is None:
        return cls.derived_default(field.name) or "null"
    return json.dumps(field.default)


def _key_defaults(cls: type[ScheduleSpec], names: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    fields = {field.name: field for field in dataclasses.fields(cls)}
    return tuple((name, _default_text(cls, fields[name])) for name in names)


def catalogue() -> tuple[CatalogueEntry, ...]:
    """One entry per registered type, in registry order."""
    return tuple(
        CatalogueEntry(name, _key_defaults(cls, cls.own_keys()), cls.formula)
        for name, cls in REGISTRY.items()
    )


def common_keys() -> tuple[tuple[str, str], ...]:
    """``(key, default)`` of the keys every type takes."""
    return _key_defaults(ConstantSchedule, COMMON_KEYS)


def _key_text(key: str, default: str) -> str:
    return f"{key} (required)" if default == "required" else f"{key}={default}"


def describe() -> str:
    """The catalogue as text: type, keys with defaults, one-line formula."""
    lines = [
        "Schedules: lr(k) after warmup; T = total_steps − warmup_steps, k counted from the end of warmup.",
        "",
    ]
    width = max(len(name) for name in REGISTRY) + 2
    for entry in catalogue():
        keys = ", ".join(_key_text(key, default) for key, default in entry.keys) or "—"
        lines.append(f"{entry.type_name:<{width}}{entry.formula}")
        lines.append(f"{'':<{width}}keys: {keys}")
    common = ", ".join(_key_text(key, default) for key, default in common_keys())
    lines += [
        "",
        f"Every type also takes: {common}.",
        "Warmup rises linearly from warmup_init_lr to base_lr; lr_dropout is the keep probability of",
        "Learning Rate Dropout (1 = off). After total_steps every schedule holds its final value.",
    ]
    return "\n".join(lines)


def examples(total_steps: int = 1000, *, base_lr: float = 0.1) -> dict[str, ScheduleSpec]:
    """One representative spec per registered type for a run of ``total_steps`` (>= 8) steps."""
    n = max(8, int(total_steps))
    specs: dict[str, dict[str, Any]] = {
        "constant": {},
        "step": {"decay_steps": -(-n // 3), "decay_rate": 0.3},
        "multistep": {"milestones": [n // 2, (3 * n) // 4], "decay_rate": 0.1},
        "exponential": {"min_lr": base_lr * 1e-3},
        "linear": {"min_lr": base_lr * 1e-2},
        "polynomial": {"min_lr": base_lr * 1e-3, "power": 2.0},
        "cosine": {"min_lr": base_lr * 1e-3, "warmup_steps": n // 20},
        "cosine_restarts": {
            "min_lr": base_lr * 1e-3,
            "cycle_steps": -(-n // 7),
            "cycle_mult": 2,
            "cycle_decay": 0.7,
        },
        "cyclic": {"min_lr": base_lr / 5, "cycle_steps": n // 4, "mode": "triangular2"},
        "one_cycle": {
            "min_lr": base_lr * 1e-4,
            "warmup_steps": (3 * n) // 10,
            "warmup_init_lr": base_lr / 25,
        },
        "inverse_sqrt": {"warmup_steps": max(1, n // 10)},
        "plateau": {"decay_rate": 0.5, "patience": 2, "min_lr": base_lr * 1e-3},
    }
    return {name: parse_spec({"type": name, "base_lr": base_lr, **specs.get(name, {})}) for name in REGISTRY}
