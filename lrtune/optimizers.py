"""The optimizers lrtune can build, by name, with their torch keyword arguments.

Example:
    >>> import torch
    >>> from lrtune.optimizers import OptimizerSpec, build_optimizer
    >>> model = torch.nn.Linear(2, 1)
    >>> opt = build_optimizer(OptimizerSpec("sgd"), model.parameters(), lr=0.1)
    >>> opt.param_groups[0]["momentum"], opt.param_groups[0]["lr"]
    (0.9, 0.1)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError

if TYPE_CHECKING:
    import torch

#: Default torch keyword arguments per optimizer name (besides ``lr``).
OPTIMIZER_DEFAULTS: dict[str, dict[str, Any]] = {
    "sgd": {"momentum": 0.9},
    "adam": {},
    "adamw": {"weight_decay": 0.01},
    "rmsprop": {},
    "adagrad": {},
}

#: The names users may pass to ``--optimizer`` (``search`` is a study-only extra).
OPTIMIZER_NAMES: tuple[str, ...] = tuple(OPTIMIZER_DEFAULTS)


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer by name plus torch keyword arguments (``lr`` excluded: schedules own it).

    Args:
        name: one of :data:`OPTIMIZER_NAMES`.
        kwargs: torch keyword arguments overriding :data:`OPTIMIZER_DEFAULTS` for that name.
    """

    name: str = "sgd"
    kwargs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZER_DEFAULTS:
            raise UsageError(f"unknown optimizer {self.name!r}; choose one of: {', '.join(OPTIMIZER_NAMES)}")
        if "lr" in self.kwargs:
            raise UsageError(
                "optimizer kwargs must not contain 'lr': the learning rate comes from the schedule"
            )
        for key, value in self.kwargs.items():
            if isinstance(value, float) and not math.isfinite(value):
                raise UsageError(f"optimizer argument {key}={value!r} must be finite")

    def torch_kwargs(self) -> dict[str, Any]:
        """The keyword arguments passed to the torch optimizer, defaults filled in."""
        return {**OPTIMIZER_DEFAULTS[self.name], **dict(self.kwargs)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON form: ``{"name": "sgd", "momentum": 0.9, ...}``."""
        return {"name": self.name, **self.torch_kwargs()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OptimizerSpec:
        """Inverse of :meth:`to_dict`."""
        if "name" not in data:
            raise UsageError("optimizer entry needs a 'name'")
        kwargs = {k: v for k, v in data.items() if k != "name"}
        return cls(name=str(data["name"]), kwargs=kwargs)


def build_optimizer(spec: OptimizerSpec, params: Iterable[Any], *, lr: float) -> torch.optim.Optimizer:
    """Build the torch optimizer ``spec`` names over ``params`` with learning rate ``lr``."""
    import torch

    classes: dict[str, Callable[..., torch.optim.Optimizer]] = {
        "sgd": torch.optim.SGD,
        "adam": torch.optim.Adam,
        "adamw": torch.optim.AdamW,
        "rmsprop": torch.optim.RMSprop,
        "adagrad": torch.optim.Adagrad,
    }
    try:
        return classes[spec.name](params, lr=lr, **spec.torch_kwargs())
    except TypeError as exc:
        raise UsageError(f"bad arguments for optimizer {spec.name!r}: {exc}") from None
