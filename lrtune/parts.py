"""Parts of a model with their own learning-rate factor (discriminative learning rates).

A part is named by a regular expression over parameter names (``model.named_parameters()``,
matched with :func:`re.search`, so ``^body\\.`` anchors and ``head`` matches anywhere). Parts are
tried in order and the first match wins; parameters no part matches form the group ``default``
at factor 1. Each group's learning rate is ``base_lr × factor``; the group dicts carry the
factor as ``lr_factor``, which :func:`lrtune.schedules.build` and the range test use as the
groups' ratios, so a schedule's ``base_lr`` is always the rate of factor 1.

Example:
    >>> import torch
    >>> model = torch.nn.Sequential()
    >>> model.add_module("body", torch.nn.Linear(4, 4))
    >>> model.add_module("head", torch.nn.Linear(4, 2))
    >>> groups = optimizer_groups(model, [GroupSpec.parse("body=^body\\\\.@0.1")], base_lr=0.5)
    >>> [(g["name"], len(g["params"]), g["lr"]) for g in groups]
    [('default', 2, 0.5), ('body', 2, 0.05)]
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError

if TYPE_CHECKING:
    from torch import nn

#: The group of every parameter no named part matches; its factor is always 1.
DEFAULT_GROUP = "default"

#: The key of a param-group dict holding the group's factor (kept by torch optimizers).
FACTOR_KEY = "lr_factor"

#: Default range of a searched factor: log-uniform in [0.01, 1].
DEFAULT_FACTOR_RANGE: tuple[float, float] = (0.01, 1.0)

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _positive_factor(value: object) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0
    )


@dataclass(frozen=True)
class GroupSpec:
    """One named part: a name, the regular expression its parameters' names match, its factor.

    Args:
        name: letters, digits and ``_``, not starting with a digit; not ``default``.
        pattern: a regular expression searched in each parameter's name.
        factor: the part's learning rate over the base rate (> 0).

    Example:
        >>> GroupSpec.parse("body=^body\\\\.@0.1")
        GroupSpec(name='body', pattern='^body\\\\.', factor=0.1)
    """

    name: str
    pattern: str
    factor: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not _NAME.match(self.name):
            raise UsageError(
                f"a param group name must be letters, digits and _ (not starting with a digit), got {self.name=!r}"
            )
        if self.name == DEFAULT_GROUP:
            raise UsageError(
                f"the param group name {DEFAULT_GROUP!r} is reserved for the parameters no pattern matches"
            )
        if not isinstance(self.pattern, str) or not self.pattern:
            raise UsageError(f"param group {self.name!r} needs a non-empty pattern, got {self.pattern=!r}")
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise UsageError(
                f"param group {self.name!r}: bad regular expression {self.pattern!r}: {exc}"
            ) from None
        if not _positive_factor(self.factor):
            raise UsageError(
                f"param group {self.name!r}: the factor must be a number > 0, got {self.factor=!r}"
            )
        object.__setattr__(self, "factor", float(self.factor))

    @classmethod
    def parse(cls, text: str, *, allow_factor: bool = True) -> GroupSpec:
        """``NAME=REGEX`` or ``NAME=REGEX@FACTOR`` (the last ``@`` followed by a number starts the factor).

        Args:
            text: the flag's value.
            allow_factor: False where factors are searched (``lrtune study``): ``@FACTOR`` is an error.
        """
        if not isinstance(text, str) or "=" not in text:
            raise UsageError(f"--param-group must look like NAME=REGEX, got {text!r}")
        name, _, pattern = text.partition("=")
        factor: float = 1.0
        head, at, tail = pattern.rpartition("@")
        if at:
            try:
                factor = float(tail)
            except ValueError:
                if allow_factor:
                    raise UsageError(
                        f"--param-group {text!r}: the factor after '@' must be a number > 0, got {tail!r}"
                    ) from None
            else:
                if not allow_factor:
                    raise UsageError(
                        f"--param-group {text!r}: a study searches each group's factor; give NAME=REGEX"
                    )
                pattern = head
        return cls(name.strip(), pattern, factor)


def check_specs(specs: Iterable[GroupSpec]) -> tuple[GroupSpec, ...]:
    """The specs as a tuple; UsageError when a name repeats."""
    out = tuple(specs)
    for spec in out:
        if not isinstance(spec, GroupSpec):
            raise UsageError(f"param groups must be GroupSpec objects, got {type(spec).__name__}")
    names = [spec.name for spec in out]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise UsageError(
            f"param group names must be unique, got {', '.join(map(repr, repeated))} more than once"
        )
    return out


def specs_from_mapping(patterns: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple[GroupSpec, ...]:
    """Specs at factor 1 from ``{NAME: REGEX}`` (or ``(NAME, REGEX)`` pairs), order kept."""
    items = patterns.items() if isinstance(patterns, Mapping) else patterns
    return check_specs(GroupSpec(str(name), str(pattern)) for name, pattern in items)


@dataclass(frozen=True)
class PartGroup:
    """Parameters of one group after the split: name, factor, parameter names and tensors."""

    name: str
    factor: float
    names: tuple[str, ...]
    params: tuple[Any, ...]


def split_parameters(model: nn.Module, specs: Sequence[GroupSpec]) -> list[PartGroup]:
    """Split ``model``'s parameters into the named parts (first match wins) and ``default``.

    Returns ``default`` first (left out when no parameter is left for it), then the named parts
    in order.

    Raises:
        UsageError: a pattern matches no parameter, or every parameter it matches was taken by an
            earlier part; or names repeat.
    """
    specs = check_specs(specs)
    named = list(model.named_parameters())
    compiled = [re.compile(spec.pattern) for spec in specs]
    taken: dict[str, list[tuple[str, Any]]] = {spec.name: [] for spec in specs}
    matched = dict.fromkeys(taken, 0)
    rest: list[tuple[str, Any]] = []
    for name, param in named:
        owner = None
        for spec, regex in zip(specs, compiled, strict=True):
            if regex.search(name):
                matched[spec.name] += 1
                if owner is None:
                    owner = spec.name
        (taken[owner] if owner is not None else rest).append((name, param))
    shown = ", ".join(name for name, _ in named[:8]) + (", ..." if len(named) > 8 else "")
    for spec in specs:
        if matched[spec.name] == 0:
            raise UsageError(
                f"param group {spec.name!r}: pattern {spec.pattern!r} matches no parameter of the model "
                f"(its parameters: {shown or 'none'})"
            )
        if not taken[spec.name]:
            raise UsageError(
                f"param group {spec.name!r}: every parameter pattern {spec.pattern!r} matches is taken by an "
                "earlier group (first match wins); reorder the groups or narrow the patterns"
            )
    groups = (
        [PartGroup(DEFAULT_GROUP, 1.0, tuple(n for n, _ in rest), tuple(p for _, p in rest))] if rest else []
    )
    for spec in specs:
        pairs = taken[spec.name]
        groups.append(
            PartGroup(spec.name, spec.factor, tuple(n for n, _ in pairs), tuple(p for _, p in pairs))
        )
    return groups


def optimizer_groups(model: nn.Module, specs: Sequence[GroupSpec], *, base_lr: float) -> list[dict[str, Any]]:
    """The param groups a torch optimizer takes: ``params``, ``lr`` = base_lr × factor, ``lr_factor``, ``name``."""
    if not _positive_factor(base_lr):
        raise UsageError(f"base_lr must be a number > 0, got {base_lr=!r}")
    return [
        {
            "params": list(group.params),
            "lr": base_lr * group.factor,
            FACTOR_KEY: group.factor,
            "name": group.name,
        }
        for group in split_parameters(model, specs)
    ]


def group_ratios(param_groups: Sequence[Mapping[str, Any]]) -> list[float] | None:
    """Each group's ``lr_factor`` when every group has one (as :func:`optimizer_groups` sets), else None."""
    factors = [group.get(FACTOR_KEY) for group in param_groups]
    if not factors or not all(_positive_factor(f) for f in factors):
        return None
    return [float(f) for f in factors]  # type: ignore[arg-type]


def to_json(specs: Sequence[GroupSpec]) -> dict[str, dict[str, Any]]:
    """``{NAME: {"pattern": REGEX, "lr_factor": x}}``: the ``param_groups`` entry of ``best.json``."""
    return {spec.name: {"pattern": spec.pattern, FACTOR_KEY: spec.factor} for spec in specs}


def from_json(data: object) -> tuple[GroupSpec, ...]:
    """Inverse of :func:`to_json`; UsageError for an entry that is not ``{"pattern", "lr_factor"}``."""
    if not isinstance(data, Mapping):
        raise UsageError(f"param_groups must map names to {{pattern, lr_factor}}, got {type(data).__name__}")
    specs = []
    for name, entry in data.items():
        if not isinstance(entry, Mapping) or "pattern" not in entry or FACTOR_KEY not in entry:
            raise UsageError(
                f'param_groups[{name!r}] must be {{"pattern": ..., "lr_factor": ...}}, got {entry!r}'
            )
        specs.append(GroupSpec(str(name), entry["pattern"], entry[FACTOR_KEY]))
    return check_specs(specs)


def param_groups(model: nn.Module, path: str | Path) -> list[dict[str, Any]]:
    """The param groups of ``model`` for a torch optimizer, from a ``best.json`` (``lrtune best --out``).

    Each group's ``lr`` is the file's ``schedule.base_lr`` × its ``lr_factor``; a file without
    ``param_groups`` gives one ``default`` group. Build the optimizer from them, then
    :func:`lrtune.schedules.build` from the same file's schedule: the ratios are kept.

    Example:
        >>> opt = torch.optim.SGD(lrtune.param_groups(model, "best.json"), lr=0.1)   # doctest: +SKIP
        >>> scheduler = build(lrtune.load_schedule("best.json"), opt, total_steps=1000)  # doctest: +SKIP
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"best file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"cannot read best file {str(path)!r}: {exc}") from None
    schedule = data.get("schedule") if isinstance(data, dict) else None
    if not isinstance(schedule, Mapping) or "base_lr" not in schedule:
        raise UsageError(
            f"best file {str(path)!r} has no schedule with a base_lr; was it written by `lrtune best`?"
        )
    try:
        specs = from_json(data.get("param_groups") or {})
    except UsageError as exc:
        raise UsageError(f"best file {str(path)!r}: {exc}") from None
    return optimizer_groups(model, specs, base_lr=float(schedule["base_lr"]))


__all__ = [
    "DEFAULT_FACTOR_RANGE",
    "DEFAULT_GROUP",
    "FACTOR_KEY",
    "GroupSpec",
    "PartGroup",
    "check_specs",
    "from_json",
    "group_ratios",
    "optimizer_groups",
    "param_groups",
    "specs_from_mapping",
    "split_parameters",
    "to_json",
]
