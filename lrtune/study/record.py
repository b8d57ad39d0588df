"""What a study stores about itself, so every worker and every resume trains the same trials.

A study's user attributes hold (keys are stable):

* ``lrtune``: the :class:`StudyRecord` — task, epochs, steps per epoch, batch size, the objective
  and its direction, and the search space with its LR bounds;
* ``lrtune_finder_<optimizer>``: the range test each optimizer's bounds came from (the keys of
  ``finder.json``);
* ``lrtune_config``: the settings of the run that created the study (passwords masked);
* ``mlflow_parent_run_id``: the MLflow parent run (see :mod:`lrtune.tracking.study_runs`).

Each trial stores ``plan`` (the schedule spec and optimizer it trained with, and the factors of
named parts as ``param_groups``), ``mlflow_run_id``
and, when pruned, ``reason``.

Example:
    >>> from lrtune.space import LRBounds
    >>> record = StudyRecord(task="digits", epochs=3, steps_per_epoch=12, batch_size=64,
    ...                      metric="val_accuracy", direction="maximize", schedules=("cosine",),
    ...                      optimizers=("sgd",), bounds={"sgd": LRBounds(0.01, 1.0, 0.1)})
    >>> StudyRecord.from_attr(record.to_attr()) == record
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lrtune.errors import UsageError
from lrtune.parts import DEFAULT_FACTOR_RANGE
from lrtune.space import LRBounds, SearchSpace

RECORD_ATTR = "lrtune"
CONFIG_ATTR = "lrtune_config"
FINDER_ATTR_PREFIX = "lrtune_finder_"
PLAN_ATTR = "plan"
REASON_ATTR = "reason"
RUN_ATTR = "mlflow_run_id"
DIRECTIONS = ("maximize", "minimize")
RECORD_VERSION = 1

#: finder.json keys kept on the study (the curve and the suggestion, not every repeat's raw curve).
FINDER_KEYS = (
    "suggested_lr",
    "lr_low",
    "lr_high",
    "lrs",
    "losses",
    "diverged",
    "num_iter",
    "repeats",
    "spread_decades",
    "flags",
    "method",
    "confidence",
)

#: Settings a resumed study must keep: changing one would mix trials that cannot be compared.
#: Everything else (n_trials, timeout, sampler, pruner, seed, device, amp, data_dir, tracking,
#: finder settings) may change between runs of one study.
FIXED_SETTINGS = (
    "task",
    "epochs",
    "steps_per_epoch",
    "batch_size",
    "metric",
    "direction",
    "schedules",
    "optimizers",
    "weight_decay",
    "lr_dropout",
    "warmup_max_fraction",
    "param_groups",
    "group_factor_range",
)


@dataclass(frozen=True)
class StudyRecord:
    """The settings that define a study's trials.

    Args:
        task: the task spec (``digits``, ``module:function``, ...), or a name for :func:`tune`.
        epochs: epochs per trial (the pruner's resource unit).
        steps_per_epoch: optimizer steps per epoch.
        batch_size: training batch size (None when unknown, e.g. in :func:`tune`).
        metric: the objective's name (``val_accuracy``, ``val_loss``, ...).
        direction: ``maximize`` or ``minimize``.
        schedules, optimizers, weight_decay, lr_dropout, warmup_max_fraction: the search space.
        bounds: each optimizer's LR bounds.
        bounds_source: where the bounds came from (``auto``, a file name, ``python``); informative.
        param_groups: named parts ``(NAME, REGEX)`` whose LR factors are searched (in order).
        group_factor_range: the range of those factors.
    """

    task: str
    epochs: int
    steps_per_epoch: int
    batch_size: int | None
    metric: str
    direction: str
    schedules: tuple[str, ...]
    optimizers: tuple[str, ...]
    bounds: Mapping[str, LRBounds]
    weight_decay: tuple[float, float] | None = None
    lr_dropout: bool = False
    warmup_max_fraction: float = 0.2
    bounds_source: str = "auto"
    param_groups: tuple[tuple[str, str], ...] = ()
    group_factor_range: tuple[float, float] = DEFAULT_FACTOR_RANGE
    space: SearchSpace = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise UsageError(f"direction must be maximize or minimize, got {self.direction=!r}")
        for name in ("epochs", "steps_per_epoch"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UsageError(f"{name} must be an integer >= 1, got {name}={value!r}")
        if self.epochs * self.steps_per_epoch < 2:
            raise UsageError(
                f"a trial needs at least 2 optimizer steps, got epochs={self.epochs} × "
                f"steps_per_epoch={self.steps_per_epoch}"
            )
        object.__setattr__(self, "schedules", tuple(self.schedules))
        object.__setattr__(self, "optimizers", tuple(self.optimizers))
        if self.weight_decay is not None:
            object.__setattr__(self, "weight_decay", tuple(float(v) for v in self.weight_decay))
        space = SearchSpace(
            bounds=self.bounds,
            schedules=self.schedules,
            optimizers=self.optimizers,
            weight_decay=self.weight_decay,
            lr_dropout=self.lr_dropout,
            warmup_max_fraction=self.warmup_max_fraction,
            param_groups=self.param_groups,
            group_factor_range=self.group_factor_range,
        )
        object.__setattr__(self, "space", space)
        object.__setattr__(self, "param_groups", space.param_groups)
        object.__setattr__(self, "group_factor_range", space.group_factor_range)

    @property
    def total_steps(self) -> int:
        """Optimizer steps of one whole trial."""
        return self.epochs * self.steps_per_epoch

    def to_attr(self) -> dict[str, Any]:
        """Plain JSON for the study's ``lrtune`` user attribute."""
        return {
            "version": RECORD_VERSION,
            "task": self.task,
            "epochs": self.epochs,
            "steps_per_epoch": self.steps_per_epoch,
            "batch_size": self.batch_size,
            "metric": self.metric,
            "direction": self.direction,
            "schedules": list(self.schedules),
            "optimizers": list(self.optimizers),
            "bounds": {
                name: {"lr_low": b.lr_low, "lr_high": b.lr_high, "suggested_lr": b.suggested_lr}
                for name, b in self.bounds.items()
            },
            "weight_decay": list(self.weight_decay) if self.weight_decay is not None else None,
            "lr_dropout": self.lr_dropout,
            "warmup_max_fraction": self.warmup_max_fraction,
            "bounds_source": self.bounds_source,
            "param_groups": [list(pair) for pair in self.param_groups],
            "group_factor_range": list(self.group_factor_range),
        }

    @classmethod
    def from_attr(cls, data: object) -> StudyRecord:
        """Inverse of :meth:`to_attr`; UsageError when the attribute is not one lrtune wrote."""
        if not isinstance(data, Mapping) or data.get("version") != RECORD_VERSION:
            raise UsageError(
                "the study's 'lrtune' attribute is missing or from another lrtune version; "
                "start a new study with another --study-name"
            )
        try:
            bounds = {name: LRBounds(**value) for name, value in data["bounds"].items()}
            weight_decay = data.get("weight_decay")
            return cls(
                task=str(data["task"]),
                epochs=int(data["epochs"]),
                steps_per_epoch=int(data["steps_per_epoch"]),
                batch_size=None if data.get("batch_size") is None else int(data["batch_size"]),
                metric=str(data["metric"]),
                direction=str(data["direction"]),
                schedules=tuple(data["schedules"]),
                optimizers=tuple(data["optimizers"]),
                bounds=bounds,
                weight_decay=None if weight_decay is None else (weight_decay[0], weight_decay[1]),
                lr_dropout=bool(data.get("lr_dropout", False)),
                warmup_max_fraction=float(data.get("warmup_max_fraction", 0.2)),
                bounds_source=str(data.get("bounds_source", "auto")),
                param_groups=tuple((str(n), str(p)) for n, p in data.get("param_groups") or ()),
                group_factor_range=tuple(data.get("group_factor_range") or DEFAULT_FACTOR_RANGE),
            )
        except (KeyError, TypeError, AttributeError, IndexError) as exc:
            raise UsageError(
                f"the study's 'lrtune' attribute is damaged ({type(exc).__name__}: {exc})"
            ) from None

    def conflicts(self, new: StudyRecord, *, compare_bounds: bool) -> list[str]:
        """How ``new`` differs from this stored record in settings a resumed study must keep.

        Args:
            new: the settings of the run that wants to resume.
            compare_bounds: also compare LR bounds (when the new run brings its own finder result).

        Returns:
            One ``"name: stored → new"`` entry per difference (empty when compatible).
        """
        out: list[str] = []
        for name in FIXED_SETTINGS:
            old, now = getattr(self, name), getattr(new, name)
            if old != now:
                out.append(f"{name} {_show(old)} → {_show(now)}")
        if compare_bounds and not _same_bounds(self.bounds, new.bounds):
            out.append(f"LR bounds {_show_bounds(self.bounds)} → {_show_bounds(new.bounds)}")
        return out


def _show(value: object) -> str:
    if isinstance(value, tuple) and value and isinstance(value[0], tuple):  # param_groups
        return "[" + ",".join(f"{name}={pattern}" for name, pattern in value) + "]"
    if isinstance(value, tuple):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _show_bounds(bounds: Mapping[str, LRBounds]) -> str:
    return ", ".join(f"{name} {b.lr_low:.3g}..{b.lr_high:.3g}" for name, b in bounds.items())


def _same_bounds(a: Mapping[str, LRBounds], b: Mapping[str, LRBounds]) -> bool:
    if set(a) != set(b):
        return False
    return all(
        math.isclose(getattr(a[k], f), getattr(b[k], f), rel_tol=1e-9)
        for k in a
        for f in ("lr_low", "lr_high", "suggested_lr")
    )


def finder_attr(result: Mapping[str, Any]) -> dict[str, Any]:
    """The part of a finder result (``finder.json`` keys) kept on the study."""
    return {key: result[key] for key in FINDER_KEYS if key in result}


def read_record(user_attrs: Mapping[str, Any]) -> StudyRecord | None:
    """The study's record, or None when lrtune never wrote one."""
    data = user_attrs.get(RECORD_ATTR)
    return None if data is None else StudyRecord.from_attr(data)


def finder_results(user_attrs: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Optimizer → the finder result stored on the study."""
    return {
        key[len(FINDER_ATTR_PREFIX) :]: dict(value)
        for key, value in user_attrs.items()
        if key.startswith(FINDER_ATTR_PREFIX) and isinstance(value, Mapping)
    }


def incompatible(study_name: str, differences: list[str]) -> UsageError:
    """The error for resuming a study with settings that would mix incomparable trials."""
    return UsageError(
        f"study {study_name!r} exists with other settings ({'; '.join(differences)}); "
        "resume it with the settings it was created with, or choose a new --study-name"
    )


__all__ = [
    "CONFIG_ATTR",
    "FINDER_ATTR_PREFIX",
    "FIXED_SETTINGS",
    "PLAN_ATTR",
    "REASON_ATTR",
    "RECORD_ATTR",
    "RUN_ATTR",
    "StudyRecord",
    "finder_attr",
    "finder_results",
    "incompatible",
    "read_record",
]
