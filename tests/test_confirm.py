"""Confirmation on fresh seeds: which runs are made, resuming, the winner, and the MLflow runs."""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import optuna
import pytest
from mlflow.tracking import MlflowClient

from lrtune.config import build_config
from lrtune.errors import UsageError
from lrtune.study import best_file, run_study
from lrtune.study.confirm import (
    CONFIRMS_ATTR,
    SEED_ATTR,
    ConfirmSettings,
    companion_name,
    confirm_counts,
    confirmed_result,
    fresh_seeds,
    load_confirm_study,
    run_confirmation,
)
from lrtune.study.record import PLAN_ATTR
from lrtune.study.selection import BASELINE_ROLE, ROLE_ATTR, VAL_LOSS_ATTR

optuna.logging.set_verbosity(optuna.logging.WARNING)

PLAN = {"schedule": {"type": "constant", "base_lr": 0.1}, "optimizer": {"name": "sgd"}}


def search_study(values: list[float | None], *, direction: str = "maximize") -> optuna.Study:
    """A finished search: trial 0 is the baseline; ``None`` is a pruned trial."""
    study = optuna.create_study(direction=direction, study_name="s")
    for number, value in enumerate(values):
        attrs: dict[str, Any] = {PLAN_ATTR: PLAN, VAL_LOSS_ATTR: 1.0}
        if number == 0:
            attrs[ROLE_ATTR] = BASELINE_ROLE
        state = optuna.trial.TrialState.PRUNED if value is None else optuna.trial.TrialState.COMPLETE
        study.add_trial(
            optuna.trial.create_trial(state=state, value=value, params={}, distributions={}, user_attrs=attrs)
        )
    return study


class Recorder:
    """A confirmation objective: value = trial number / 10 + seed offset, optionally failing once."""

    def __init__(self, *, interrupt_at: int | None = None, scores: dict[int, float] | None = None) -> None:
        self.calls: list[tuple[int, int]] = []
        self.interrupt_at = interrupt_at
        self.scores = scores or {}

    def __call__(self, trial: optuna.Trial) -> float:
        pair = (trial.user_attrs[CONFIRMS_ATTR], trial.user_attrs[SEED_ATTR])
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            self.interrupt_at = None
            raise KeyboardInterrupt
        self.calls.append(pair)
        trial.set_user_attr(VAL_LOSS_ATTR, 0.5)
        return self.scores.get(pair[0], 0.5) + (pair[1] % 7) / 1000


def test_settings_validate_and_count_runs() -> None:
    assert ConfirmSettings().runs == 12 and ConfirmSettings(top=0).runs == 0
    assert not ConfirmSettings(seeds=0).enabled
    for bad in ({"top": -1}, {"seeds": 1.5}, {"top": True}):
        with pytest.raises(UsageError, match="must be an integer >= 0"):
            ConfirmSettings(**bad)


def test_fresh_seeds_never_meet_the_search_seeds() -> None:
    seeds = fresh_seeds(5, 4)
    assert seeds == (1_000_008, 1_000_009, 1_000_010, 1_000_011)
    assert not set(seeds) & {5 + n for n in range(100_000)}
    assert all(0 <= s < 2**32 for s in fresh_seeds(2**32 - 2, 3))


def test_exactly_the_top_k_and_the_baseline_run_on_m_seeds() -> None:
    study = search_study([0.90, 0.95, 0.97, None, 0.93, 0.96])
    recorder = Recorder()
    finished = run_confirmation(study, recorder, ConfirmSettings(top=2, seeds=3), seed=0)
    seeds = fresh_seeds(0, 3)
    assert finished == 9
    assert sorted(recorder.calls) == sorted((n, s) for n in (0, 2, 5) for s in seeds)
    assert confirm_counts(study) == (9, 9)
    # Everything is there: a second call makes no run.
    again = Recorder()
    assert run_confirmation(study, again, ConfirmSettings(top=2, seeds=3), seed=0) == 0
    assert again.calls == []


def test_an_interrupted_confirmation_resumes_without_repeating_runs() -> None:
    study = search_study([0.90, 0.95, 0.97])
    settings = ConfirmSettings(top=2, seeds=2)
    first = Recorder(interrupt_at=2)
    with pytest.raises(KeyboardInterrupt):
        run_confirmation(study, first, settings, seed=0)
    assert len(first.calls) == 2
    confirm = load_confirm_study(study)
    assert confirm is not None
    states = [t.state for t in confirm.trials]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert states.count(optuna.trial.TrialState.FAIL) == 1
    assert confirmed_result(study) is None  # incomplete: no winner named yet

    second = Recorder()
    assert run_confirmation(study, second, settings, seed=0) == 4
    assert set(second.calls).isdisjoint(first.calls)
    assert sorted(first.calls + second.calls) == sorted((n, s) for n in (0, 1, 2) for s in fresh_seeds(0, 2))
    assert confirmed_result(study) is not None


def test_the_winner_is_the_best_mean_and_the_gain_is_against_the_baseline() -> None:
    # Trial 2 won the search by luck; on fresh seeds trial 1 is better, and the baseline in between.
    study = search_study([0.90, 0.95, 0.99])
    run_confirmation(study, Recorder(scores={0: 0.93, 1: 0.96, 2: 0.91}), ConfirmSettings(2, 2), seed=0)
    winner = confirmed_result(study)
    assert winner is not None
    assert winner.best.trial_number == 1 and winner.baseline.trial_number == 0
    assert winner.gain == pytest.approx(0.03)
    low, high = winner.gain_interval()
    assert low == pytest.approx(high) == pytest.approx(0.03)  # the seed offsets cancel in the pairing
    best = best_file_of(study)
    offset = sum(seed % 7 for seed in fresh_seeds(0, 2)) / 2 / 1000
    assert best["trial"] == 1 and best["value"] == best["mean"] == pytest.approx(0.96 + offset)
    assert best["baseline"]["trial"] == 0 and best["gain"] == pytest.approx(0.03)


def test_nothing_better_than_the_baseline_names_the_baseline() -> None:
    study = search_study([0.90, 0.95, 0.99])
    run_confirmation(study, Recorder(scores={0: 0.95, 1: 0.95, 2: 0.90}), ConfirmSettings(2, 2), seed=0)
    winner = confirmed_result(study)
    assert winner is not None and winner.is_baseline and winner.gain == 0.0  # a tie goes to the baseline


def test_the_gain_is_positive_when_lower_is_better() -> None:
    study = search_study([0.30, 0.25], direction="minimize")
    run_confirmation(study, Recorder(scores={0: 0.30, 1: 0.20}), ConfirmSettings(1, 2), seed=0)
    winner = confirmed_result(study)
    assert winner is not None and winner.best.trial_number == 1
    assert winner.gain == pytest.approx(0.10)


def test_a_study_without_a_complete_trial_is_not_confirmed() -> None:
    study = search_study([None, None])
    assert run_confirmation(study, Recorder(), ConfirmSettings(), seed=0) == 0
    assert confirmed_result(study) is None


def test_more_trials_choose_the_candidates_again_and_reuse_finished_runs() -> None:
    study = search_study([0.90, 0.95])
    settings = ConfirmSettings(top=1, seeds=2)
    run_confirmation(study, Recorder(), settings, seed=0)
    study.add_trial(
        optuna.trial.create_trial(value=0.99, params={}, distributions={}, user_attrs={PLAN_ATTR: PLAN})
    )
    later = Recorder()
    assert run_confirmation(study, later, settings, seed=0) == 2
    assert sorted(later.calls) == [(2, s) for s in fresh_seeds(0, 2)]  # only the new candidate


def best_file_of(study: optuna.Study) -> dict[str, Any]:
    from lrtune.space import LRBounds
    from lrtune.study.record import StudyRecord

    record = StudyRecord(
        task="digits",
        epochs=2,
        steps_per_epoch=10,
        batch_size=64,
        metric="val_accuracy",
        direction="maximize",
        schedules=("constant",),
        optimizers=("sgd",),
        bounds={"sgd": LRBounds(0.01, 1.0, 0.1)},
    )
    return best_file(study, record=record)


# ------------------------------------------------------------------------- a real study, MLflow
@pytest.mark.slow
def test_confirmation_runs_are_mlflow_children_tagged_confirm(tmp_path: Path) -> None:
    finder = tmp_path / "finder.json"
    finder.write_text('{"suggested_lr": 0.1, "lr_low": 0.02, "lr_high": 0.5}')
    config = build_config(
        None,
        {
            "task": "digits",
            "epochs": 1,
            "n_trials": 3,
            "schedules": "constant,cosine",
            "pruner": "none",
            "sampler": "random",
            "bounds": str(finder),
            "storage": f"sqlite:///{tmp_path}/lrtune.db",
            "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
            "study_name": "confirmed",
            "device": "cpu",
            "confirm": 1,
            "confirm_seeds": 2,
        },
    )
    outcome = run_study(config)
    assert (outcome.confirmed, outcome.confirm_planned) == (4, 4)
    assert outcome.best is not None and outcome.best["confirmed"] is True
    client = MlflowClient(tracking_uri=config.tracking_uri)
    experiment = client.get_experiment_by_name("confirmed")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id], filter_string="tags.`lrtune.role` = 'confirm'")
    assert len(runs) == 4
    seeds = [str(s) for s in fresh_seeds(0, 2)]
    pairs = sorted((r.data.tags["lrtune.trial_number"], r.data.tags["lrtune.seed"]) for r in runs)
    winners = {"0", str(outcome.best["trial"] if outcome.best["trial"] != 0 else "")} - {""}
    assert {p[1] for p in pairs} == set(seeds) and {p[0] for p in pairs} >= winners
    for run in runs:
        assert run.info.status == "FINISHED" and run.data.tags["lrtune.state"] == "COMPLETE"
        assert run.data.tags["mlflow.parentRunId"] == outcome.parent_run_id
        assert "val_accuracy" in run.data.metrics and "lr" in run.data.metrics
        assert run.data.params["schedule"] in ("constant", "cosine")
    # The companion study sits beside the study and never counts as one of its trials.
    study = optuna.load_study(study_name="confirmed", storage=config.storage)
    assert len(study.trials) == 3
    assert optuna.load_study(study_name=companion_name("confirmed"), storage=config.storage).trials
    # A re-run with the same total finds everything done.
    shutil.copy(tmp_path / "lrtune.db", tmp_path / "before.db")
    again = run_study(config)
    assert again.added == 0 and again.confirmed == 4
    assert math.isclose(again.best["value"], outcome.best["value"])  # type: ignore[index]
