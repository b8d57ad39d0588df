"""Settings of ``lrtune study``, from a YAML study file and/or command-line flags.

:class:`StudyConfig` holds every setting with its default, in one place, and validates it.
A study file is YAML whose keys are the field names (``-`` may stand for ``_``), plus an
optional ``finder:`` section for the range test run when ``bounds`` is ``auto``:

.. code-block:: yaml

    task: mnist
    n_trials: 40            # the study's total: re-running resumes and adds what is missing
    epochs: 5
    schedules: [cosine, one_cycle, step]
    optimizer: search       # search_optimizers enter the space
    search_optimizers: [sgd, adamw]
    weight_decay: [1.0e-5, 1.0e-2]
    finder:
      num_iter: 200
      repeats: 3

Flags override the file (:func:`build_config`). Relative paths (``bounds``, ``data_dir``) are
relative to the current folder.

Example:
    >>> config = build_config({"task": "digits", "epochs": 3}, {"epochs": 5, "schedules": "cosine,step"})
    >>> config.epochs, config.schedules, config.study_name, config.experiment
    (5, ('cosine', 'step'), 'lrtune-digits', 'lrtune-digits')
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError
from lrtune.optimizers import OPTIMIZER_NAMES
from lrtune.space import SEARCHABLE_TYPES, LRBounds, SearchSpace
from lrtune.study.confirm import ConfirmSettings
from lrtune.tracking import mask_secrets

if TYPE_CHECKING:
    import optuna


# ------------------------------------------------------------------------------------ registries
def _tpe(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    with warnings.catch_warnings():  # ``group`` is marked experimental
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        # Multivariate TPE split into groups of parameters that occur together: the
        # schedule-specific parameters are conditional on the schedule type.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True)


def _random(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


def _gp(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    return optuna.samplers.GPSampler(seed=seed, warn_independent_sampling=False)


def _cmaes(seed: int | None) -> optuna.samplers.BaseSampler:
    import optuna

    _require_cmaes()
    # CMA-ES handles the continuous parameters; the categorical and conditional ones go to TPE.
    return optuna.samplers.CmaEsSampler(
        seed=seed,
        independent_sampler=optuna.samplers.TPESampler(seed=seed),
        warn_independent_sampling=False,
    )


def _require_cmaes() -> None:
    import importlib.util

    if importlib.util.find_spec("cmaes") is None:
        raise UsageError(
            "the cmaes sampler needs the 'cmaes' package: pip install cmaes (or use --sampler tpe)"
        )


#: Sampler name → factory ``(seed) -> optuna sampler``. Give each worker of a distributed
#: study its own seed (or None): samplers with equal seeds propose equal trials.
SAMPLERS: dict[str, Callable[[int | None], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
    "gp": _gp,
    "cmaes": _cmaes,
}


def _hyperband(*, min_resource: int, max_resource: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.HyperbandPruner(
        min_resource=min_resource, max_resource=max_resource, reduction_factor=3
    )


def _median(*, min_resource: int, max_resource: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=min_resource)


def _no_pruner(*, min_resource: int, max_resource: int) -> optuna.pruners.BasePruner:
    import optuna

    return optuna.pruners.NopPruner()


def _racing(*, min_resource: int, max_resource: int) -> optuna.pruners.BasePruner:
    from lrtune.study.racing import racing_pruner

    return racing_pruner()  # its resource is seeds, not epochs: every run reaches the budget's end


#: Pruner name → factory ``(*, min_resource, max_resource) -> optuna pruner``. Resources are
#: the ``step`` values a trial reports (epochs; seeds for ``racing``); no trial is pruned
#: before it reports ``min_resource``.
PRUNERS: dict[str, Callable[..., optuna.pruners.BasePruner]] = {
    "hyperband": _hyperband,
    "median": _median,
    "none": _no_pruner,
    "racing": _racing,
}


def make_sampler(name: str, *, seed: int | None) -> optuna.samplers.BaseSampler:
    """The sampler registered as ``name``, seeded with ``seed``."""
    return SAMPLERS[_choice("sampler", name, SAMPLERS)](seed)


def make_pruner(name: str, *, min_resource: int, max_resource: int) -> optuna.pruners.BasePruner:
    """The pruner registered as ``name``; it prunes no trial before step ``min_resource``."""
    if not 1 <= min_resource <= max_resource:
        raise UsageError(
            f"pruning needs 1 <= min_resource <= max_resource, got {min_resource=}, {max_resource=}"
        )
    return PRUNERS[_choice("pruner", name, PRUNERS)](min_resource=min_resource, max_resource=max_resource)


#: ``--optimizer`` choices: a fixed optimizer, or ``search`` for ``search_optimizers``.
OPTIMIZER_CHOICES: tuple[str, ...] = (*OPTIMIZER_NAMES, "search")

#: The schedule types a study searches unless told otherwise: every searchable type.
DEFAULT_SCHEDULES: tuple[str, ...] = SEARCHABLE_TYPES


# ---------------------------------------------------------------------------------- value checks
def _choice(name: str, value: object, choices: Mapping[str, Any] | tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise UsageError(f"unknown {name} {value!r}; choose one of: {', '.join(choices)}")
    return value


def _integer(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(f"{name} must be an integer, got {name}={value!r}")
    if value < minimum:
        raise UsageError(f"{name} must be at least {minimum}, got {name}={value!r}")
    return value


def _number(name: str, value: object) -> float:
    # YAML 1.1 reads ``1e-5`` (no dot) as a string, so numeric strings are accepted.
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number, got {name}={value!r}")
    return float(value)


def _text(name: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise UsageError(f"{name} must be a non-empty string, got {name}={value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise UsageError(f"{name} must be true or false, got {name}={value!r}")
    return value


def _names(name: str, value: object, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    """A list of names, or one comma-separated string; duplicates dropped, order kept."""
    items: object = (
        [part.strip() for part in value.split(",") if part.strip()] if isinstance(value, str) else value
    )
    if not isinstance(items, (list, tuple)) or not all(isinstance(item, str) for item in items):
        raise UsageError(f"{name} must be a list of names or 'a,b,c', got {name}={value!r}")
    if not items:
        raise UsageError(f"{name} must name at least one {what}; choose from: {', '.join(known)}")
    unknown = [item for item in items if item not in known]
    if unknown:
        raise UsageError(
            f"unknown {what} {', '.join(repr(item) for item in unknown)} in {name}; choose from: {', '.join(known)}"
        )
    return tuple(dict.fromkeys(items))


def _weight_decay(value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    parts: object = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != 2:
        raise UsageError(f"weight_decay must be a range [low, high] to search, got weight_decay={value!r}")
    low, high = (_number("weight_decay", part) for part in parts)
    if not 0 < low <= high:
        raise UsageError(f"weight_decay must be a range with 0 < low <= high, got weight_decay={value!r}")
    return low, high


def _param_groups(name: str, value: object) -> tuple[tuple[str, str], ...]:
    """``{NAME: REGEX}`` (study file) or ``["NAME=REGEX", ...]`` (flags) → ``(NAME, REGEX)`` pairs, in order."""
    from lrtune.parts import GroupSpec, check_specs

    if isinstance(value, Mapping):
        specs = check_specs(GroupSpec(str(key), pattern) for key, pattern in value.items())
    elif isinstance(value, (list, tuple)):
        specs = check_specs(
            GroupSpec(*item)
            if isinstance(item, (list, tuple)) and len(item) == 2
            else GroupSpec.parse(item, allow_factor=False)
            for item in value
        )
    else:
        raise UsageError(f"{name} must map group names to regular expressions, got {name}={value!r}")
    return tuple((spec.name, spec.pattern) for spec in specs)


def _factor_range(name: str, value: object) -> tuple[float, float]:
    parts: object = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) != 2:
        raise UsageError(f"{name} must be a range [low, high], got {name}={value!r}")
    low, high = (_number(name, part) for part in parts)
    if not 0 < low <= high:
        raise UsageError(f"{name} must be a range with 0 < low <= high, got {name}={value!r}")
    return low, high


def _bounds(value: object) -> str:
    if isinstance(value, Path):
        value = str(value)
    text = _text("bounds", value)
    if text != "auto" and not Path(text).exists():
        raise UsageError(
            f"bounds file {text!r} not found; pass the finder.json written by `lrtune find --out DIR`, or 'auto'"
        )
    return text


def _optional(check: Callable[[str, object], Any]) -> Callable[[str, object], Any]:
    def optional(name: str, value: object) -> Any:
        return None if value is None else check(name, value)

    return optional


def _device(name: str, value: object) -> str:
    from lrtune.data import check_device_name

    return check_device_name(_text(name, value))


def _positive(name: str, value: object) -> float:
    number = _number(name, value)
    if number <= 0:
        raise UsageError(f"{name} must be > 0, got {name}={value!r}")
    return number


def _warmup_fraction(name: str, value: object) -> float:
    number = _number(name, value)
    if not 0.0 <= number <= 0.5:
        raise UsageError(f"{name} must lie in [0, 0.5] (a fraction of the budget), got {name}={value!r}")
    return number


def _path(name: str, value: object) -> Path:
    if isinstance(value, Path):
        return value
    return Path(_text(name, value))


#: Field name → check that returns the normalised value or raises UsageError.
_CHECKS: dict[str, Callable[[str, object], Any]] = {
    "task": _text,
    "n_trials": lambda n, v: _integer(n, v, minimum=1),
    "timeout": _optional(_positive),
    "epochs": lambda n, v: _integer(n, v, minimum=1),
    "batch_size": _optional(lambda n, v: _integer(n, v, minimum=1)),
    "storage": _text,
    "study_name": _optional(_text),
    "sampler": lambda n, v: _choice(n, v, SAMPLERS),
    "pruner": lambda n, v: _choice(n, v, PRUNERS),
    "schedules": lambda n, v: _names(n, v, SEARCHABLE_TYPES, "schedule type"),
    "bounds": lambda n, v: _bounds(v),
    "optimizer": lambda n, v: _choice(n, v, OPTIMIZER_CHOICES),
    "search_optimizers": lambda n, v: _names(n, v, OPTIMIZER_NAMES, "optimizer"),
    "weight_decay": lambda n, v: _weight_decay(v),
    "lr_dropout": _flag,
    "warmup_max_fraction": _warmup_fraction,
    "finder_num_iter": lambda n, v: _integer(n, v, minimum=10),
    "finder_repeats": lambda n, v: _integer(n, v, minimum=1),
    "data_dir": _path,
    "tracking_uri": _text,
    "experiment": _optional(_text),
    "seed": lambda n, v: _integer(n, v, minimum=0),
    "device": _device,
    "amp": _flag,
    "confirm": lambda n, v: _integer(n, v, minimum=0),
    "confirm_seeds": lambda n, v: _integer(n, v, minimum=0),
    "param_groups": _param_groups,
    "group_factor_range": _factor_range,
    "heartbeat_interval": lambda n, v: _integer(n, v, minimum=1),
    "grace_period": lambda n, v: _integer(n, v, minimum=2),
}


def default_study_name(task: str) -> str:
    """``lrtune-<task>``, with characters other than letters, digits, ``.``, ``_``, ``-`` as ``-``.

    Example:
        >>> default_study_name("mypkg.tasks:make_task")
        'lrtune-mypkg.tasks-make_task'
    """
    return "lrtune-" + re.sub(r"[^A-Za-z0-9._-]+", "-", task).strip("-")


# ------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class StudyConfig:
    """Every setting of ``lrtune study``, with its default.

    Args:
        task: built-in task name, ``imagefolder:PATH`` or ``module:function``.
        n_trials: the study's total number of trials (re-running adds only the missing ones).
        timeout: stop starting trials after this many seconds (None: no limit).
        epochs: epochs per trial.
        batch_size: batch size (None: the task's).
        storage: Optuna storage URL.
        study_name: None derives ``lrtune-<task>``.
        sampler: one of :data:`SAMPLERS`.
        pruner: one of :data:`PRUNERS`.
        schedules: schedule types to search (default :data:`DEFAULT_SCHEDULES`, every searchable
            type); a comma string ``"a,b"`` is accepted.
        bounds: ``auto`` (run a range test first) or the path of a ``finder.json``.
        optimizer: a fixed optimizer, or ``search`` to search ``search_optimizers``.
        search_optimizers: the optimizers searched when ``optimizer`` is ``search``.
        weight_decay: ``(low, high)`` to search weight decay log-uniformly (None: not searched).
        lr_dropout: also search the Learning Rate Dropout keep probability.
        warmup_max_fraction: longest warmup, as a fraction of the budget (0..0.5).
        finder_num_iter: steps per sweep of the range test (``bounds: auto``).
        finder_repeats: reseeded sweeps of the range test.
        data_dir: where datasets are stored.
        tracking_uri: MLflow tracking URI.
        experiment: MLflow experiment (None: the study's name).
        seed: base seed of the sampler and the trials.
        device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
        amp: mixed precision on CUDA.
        confirm: after the search, retrain this many best trials and the baseline on fresh seeds
            and name the winner by its mean (0: off; see :mod:`lrtune.study.confirm`).
        confirm_seeds: the fresh seeds of each confirmed candidate (0: off).
        param_groups: named parts of the model, ``{NAME: REGEX}`` or ``NAME=REGEX`` strings (first
            match wins; the rest is the group ``default`` at factor 1); each part's LR factor is searched.
        group_factor_range: ``(low, high)`` of the log-uniform search of the parts' factors.
        heartbeat_interval: seconds between two heartbeats of a running trial.
        grace_period: seconds without a heartbeat after which a running trial counts as crashed:
            it becomes FAIL and is run again. Must exceed ``heartbeat_interval``.

    ``study_name`` and ``experiment`` are resolved on construction, so they are never None.
    """

    task: str = "digits"
    n_trials: int = 20
    timeout: float | None = None
    epochs: int = 10
    batch_size: int | None = None
    storage: str = "sqlite:///lrtune.db"
    study_name: str | None = None
    sampler: str = "tpe"
    pruner: str = "hyperband"
    schedules: tuple[str, ...] = DEFAULT_SCHEDULES
    bounds: str = "auto"
    optimizer: str = "sgd"
    search_optimizers: tuple[str, ...] = ("sgd", "adam", "adamw")
    weight_decay: tuple[float, float] | None = None
    lr_dropout: bool = False
    warmup_max_fraction: float = 0.2
    finder_num_iter: int = 200
    finder_repeats: int = 3
    data_dir: Path = Path("data")
    tracking_uri: str = "sqlite:///mlflow.db"
    experiment: str | None = None
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    confirm: int = 3
    confirm_seeds: int = 3
    param_groups: tuple[tuple[str, str], ...] = ()
    group_factor_range: tuple[float, float] = (0.01, 1.0)
    heartbeat_interval: int = 60
    grace_period: int = 180

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, _CHECKS[f.name](f.name, getattr(self, f.name)))
        if self.grace_period <= self.heartbeat_interval:
            raise UsageError(
                "grace_period must exceed heartbeat_interval (a live trial would count as crashed), "
                f"got grace_period={self.grace_period}, heartbeat_interval={self.heartbeat_interval}"
            )
        if self.sampler == "cmaes":
            _require_cmaes()
        if self.study_name is None:
            object.__setattr__(self, "study_name", default_study_name(self.task))
        if self.experiment is None:
            object.__setattr__(self, "experiment", self.study_name)

    @property
    def confirmation(self) -> ConfirmSettings:
        """How the winner is confirmed."""
        return ConfirmSettings(top=self.confirm, seeds=self.confirm_seeds)

    @property
    def optimizers(self) -> tuple[str, ...]:
        """The optimizers of the space: the fixed one, or ``search_optimizers``."""
        return self.search_optimizers if self.optimizer == "search" else (self.optimizer,)

    def search_space(self, bounds: Mapping[str, LRBounds]) -> SearchSpace:
        """The study's search space, given the LR bounds of each of :attr:`optimizers`."""
        return SearchSpace(
            bounds=bounds,
            schedules=self.schedules,
            optimizers=self.optimizers,
            weight_decay=self.weight_decay,
            lr_dropout=self.lr_dropout,
            warmup_max_fraction=self.warmup_max_fraction,
            param_groups=self.param_groups,
            group_factor_range=self.group_factor_range,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values for logging (lists, strings); passwords in URLs masked."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Path):
                value = str(value)
            elif isinstance(value, str):
                value = mask_secrets(value)
            out[f.name] = value
        return out


#: Every key a study file (or :func:`build_config`) accepts.
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(StudyConfig))

#: Keys of the ``finder:`` section of a study file → fields.
_FINDER_SECTION: dict[str, str] = {"num_iter": "finder_num_iter", "repeats": "finder_repeats"}


# ---------------------------------------------------------------------------------- study files
def load_study_file(path: str | Path) -> dict[str, Any]:
    """Read and check a YAML study file; return its settings keyed by field name.

    Raises:
        UsageError: the file is missing or unreadable, is not valid YAML, is not a mapping, has
            unknown keys, or a value of the wrong type.
    """
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"study file {str(path)!r} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read study file {str(path)!r}: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise UsageError(f"study file {str(path)!r} is not valid YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UsageError(
            f"study file {str(path)!r} must be a mapping of settings (key: value), got {type(data).__name__}"
        )
    try:
        values = _flatten(data)
        return {key: _CHECKS[key](key, value) for key, value in values.items()}
    except UsageError as exc:
        raise UsageError(f"study file {str(path)!r}: {exc}") from None


def _key(key: object) -> str:
    return key.replace("-", "_") if isinstance(key, str) else repr(key)


def _flatten(data: Mapping[Any, Any]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    unknown: list[str] = []
    for raw_key, value in data.items():
        key = _key(raw_key)
        if key == "finder":
            if not isinstance(value, dict):
                raise UsageError(
                    f"the finder section must be a mapping like {{num_iter: 200, repeats: 3}}, got {value!r}"
                )
            for raw_inner, inner_value in value.items():
                inner = _key(raw_inner)
                if inner not in _FINDER_SECTION:
                    raise UsageError(
                        f"unknown key {raw_inner!r} in the finder section; valid keys: {', '.join(_FINDER_SECTION)}"
                    )
                _put(values, _FINDER_SECTION[inner], inner_value)
        elif key in FIELD_NAMES:
            _put(values, key, value)
        else:
            unknown.append(repr(raw_key))
    if unknown:
        raise UsageError(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"valid keys: {', '.join((*FIELD_NAMES, 'finder'))}"
        )
    return values


def _put(values: dict[str, Any], key: str, value: Any) -> None:
    if key in values:
        raise UsageError(f"{key} is given twice")
    values[key] = value


def build_config(file_values: Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> StudyConfig:
    """Merge a study file's values with command-line flags; flags win, ``None`` means "not given".

    Args:
        file_values: from :func:`load_study_file`, or None without a study file.
        overrides: field name → flag value (``schedules`` may be ``"a,b,c"``).

    Example:
        >>> build_config(None, {"n_trials": 5, "timeout": None}).n_trials
        5
    """
    unknown = [key for key in overrides if key not in FIELD_NAMES]
    if unknown:
        raise UsageError(
            f"unknown setting {', '.join(map(repr, unknown))}; valid settings: {', '.join(FIELD_NAMES)}"
        )
    merged = dict(file_values or {})
    merged.update({key: value for key, value in overrides.items() if value is not None})
    return StudyConfig(**merged)
