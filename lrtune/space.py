"""The Optuna search space of a study, built from the range test's bounds.

One trial draws a schedule type, then only that type's own settings, and turns every
fraction of the budget into steps here, so a :class:`TrialPlan` holds a complete schedule
spec ready for :func:`lrtune.schedules.build`. A parameter that means the same thing in
several types has the same name and distribution everywhere (so TPE learns across types):

============================  ==============================  ============================================
parameter                     distribution                    used by
============================  ==============================  ============================================
``schedule``                  categorical over the types      every trial
``optimizer``                 categorical                     only when several optimizers are searched
``base_lr``                   log-uniform lr_low..lr_high     every trial; ``base_lr_<optimizer>`` when
                                                              the optimizer is searched
``weight_decay``              log-uniform over the range      only when asked
``lr_dropout``                uniform 0.5..1 (keep prob.)     only when asked
``lr_factor_<group>``         log-uniform over                every trial of a space with named parts
                              group_factor_range (0.01..1)    (``param_groups``): the part's LR factor
``warmup_frac``               uniform 0..warmup_max_fraction  constant, step, multistep, exponential,
                                                              linear, polynomial, cosine, cosine_restarts,
                                                              plateau
``min_lr_ratio``              log-uniform 1e-3..0.3           exponential, linear, polynomial, cosine,
                                                              cosine_restarts, cyclic, one_cycle
``decay_rate``                log-uniform 0.05..0.7           step, multistep, plateau
``decay_interval_frac``       uniform 0.1..0.5                step
``milestones_first``          uniform 0.3..0.8                multistep
``milestones_count``          int 1..3                        multistep
``power``                     log-uniform 0.5..3              polynomial
``n_cycles``                  int 1..6                        cosine_restarts, cyclic
``cycle_mult``                categorical 1, 2                cosine_restarts
``cyclic_mode``               categorical triangular,         cyclic
                              triangular2, exp_range
``exp_range_final_scale``     log-uniform 0.01..0.5           cyclic with mode exp_range
``rise_frac``                 uniform 0.1..0.4                one_cycle
``inverse_sqrt_warmup_frac``  log-uniform 0.01..0.25          inverse_sqrt
``patience``                  int 1..clip(epochs // 3, 1, 5)  plateau (in epochs)
============================  ==============================  ============================================

Fractions become steps: warmup, rise and inverse_sqrt's warmup are fractions of
``total_steps``; decay intervals, milestones and cycles are fractions of the steps left
after warmup (where the schedule's own clock runs). ``milestones_first`` is the first
milestone, the others evenly spaced after it (0.5 with 2 gives the classic 50 % / 75 %).
``n_cycles`` cycles fill the budget (with ``cycle_mult`` 2 each cycle doubles).
``exp_range_final_scale`` is the cycle amplitude left at the end, so ``gamma`` is its
``T``-th root. ``plateau`` keeps its default floor (``min_lr`` left out of the spec).

Example:
    >>> import optuna
    >>> space = SearchSpace(bounds={"sgd": LRBounds(0.01, 1.0, 0.1)}, schedules=("cosine", "step"))
    >>> study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    >>> study.enqueue_trial(baseline_params(space))
    >>> plan = sample(study.ask(), space, total_steps=1000, steps_per_epoch=100)
    >>> plan.schedule
    {'type': 'cosine', 'base_lr': 0.1, 'min_lr': 0.0001, 'warmup_steps': 0}
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError
from lrtune.optimizers import OPTIMIZER_NAMES, OptimizerSpec
from lrtune.parts import DEFAULT_FACTOR_RANGE, GroupSpec, specs_from_mapping, to_json

if TYPE_CHECKING:
    import optuna

logger = logging.getLogger(__name__)

#: Ranges of the shared parameters: ``(low, high)``.
MIN_LR_RATIO = (1e-3, 0.3)
DECAY_RATE = (0.05, 0.7)
DECAY_INTERVAL_FRAC = (0.1, 0.5)
MILESTONES_FIRST = (0.3, 0.8)
MILESTONES_COUNT = (1, 3)
POWER = (0.5, 3.0)
N_CYCLES = (1, 6)
CYCLE_MULTS = (1, 2)
CYCLIC_MODES = ("triangular", "triangular2", "exp_range")
EXP_RANGE_FINAL_SCALE = (0.01, 0.5)
RISE_FRAC = (0.1, 0.4)
INVERSE_SQRT_WARMUP_FRAC = (0.01, 0.25)
MAX_PATIENCE = 5
LR_DROPOUT_KEEP = (0.5, 1.0)
#: Largest ``warmup_max_fraction`` a space accepts.
MAX_WARMUP_FRACTION = 0.5

#: Types that get a searched ``warmup_frac`` (a linear warmup before the schedule proper).
WARMUP_TYPES: tuple[str, ...] = (
    "constant",
    "step",
    "multistep",
    "exponential",
    "linear",
    "polynomial",
    "cosine",
    "cosine_restarts",
    "plateau",
)

#: The baseline's schedule type, in order of preference: the first one the space searches.
BASELINE_TYPES: tuple[str, ...] = ("cosine", "linear", "constant")

#: The values of the first, enqueued trial for each parameter it sets (all inside their ranges):
#: no warmup, and an annealed schedule decays to the floor of ``min_lr_ratio`` (0.1 % of its peak).
BASELINE_VALUES: dict[str, Any] = {
    "warmup_frac": 0.0,
    "min_lr_ratio": MIN_LR_RATIO[0],
    "decay_rate": 0.1,
    "decay_interval_frac": 1 / 3,
    "milestones_first": 0.5,
    "milestones_count": 2,
    "power": 1.0,
    "n_cycles": 2,
    "cycle_mult": 1,
    "cyclic_mode": "triangular",
    "rise_frac": 0.25,
    "inverse_sqrt_warmup_frac": 0.05,
    "patience": 1,
    "lr_dropout": 1.0,
}


# ------------------------------------------------------------------------------------------ bounds
@dataclass(frozen=True)
class LRBounds:
    """The useful learning-rate region a range test found: ``lr_low <= suggested_lr <= lr_high``.

    Args:
        lr_low: lower end of the region (> 0).
        lr_high: upper end of the region.
        suggested_lr: the proposed rate, inside the region.

    Example:
        >>> LRBounds(lr_low=1e-3, lr_high=1e-1, suggested_lr=1e-2).suggested_lr
        0.01
    """

    lr_low: float
    lr_high: float
    suggested_lr: float

    def __post_init__(self) -> None:
        for name in ("lr_low", "lr_high", "suggested_lr"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UsageError(f"learning-rate bounds: {name} must be a number, got {name}={value!r}")
            if not math.isfinite(value) or value <= 0:
                raise UsageError(f"learning-rate bounds: {name} must be finite and > 0, got {name}={value!r}")
            object.__setattr__(self, name, float(value))
        lr_low, lr_high, suggested_lr = self.lr_low, self.lr_high, self.suggested_lr
        if not lr_low <= suggested_lr <= lr_high:
            raise UsageError(
                "learning-rate bounds must satisfy lr_low <= suggested_lr <= lr_high, "
                f"got {lr_low=}, {suggested_lr=}, {lr_high=}"
            )

    @classmethod
    def from_finder_json(cls, path: str | Path) -> LRBounds:
        """Read the bounds from a ``finder.json`` written by ``lrtune find`` (or its folder).

        Raises:
            UsageError: the file is missing, not JSON, or lacks valid ``suggested_lr``, ``lr_low``,
                ``lr_high``.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "finder.json"
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise UsageError(
                f"finder result {str(path)!r} not found; run `lrtune find --out DIR` and pass DIR/finder.json, "
                "or use --bounds auto"
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read finder result {str(path)!r}: {exc}") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise UsageError(
                f"finder result {str(path)!r} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"
            ) from None
        if not isinstance(data, dict):
            raise UsageError(
                f"finder result {str(path)!r} must hold a JSON object, got {type(data).__name__}"
            )
        missing = [key for key in ("lr_low", "lr_high", "suggested_lr") if data.get(key) is None]
        if missing:
            raise UsageError(
                f"finder result {str(path)!r} lacks {', '.join(missing)}; was it written by `lrtune find`?"
            )
        try:
            return cls(lr_low=data["lr_low"], lr_high=data["lr_high"], suggested_lr=data["suggested_lr"])
        except UsageError as exc:
            raise UsageError(f"finder result {str(path)!r}: {exc}") from None


# ------------------------------------------------------------------------------------------- space
@dataclass(frozen=True)
class SearchSpace:
    """What a study searches over.

    Args:
        bounds: optimizer name → its learning-rate bounds; one entry per optimizer in ``optimizers``.
        schedules: the schedule types to search (each a registered, searchable type).
        optimizers: the optimizers; more than one puts the optimizer into the space.
        weight_decay: ``(low, high)`` of a log-uniform weight-decay search, or ``None`` (not searched).
        lr_dropout: also search the Learning Rate Dropout keep probability (0.5..1).
        warmup_max_fraction: the longest warmup, as a fraction of the budget (0 turns warmup off).
        param_groups: named parts of the model as ``(NAME, REGEX)`` pairs (first match wins); each
            trial draws a factor ``lr_factor_<NAME>`` per part (:mod:`lrtune.parts`).
        group_factor_range: ``(low, high)`` of the log-uniform factor search.
    """

    bounds: Mapping[str, LRBounds]
    schedules: tuple[str, ...]
    optimizers: tuple[str, ...] = ("sgd",)
    weight_decay: tuple[float, float] | None = None
    lr_dropout: bool = False
    warmup_max_fraction: float = 0.2
    param_groups: tuple[tuple[str, str], ...] = ()
    group_factor_range: tuple[float, float] = DEFAULT_FACTOR_RANGE

    def __post_init__(self) -> None:
        from lrtune.schedules import REGISTRY

        schedules = self._names("schedules", self.schedules)
        for name in schedules:
            if name not in REGISTRY or name not in SEARCHABLE_TYPES:
                known = ", ".join(t for t in SEARCHABLE_TYPES if t in REGISTRY)
                raise UsageError(f"unknown schedule type {name!r} for a study; choose from: {known}")
        object.__setattr__(self, "schedules", schedules)

        optimizers = self._names("optimizers", self.optimizers)
        for name in optimizers:
            if name not in OPTIMIZER_NAMES:
                raise UsageError(f"unknown optimizer {name!r}; choose from: {', '.join(OPTIMIZER_NAMES)}")
        object.__setattr__(self, "optimizers", optimizers)

        if not isinstance(self.bounds, Mapping):
            raise UsageError(f"bounds must map optimizer names to LRBounds, got {type(self.bounds).__name__}")
        bounds = dict(self.bounds)
        for name in optimizers:
            if name not in bounds:
                raise UsageError(
                    f"no learning-rate bounds for optimizer {name!r}; every searched optimizer needs its own "
                    "range test"
                )
            if not isinstance(bounds[name], LRBounds):
                raise UsageError(f"bounds[{name!r}] must be an LRBounds, got {type(bounds[name]).__name__}")
        object.__setattr__(self, "bounds", bounds)

        if self.weight_decay is not None:
            object.__setattr__(self, "weight_decay", _range("weight_decay", self.weight_decay))
        if not isinstance(self.lr_dropout, bool):
            raise UsageError(f"lr_dropout must be true or false, got lr_dropout={self.lr_dropout!r}")
        fraction = self.warmup_max_fraction
        if (
            isinstance(fraction, bool)
            or not isinstance(fraction, (int, float))
            or not 0.0 <= fraction <= MAX_WARMUP_FRACTION
        ):
            raise UsageError(
                f"warmup_max_fraction must lie in [0, {MAX_WARMUP_FRACTION}], got warmup_max_fraction={fraction!r}"
            )
        object.__setattr__(self, "warmup_max_fraction", float(fraction))
        specs = specs_from_mapping(self.param_groups)
        object.__setattr__(self, "param_groups", tuple((spec.name, spec.pattern) for spec in specs))
        object.__setattr__(self, "group_factor_range", _range("group_factor_range", self.group_factor_range))

    @staticmethod
    def _names(what: str, names: object) -> tuple[str, ...]:
        if isinstance(names, str) or not isinstance(names, (list, tuple)):
            raise UsageError(f"{what} must be a list of names, got {what}={names!r}")
        if not names:
            raise UsageError(f"{what} must not be empty")
        if len(set(names)) != len(names):
            raise UsageError(f"{what} must not repeat a name, got {what}={names!r}")
        return tuple(names)

    @staticmethod
    def factor_param(group: str) -> str:
        """The Optuna parameter holding a named part's LR factor: ``lr_factor_<group>``."""
        return f"lr_factor_{group}"

    def base_lr_param(self, optimizer: str) -> str:
        """The Optuna parameter holding ``optimizer``'s base LR: ``base_lr``, or ``base_lr_<name>``."""
        return "base_lr" if len(self.optimizers) == 1 else f"base_lr_{optimizer}"


def _range(name: str, value: object) -> tuple[float, float]:
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) != 2:
        raise UsageError(f"{name} must be a range [low, high], got {name}={value!r}")
    low, high = value
    for number in (low, high):
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not math.isfinite(number):
            raise UsageError(f"{name} must be a range of two numbers, got {name}={value!r}")
    if not 0 < low <= high:
        raise UsageError(f"{name} must be a range with 0 < low <= high, got {name}={value!r}")
    return float(low), float(high)


# -------------------------------------------------------------------------------------------- plan
@dataclass(frozen=True)
class TrialPlan:
    """What one trial trains with.

    Args:
        schedule: a complete schedule spec (steps resolved) for :func:`lrtune.schedules.build`.
        optimizer: the optimizer and its torch keyword arguments.
        param_groups: the named parts with the factors drawn for them (empty: one global LR).
    """

    schedule: dict[str, Any]
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    param_groups: tuple[GroupSpec, ...] = ()

    @property
    def base_lr(self) -> float:
        """The schedule's peak learning rate."""
        return float(self.schedule["base_lr"])

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON: ``{"schedule": {...}, "optimizer": {"name": ..., ...}}``, plus ``param_groups``
        (``{NAME: {"pattern", "lr_factor"}}``) with named parts."""
        out: dict[str, Any] = {"schedule": dict(self.schedule), "optimizer": self.optimizer.to_dict()}
        if self.param_groups:
            out["param_groups"] = to_json(self.param_groups)
        return out


class _Draw:
    """Suggests one trial's parameters; every name and distribution is defined here, once."""

    def __init__(
        self, trial: optuna.trial.BaseTrial, space: SearchSpace, *, total_steps: int, steps_per_epoch: int
    ) -> None:
        self.trial = trial
        self.space = space
        self.total_steps = total_steps
        self.steps_per_epoch = steps_per_epoch

    def real(self, name: str, bounds: tuple[float, float], *, log: bool = False) -> float:
        return float(self.trial.suggest_float(name, bounds[0], bounds[1], log=log))

    def integer(self, name: str, bounds: tuple[int, int]) -> int:
        return int(self.trial.suggest_int(name, bounds[0], bounds[1]))

    def steps_of_budget(self, name: str, bounds: tuple[float, float], *, log: bool = False) -> int:
        """A fraction of ``total_steps`` as a number of steps (at least one)."""
        return max(1, round(self.real(name, bounds, log=log) * self.total_steps))

    def warmup_steps(self) -> int:
        if self.space.warmup_max_fraction == 0:
            return 0
        return round(self.real("warmup_frac", (0.0, self.space.warmup_max_fraction)) * self.total_steps)

    def min_lr(self, base_lr: float) -> float:
        return base_lr * self.real("min_lr_ratio", MIN_LR_RATIO, log=True)

    def decay_rate(self) -> float:
        return self.real("decay_rate", DECAY_RATE, log=True)

    def patience_range(self) -> tuple[int, int]:
        epochs = max(1, self.total_steps // self.steps_per_epoch)
        return 1, max(1, min(MAX_PATIENCE, epochs // 3))


def _with_warmup(
    own: Callable[[_Draw, float, int], dict[str, Any]],
) -> Callable[[_Draw, float], dict[str, Any]]:
    """Draw a warmup first; ``own`` gets the steps left after it (the schedule's horizon)."""

    def draw(d: _Draw, base_lr: float) -> dict[str, Any]:
        warmup = d.warmup_steps()
        return {**own(d, base_lr, d.total_steps - warmup), "warmup_steps": warmup}

    return draw


def _constant(d: _Draw, base_lr: float, horizon: int) -> dict[str, Any]:
    return {}


def _step(d: _Draw, base_lr: float, horizon: int) -> dict[str, Any]:
    interval = d.real("decay_interval_frac", DECAY_INTERVAL_FRAC)
    return {"decay_rate": d.decay_rate(), "decay_steps": max(1, round(interval * horizon))}


def _multistep(d: _Draw, base_lr: float, horizon: int) -> dict[str, Any]:
    first = d.real("milestones_first", MILESTONES_FIRST)
    count = d.integer("milestones_count", MILESTONES_COUNT)
    fractions = [first + i * (1.0 - first) / count for i in range(count)]
    steps = sorted({min(max(1, horizon - 1), max(1, round(f * horizon))) for f in fractions})
    return {"decay_rate": d.decay_rate(), "milestones": steps}


def _annealed(d: _Draw, base_lr: float, horizon: int) -> dict[str, Any]:
    return {"min_lr": d.min_lr(base_lr)}


def _polynomial(d: _Draw, base_lr: float, horizon: int) -> dict[str, Any]:
    return {"min_lr": d.min_lr(base_lr), "power": d.real("power", POWER, log=True)}


def _cosine_restarts(d: _Draw, base_lr: float, horizon: int) -> dict[str, Any]:
    min_lr = d.min_lr(base_lr)
    cycles = d.integer("n_cycles", N_CYCLES)
    mult = int(d.trial.suggest_categorical("cycle_mult", CYCLE_MULTS))
    # n cycles of lengths c, c·m, ..., c·m^(n-1) fill the horizon.
    first = horizon / cycles if mult == 1 else horizon * (mult - 1) / (mult**cycles - 1)
    return {"min_lr": min_lr, "cycle_steps": max(2, round(first)), "cycle_mult": mult}


def _cyclic(d: _Draw, base_lr: float) -> dict[str, Any]:
    min_lr = d.min_lr(base_lr)
    cycles = d.integer("n_cycles", N_CYCLES)
    mode = str(d.trial.suggest_categorical("cyclic_mode", CYCLIC_MODES))
    out: dict[str, Any] = {
        "min_lr": min_lr,
        "cycle_steps": max(2, round(d.total_steps / cycles)),
        "mode": mode,
    }
    if mode == "exp_range":
        final_scale = d.real("exp_range_final_scale", EXP_RANGE_FINAL_SCALE, log=True)
        out["gamma"] = final_scale ** (1.0 / d.total_steps)
    return out


def _one_cycle(d: _Draw, base_lr: float) -> dict[str, Any]:
    rise = d.steps_of_budget("rise_frac", RISE_FRAC)
    return {"min_lr": d.min_lr(base_lr), "warmup_steps": rise}


def _inverse_sqrt(d: _Draw, base_lr: float) -> dict[str, Any]:
    return {"warmup_steps": d.steps_of_budget("inverse_sqrt_warmup_frac", INVERSE_SQRT_WARMUP_FRAC, log=True)}


def _plateau(d: _Draw, base_lr: float, horizon: int) -> dict[str, Any]:
    return {"decay_rate": d.decay_rate(), "patience": d.integer("patience", d.patience_range())}


_BUILDERS: dict[str, Callable[[_Draw, float], dict[str, Any]]] = {
    "constant": _with_warmup(_constant),
    "step": _with_warmup(_step),
    "multistep": _with_warmup(_multistep),
    "exponential": _with_warmup(_annealed),
    "linear": _with_warmup(_annealed),
    "polynomial": _with_warmup(_polynomial),
    "cosine": _with_warmup(_annealed),
    "cosine_restarts": _with_warmup(_cosine_restarts),
    "cyclic": _cyclic,
    "one_cycle": _one_cycle,
    "inverse_sqrt": _inverse_sqrt,
    "plateau": _with_warmup(_plateau),
}

#: The schedule types a study can search, in catalogue order.
SEARCHABLE_TYPES: tuple[str, ...] = tuple(_BUILDERS)

#: The largest "warmup" each type can draw, as a fraction of the budget (None: warmup_max_fraction).
_LONGEST_WARMUP: dict[str, float | None] = {
    **dict.fromkeys(WARMUP_TYPES, None),
    "one_cycle": RISE_FRAC[1],
    "inverse_sqrt": INVERSE_SQRT_WARMUP_FRAC[1],
}


def _check_steps(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"{name} must be an integer >= {minimum}, got {name}={value!r}")
    return value


def sample(
    trial: optuna.trial.BaseTrial, space: SearchSpace, *, total_steps: int, steps_per_epoch: int
) -> TrialPlan:
    """Draw one trial's plan from ``space`` for a run of ``total_steps`` optimizer steps.

    Args:
        trial: the Optuna trial (a :class:`optuna.trial.FixedTrial` replays given params).
        space: what to search.
        total_steps: optimizer steps of the whole run (>= 2).
        steps_per_epoch: optimizer steps per epoch (sets the range of plateau's ``patience``).

    Returns:
        The schedule spec and optimizer of the trial; the spec is valid for ``total_steps``.
    """
    from lrtune.schedules import parse_spec

    total_steps = _check_steps("total_steps", total_steps, 2)
    steps_per_epoch = _check_steps("steps_per_epoch", steps_per_epoch, 1)
    d = _Draw(trial, space, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    schedule_type = str(trial.suggest_categorical("schedule", space.schedules))
    if len(space.optimizers) > 1:
        optimizer = str(trial.suggest_categorical("optimizer", space.optimizers))
    else:
        optimizer = space.optimizers[0]
    bounds = space.bounds[optimizer]
    base_lr = d.real(space.base_lr_param(optimizer), (bounds.lr_low, bounds.lr_high), log=True)

    kwargs: dict[str, Any] = {}
    if space.weight_decay is not None:
        kwargs["weight_decay"] = d.real("weight_decay", space.weight_decay, log=True)

    spec: dict[str, Any] = {"type": schedule_type, "base_lr": base_lr, **_BUILDERS[schedule_type](d, base_lr)}
    if space.lr_dropout:
        spec["lr_dropout"] = d.real("lr_dropout", LR_DROPOUT_KEEP)
    parse_spec(spec).check_budget(total_steps)
    groups = tuple(
        GroupSpec(name, pattern, d.real(space.factor_param(name), space.group_factor_range, log=True))
        for name, pattern in space.param_groups
    )
    return TrialPlan(schedule=spec, optimizer=OptimizerSpec(optimizer, kwargs), param_groups=groups)


def plan_from_params(
    params: Mapping[str, Any], space: SearchSpace, *, total_steps: int, steps_per_epoch: int
) -> TrialPlan:
    """Rebuild the plan of a finished trial from its params, by the same code path as :func:`sample`.

    Steps depend only on the params and ``total_steps``, so a value outside the space's current
    ranges (a space changed since) still gives the plan that was trained; Optuna warns about it.

    Raises:
        UsageError: a parameter the plan needs is missing, or a categorical value is not one of
            the space's choices.
    """
    import optuna

    trial = optuna.trial.FixedTrial(dict(params))
    try:
        return sample(trial, space, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    except UsageError:
        raise
    except ValueError as exc:
        raise UsageError(f"the trial's params do not fit this search space: {exc}") from None


def baseline_params(space: SearchSpace, *, optimizer: str | None = None) -> dict[str, Any]:
    """Params of the strong default every study starts from, to pass to ``study.enqueue_trial``.

    A cosine from the finder's ``suggested_lr`` down to 0.1 % of it (the floor of ``min_lr_ratio``,
    zero in all but name), no warmup: the plain schedule a user gets from one ``lrtune find``. When
    the space has no cosine, the first of :data:`BASELINE_TYPES` it searches, else its first type,
    with the type's other settings at :data:`BASELINE_VALUES`; weight decay at the geometric middle
    of its range; LR dropout off; every named part at factor 1 (one global LR). Every parameter
    the trial draws is set, so the trial is fully determined.

    Args:
        space: the search space.
        optimizer: the optimizer of the trial (default: the first of ``space.optimizers``).

    Example:
        >>> space = SearchSpace(bounds={"sgd": LRBounds(0.01, 1.0, 0.1)}, schedules=("step", "cosine"))
        >>> baseline_params(space)
        {'schedule': 'cosine', 'base_lr': 0.1, 'warmup_frac': 0.0, 'min_lr_ratio': 0.001}
    """
    import optuna

    optimizer = space.optimizers[0] if optimizer is None else optimizer
    if optimizer not in space.optimizers:
        raise UsageError(
            f"optimizer {optimizer!r} is not in the space; choose from: {', '.join(space.optimizers)}"
        )
    chosen: dict[str, Any] = {
        "schedule": next((t for t in BASELINE_TYPES if t in space.schedules), space.schedules[0]),
        "optimizer": optimizer,
        space.base_lr_param(optimizer): space.bounds[optimizer].suggested_lr,
    }
    if space.weight_decay is not None:
        chosen["weight_decay"] = math.sqrt(space.weight_decay[0] * space.weight_decay[1])
    for name, _ in space.param_groups:  # one global LR: every part at factor 1 (or the nearest allowed)
        chosen[space.factor_param(name)] = min(
            max(1.0, space.group_factor_range[0]), space.group_factor_range[1]
        )
    # Replay the space on a fixed trial: its params are exactly the names this baseline draws.
    trial = optuna.trial.FixedTrial({**BASELINE_VALUES, **chosen})
    sample(trial, space, total_steps=1000, steps_per_epoch=100)
    return dict(trial.params)


def longest_warmup_steps(space: SearchSpace, *, total_steps: int) -> int:
    """The most steps any trial of ``space`` can spend rising to its peak LR.

    Counts linear warmups, one_cycle's rise and inverse_sqrt's warmup (not cyclic's first
    half-cycle). A pruner should judge trials only after this many steps: pruning earlier
    punishes warmup and one-cycle schedules (short-horizon bias).
    """
    total_steps = _check_steps("total_steps", total_steps, 2)
    longest = 0
    for name in space.schedules:
        if name not in _LONGEST_WARMUP:
            continue
        fraction = _LONGEST_WARMUP[name]
        if fraction is None:
            longest = max(longest, round(space.warmup_max_fraction * total_steps))
        else:
            longest = max(longest, max(1, round(fraction * total_steps)))
    return longest
