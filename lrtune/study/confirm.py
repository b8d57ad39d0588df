"""Confirmation: the study's top trials and its baseline, retrained on the same fresh seeds.

Once the search holds its ``n_trials``, the ``top`` best complete trials (ranked by
:func:`lrtune.study.selection.ranked`) and the baseline (trial 0, the strong default) are each
retrained on ``seeds`` seeds that no search trial trained with. The winner is the candidate with
the best mean over those seeds (:func:`lrtune.study.selection.confirmed_winner`).

The runs are trials of a companion Optuna study, ``<study>:confirm``, in the same storage:

* each run is queued as a WAITING trial with user attributes ``confirms`` (the study trial it
  retrains) and ``seed``; any worker pops it (atomically on PostgreSQL), so confirmation spreads
  over workers like the search;
* it resumes: a finished run is never repeated, a failed or interrupted one is queued again by
  the next invocation;
* the candidates and seeds are stored on the companion study (attribute ``candidates``), so
  ``lrtune best`` names the same winner without any settings, and a study resumed with a larger
  ``n_trials`` picks new candidates once its search is complete again.

Example:
    >>> fresh_seeds(0, 3)
    (1000003, 1000004, 1000005)
    >>> ConfirmSettings(top=3, seeds=3).runs
    12
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError
from lrtune.study.selection import Confirmed, Winner, baseline_number, confirmed_winner, ranked

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

logger = logging.getLogger(__name__)

CONFIRM_SUFFIX = ":confirm"
CONFIRMS_ATTR = "confirms"
SEED_ATTR = "seed"
CANDIDATES_ATTR = "candidates"
#: Fresh seeds start here above the study's seed: search trial n trains with ``seed + n``.
SEED_OFFSET = 1_000_003
#: Rounds of re-queueing failed runs within one invocation before giving up until the next.
MAX_ROUNDS = 3

TrialCallback = Callable[["optuna.Study", "FrozenTrial"], None]


@dataclass(frozen=True)
class ConfirmSettings:
    """How many trials to confirm, on how many fresh seeds; either 0 turns confirmation off.

    Args:
        top: the best complete trials retrained (the baseline comes on top of them).
        seeds: fresh seeds each candidate is retrained on.
    """

    top: int = 3
    seeds: int = 3

    def __post_init__(self) -> None:
        for name in ("top", "seeds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise UsageError(f"confirmation: {name} must be an integer >= 0, got {name}={value!r}")

    @property
    def enabled(self) -> bool:
        """Whether any run is made."""
        return self.top > 0 and self.seeds > 0

    @property
    def runs(self) -> int:
        """Runs at most: ``(top + 1) × seeds`` (fewer when the study has fewer complete trials)."""
        return (self.top + 1) * self.seeds if self.enabled else 0


def fresh_seeds(seed: int, count: int) -> tuple[int, ...]:
    """The confirmation seeds of a study with base seed ``seed`` (search trial n uses ``seed + n``)."""
    return tuple((seed + SEED_OFFSET + j) % 2**32 for j in range(count))


def companion_name(study_name: str) -> str:
    """The name of the study holding ``study_name``'s confirmation runs."""
    return study_name + CONFIRM_SUFFIX


def open_confirm_study(study: optuna.Study) -> optuna.Study:
    """Create or load the companion study of ``study`` (same storage, same direction)."""
    import optuna

    return optuna.create_study(
        storage=study._storage,
        study_name=companion_name(study.study_name),
        direction=study.direction,
        sampler=optuna.samplers.RandomSampler(seed=0),  # its trials draw no params
        load_if_exists=True,
    )


def load_confirm_study(study: optuna.Study) -> optuna.Study | None:
    """The companion study of ``study``, or None when confirmation never started."""
    import optuna

    from lrtune.study.storage import find_study_id

    storage = study._storage
    if find_study_id(storage, companion_name(study.study_name)) is None:
        return None
    return optuna.load_study(study_name=companion_name(study.study_name), storage=storage)


def direction_of(study: optuna.Study) -> str:
    """``"maximize"`` or ``"minimize"``."""
    import optuna

    return "maximize" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "minimize"


def choose_candidates(study: optuna.Study, settings: ConfirmSettings, *, seed: int) -> dict[str, Any] | None:
    """The trials to confirm (baseline first) and the seeds: ``{"after", "trials", "seeds"}``.

    ``after`` is how many search trials were finished when they were chosen. None when no
    trial completed, or the study has no baseline trial that started (made by an older lrtune).
    """
    from lrtune.study.engine import count_done
    from lrtune.study.record import PLAN_ATTR

    trials = study.get_trials(deepcopy=False)
    base = baseline_number(trials)
    order = ranked(trials, direction_of(study))
    if base is None or PLAN_ATTR not in trials[base].user_attrs or not order:
        return None
    top = [t.number for t in order if t.number != base][: settings.top]
    return {
        "after": count_done(trials),
        "trials": [base, *top],
        "seeds": list(fresh_seeds(seed, settings.seeds)),
    }


def stored_candidates(confirm_study: optuna.Study) -> dict[str, Any] | None:
    """The candidates stored on the companion study, or None."""
    stored = confirm_study.user_attrs.get(CANDIDATES_ATTR)
    return dict(stored) if isinstance(stored, Mapping) else None


def fix_candidates(confirm_study: optuna.Study, chosen: Mapping[str, Any]) -> dict[str, Any]:
    """Store ``chosen`` (from :func:`choose_candidates`) unless the stored candidates are the same; return them.

    Workers reaching this at the same moment choose from the same finished trials; the last
    write wins and every worker re-reads it.
    """
    if stored_candidates(confirm_study) != chosen:
        confirm_study.set_user_attr(CANDIDATES_ATTR, dict(chosen))
    return stored_candidates(confirm_study) or dict(chosen)


def queue_missing(confirm_study: optuna.Study, candidates: Mapping[str, Any]) -> int:
    """Queue a WAITING run for each (trial, seed) with no complete, waiting or running run; returns how many."""
    import optuna

    states = optuna.trial.TrialState
    covered = {
        (t.user_attrs.get(CONFIRMS_ATTR), t.user_attrs.get(SEED_ATTR))
        for t in confirm_study.get_trials(
            deepcopy=False, states=(states.COMPLETE, states.WAITING, states.RUNNING)
        )
    }
    queued = 0
    for number in candidates["trials"]:
        for seed in candidates["seeds"]:
            if (number, seed) not in covered:
                confirm_study.enqueue_trial({}, user_attrs={CONFIRMS_ATTR: number, SEED_ATTR: seed})
                queued += 1
    return queued


def run_confirmation(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    settings: ConfirmSettings,
    *,
    seed: int,
    callbacks: Sequence[TrialCallback] = (),
) -> int:
    """Make every missing confirmation run of ``study``; returns how many this call finished.

    ``objective`` trains the plan of study trial ``trial.user_attrs["confirms"]`` with seed
    ``trial.user_attrs["seed"]`` and returns the objective value. Failed runs are queued again
    (a few rounds here, then by the next invocation).
    """
    import optuna

    if not settings.enabled:
        return 0
    chosen = choose_candidates(study, settings, seed=seed)
    if chosen is None:
        logger.warning(
            "study %r: nothing to confirm (no complete trial, or no baseline trial in a study made "
            "by an older lrtune)",
            study.study_name,
        )
        return 0
    confirm_study = open_confirm_study(study)
    candidates = fix_candidates(confirm_study, chosen)
    finished = 0

    def after_each(confirm: optuna.Study, trial: FrozenTrial) -> None:
        nonlocal finished
        finished += 1
        if not confirm.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,)):
            confirm.stop()

    for _ in range(MAX_ROUNDS):
        queue_missing(confirm_study, candidates)
        waiting = confirm_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if not waiting:
            break
        confirm_study.optimize(objective, n_trials=len(waiting), callbacks=[after_each, *callbacks])
    return finished


def read_confirmed(confirm_study: optuna.Study) -> tuple[list[Confirmed], dict[str, Any]] | None:
    """Every candidate with all its seeds' results, and the stored candidates; None if any run is missing."""
    import optuna

    candidates = stored_candidates(confirm_study)
    if candidates is None:
        return None
    results: dict[tuple[Any, Any], tuple[float, float]] = {}
    for trial in confirm_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        key = (trial.user_attrs.get(CONFIRMS_ATTR), trial.user_attrs.get(SEED_ATTR))
        if key not in results and trial.value is not None:
            loss = trial.user_attrs.get("val_loss")
            results[key] = (float(trial.value), float(loss) if isinstance(loss, (int, float)) else math.nan)
    seeds = tuple(int(s) for s in candidates["seeds"])
    confirmed: list[Confirmed] = []
    for number in candidates["trials"]:
        pairs = [results.get((number, s)) for s in seeds]
        if any(p is None for p in pairs):
            return None
        confirmed.append(
            Confirmed(
                trial_number=int(number),
                seeds=seeds,
                values=tuple(p[0] for p in pairs if p is not None),
                val_losses=tuple(p[1] for p in pairs if p is not None),
            )
        )
    return confirmed, candidates


def confirmed_result(study: optuna.Study) -> Winner | None:
    """The confirmed winner of ``study``, or None when its confirmation is missing or incomplete."""
    confirm_study = load_confirm_study(study)
    if confirm_study is None:
        return None
    read = read_confirmed(confirm_study)
    if read is None:
        return None
    confirmed, candidates = read
    return confirmed_winner(
        confirmed, baseline_number=int(candidates["trials"][0]), direction=direction_of(study)
    )


def confirm_counts(study: optuna.Study) -> tuple[int, int]:
    """``(finished, planned)`` confirmation runs of ``study`` (``(0, 0)`` before confirmation)."""
    confirm_study = load_confirm_study(study)
    return (0, 0) if confirm_study is None else confirm_progress(confirm_study)


def confirm_progress(confirm_study: optuna.Study) -> tuple[int, int]:
    """``(finished, planned)`` runs of a confirmation study, for its stored candidates."""
    import optuna

    candidates = stored_candidates(confirm_study) or {"trials": [], "seeds": []}
    wanted = {(n, s) for n in candidates["trials"] for s in candidates["seeds"]}
    done = {
        (t.user_attrs.get(CONFIRMS_ATTR), t.user_attrs.get(SEED_ATTR))
        for t in confirm_study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    }
    return len(wanted & done), len(wanted)


__all__ = [
    "CONFIRMS_ATTR",
    "CONFIRM_SUFFIX",
    "SEED_ATTR",
    "ConfirmSettings",
    "companion_name",
    "confirm_counts",
    "confirm_progress",
    "confirmed_result",
    "fresh_seeds",
    "load_confirm_study",
    "read_confirmed",
    "run_confirmation",
]
