"""The best schedule of a study, as the file ``lrtune best`` writes and ``lrtune.load_schedule`` reads.

The file (a **contract**)::

    {"schedule": {"type": "cosine", "base_lr": 0.12, "min_lr": 0.0012, "warmup_steps": 0},
     "optimizer": {"name": "sgd", "momentum": 0.9},
     "epochs": 10, "batch_size": 64, "metric": "val_accuracy", "value": 0.975, "study": "lrtune-digits"}

plus, for a study over named parts, ``"param_groups": {"body": {"pattern": "^body\\.", "lr_factor": 0.1}}``
(read back by :func:`lrtune.param_groups`).

The spec comes from the winning trial's stored ``plan``; for a trial without one it is rebuilt
from the trial's params with :func:`lrtune.space.plan_from_params`. A confirmed study (see
:mod:`lrtune.study.confirm`) adds, for its winner, ``"seeds"`` (the fresh seeds), ``"mean"`` and
``"std"`` over them (``"value"`` is the mean), ``"baseline": {"schedule", "optimizer", "seeds", "mean",
"std"}`` for the strong default on the same seeds, and ``"gain"`` (winner mean − baseline mean,
positive = better in the objective's direction); ``"trial"`` names the winning trial and
``"confirmed"`` says whether the winner was confirmed.

Example:
    >>> best = load_best("sqlite:///lrtune.db", "lrtune-digits")            # doctest: +SKIP
    >>> write_json_atomic("best.json", best)                                  # doctest: +SKIP
    >>> lrtune.load_schedule("best.json")["type"]                             # doctest: +SKIP
    'cosine'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.atomic import write_json_atomically
from lrtune.errors import UsageError
from lrtune.study.record import PLAN_ATTR, StudyRecord, read_record
from lrtune.study.storage import find_study_id, open_existing_storage, study_names

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial


def best_trial(study: optuna.Study) -> FrozenTrial:
    """The study's best complete trial, ties broken by validation loss; UsageError when none completed."""
    from lrtune.study.confirm import direction_of
    from lrtune.study.selection import ranked

    ordered = ranked(study.get_trials(deepcopy=False), direction_of(study))
    if not ordered:
        counts = _state_counts(study)
        raise UsageError(
            f"study {study.study_name!r} has no complete trial yet ({counts}); run more trials first"
        )
    return ordered[0]


def best_file(study: optuna.Study, *, record: StudyRecord | None = None) -> dict[str, Any]:
    """The best file of ``study`` (see the module docstring) as plain JSON.

    With a complete confirmation the winner is the confirmed one and the file adds ``seeds``,
    ``mean``, ``std``, ``baseline`` and ``gain`` (``value`` is then the mean over the seeds);
    otherwise it is the best search trial (:func:`best_trial`) with ``"confirmed": false``.

    Raises:
        UsageError: the study was not created by lrtune, or has no complete trial.
    """
    from lrtune.study.confirm import confirmed_result

    record = record or _record_of(study)
    winner = confirmed_result(study)
    if winner is None:
        trial = best_trial(study)
        return {**_entry(study, trial, record, value=trial.value), "confirmed": False}
    trials = study.get_trials(deepcopy=False)
    best = _entry(study, trials[winner.best.trial_number], record, value=winner.best.mean)
    baseline = _plan_of(trials[winner.baseline.trial_number], record)
    return {
        **best,
        "trial": winner.best.trial_number,
        "confirmed": True,
        **winner.best.summary(),
        "baseline": {**baseline, "trial": winner.baseline.trial_number, **winner.baseline.summary()},
        "gain": winner.gain,
    }


def _entry(
    study: optuna.Study, trial: FrozenTrial, record: StudyRecord, *, value: float | None
) -> dict[str, Any]:
    plan = _plan_of(trial, record)
    out: dict[str, Any] = {
        "schedule": plan["schedule"],
        "optimizer": plan["optimizer"],
        "epochs": record.epochs,
        "batch_size": record.batch_size,
        "metric": record.metric,
        "value": value,
        "study": study.study_name,
        "trial": trial.number,
    }
    if plan.get("param_groups"):  # named parts: {NAME: {"pattern", "lr_factor"}}
        out["param_groups"] = plan["param_groups"]
    return out


def load_best(storage: str, study_name: str | None) -> dict[str, Any]:
    """The best file of the study ``study_name`` in ``storage`` (nothing is created or written).

    ``study_name`` may be None when the storage holds exactly one study.
    """
    import optuna

    from lrtune.study.confirm import CONFIRM_SUFFIX

    opened = open_existing_storage(storage)
    names = [name for name in study_names(opened) if not name.endswith(CONFIRM_SUFFIX)]
    if study_name is None:
        if len(names) != 1:
            listed = ", ".join(repr(n) for n in names) or "none"
            raise UsageError(f"pass --study-name; the storage holds these studies: {listed}")
        study_name = names[0]
    if find_study_id(opened, study_name) is None:
        listed = ", ".join(repr(n) for n in names) or "none"
        raise UsageError(f"no study named {study_name!r} in this storage; its studies: {listed}")
    study = optuna.load_study(study_name=study_name, storage=opened)
    return best_file(study)


def write_json_atomic(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    check_output_file(target)
    write_json_atomically(target, data)


def check_output_file(path: Path) -> None:
    """UsageError unless ``path`` can be written as a file (its folder exists, it is no folder)."""
    if path.is_dir():
        raise UsageError(f"--out {str(path)!r} is a folder; give a file name like best.json")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"the folder of --out {str(path)!r} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"--out {str(path)!r} is not writable")


def _record_of(study: optuna.Study) -> StudyRecord:
    record = read_record(study.user_attrs)
    if record is None:
        raise UsageError(
            f"study {study.study_name!r} was not created by lrtune study (it has no 'lrtune' attribute)"
        )
    return record


def _plan_of(trial: FrozenTrial, record: StudyRecord) -> dict[str, Any]:
    plan = trial.user_attrs.get(PLAN_ATTR)
    if isinstance(plan, Mapping) and isinstance(plan.get("schedule"), Mapping) and "optimizer" in plan:
        out: dict[str, Any] = {"schedule": dict(plan["schedule"]), "optimizer": dict(plan["optimizer"])}
        if isinstance(plan.get("param_groups"), Mapping):
            out["param_groups"] = {name: dict(entry) for name, entry in plan["param_groups"].items()}
        return out
    from lrtune.space import plan_from_params

    rebuilt = plan_from_params(
        trial.params, record.space, total_steps=record.total_steps, steps_per_epoch=record.steps_per_epoch
    )
    return rebuilt.to_dict()


def _state_counts(study: optuna.Study) -> str:
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] = counts.get(trial.state.name, 0) + 1
    return ", ".join(f"{n} {state.lower()}" for state, n in sorted(counts.items())) or "no trials"


__all__ = ["best_file", "best_trial", "check_output_file", "load_best", "write_json_atomic"]
