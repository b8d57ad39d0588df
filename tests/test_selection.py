"""Ranking with ties broken by validation loss, and the confirmed winner."""

from __future__ import annotations

import math
from typing import Any

import optuna
import pytest

from lrtune.study.selection import Confirmed, baseline_number, confirmed_winner, ranked


def trial(
    number: int, value: float | None, *, state: str = "COMPLETE", **attrs: Any
) -> optuna.trial.FrozenTrial:
    made = optuna.trial.create_trial(
        state=optuna.trial.TrialState[state],
        value=value,
        params={},
        distributions={},
        user_attrs=attrs,
    )
    made.number = number
    return made


def test_a_quantised_tie_goes_to_the_lower_validation_loss() -> None:
    trials = [
        trial(0, 0.975, val_loss=0.12),
        trial(1, 0.975, val_loss=0.09),
        trial(2, 0.975),  # no loss recorded: after those with one
        trial(3, 0.972, val_loss=0.01),
        trial(4, None, state="PRUNED"),
    ]
    assert [t.number for t in ranked(trials, "maximize")] == [1, 0, 2, 3]
    assert [t.number for t in ranked(trials, "minimize")] == [3, 1, 0, 2]


def test_equal_values_and_losses_keep_the_earlier_trial_first() -> None:
    trials = [trial(5, 0.5, val_loss=0.3), trial(2, 0.5, val_loss=0.3)]
    assert [t.number for t in ranked(trials, "maximize")] == [2, 5]


def test_the_baseline_is_the_first_trial_marked_so() -> None:
    trials = [trial(0, 0.9), trial(1, 0.9, role="baseline"), trial(2, 0.9, role="baseline")]
    assert baseline_number(trials) == 1
    assert baseline_number(trials[:1]) is None


def confirmed(number: int, values: tuple[float, ...], losses: tuple[float, ...] | None = None) -> Confirmed:
    return Confirmed(
        trial_number=number,
        seeds=tuple(range(len(values))),
        values=values,
        val_losses=losses or (0.1,) * len(values),
    )


def test_mean_std_and_the_paired_interval() -> None:
    base = confirmed(0, (0.90, 0.92, 0.94))
    best = confirmed(3, (0.93, 0.94, 0.98))
    winner = confirmed_winner([base, best], baseline_number=0, direction="maximize")
    assert winner.best is best and not winner.is_baseline
    assert best.mean == pytest.approx(0.95) and best.std == pytest.approx(math.sqrt(0.0007))
    assert winner.gain == pytest.approx(0.03)
    # Paired differences 0.03, 0.02, 0.04: mean 0.03, sd 0.01, t(0.975, 2) = 4.3027.
    low, high = winner.gain_interval()
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert (low, high) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))


def test_a_tie_in_mean_is_broken_by_loss_then_by_the_baseline() -> None:
    base = confirmed(0, (0.9, 0.9), (0.30, 0.30))
    lower_loss = confirmed(4, (0.9, 0.9), (0.20, 0.20))
    same = confirmed(2, (0.9, 0.9), (0.30, 0.30))
    assert confirmed_winner([base, lower_loss], baseline_number=0, direction="maximize").best is lower_loss
    assert confirmed_winner([same, base], baseline_number=0, direction="maximize").best is base


def test_a_diverged_seed_makes_a_candidate_lose() -> None:
    base = confirmed(0, (0.9, 0.9))
    broken = confirmed(1, (0.99, -math.inf))
    assert confirmed_winner([base, broken], baseline_number=0, direction="maximize").best is base


def test_candidates_must_share_the_baseline_and_its_seeds() -> None:
    with pytest.raises(ValueError, match="baseline trial 0 was not confirmed"):
        confirmed_winner([confirmed(1, (0.9,))], baseline_number=0, direction="maximize")
    odd = Confirmed(trial_number=1, seeds=(7, 8), values=(0.9, 0.9), val_losses=(0.1, 0.1))
    with pytest.raises(ValueError, match="same seeds"):
        confirmed_winner([confirmed(0, (0.9, 0.9)), odd], baseline_number=0, direction="maximize")
