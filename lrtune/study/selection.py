"""Choosing a study's winner without rewarding luck.

Two rules, used everywhere a best trial is named (the candidates for confirmation, the best file,
the printed summary):

* **Ranking.** Complete trials are ranked by their objective value, and ties — common when the
  metric is an accuracy on a few hundred examples, which moves in steps of 1/n — by their final
  validation loss (the trial's ``val_loss`` attribute), then by trial number. A trial without a
  validation loss (a :func:`~lrtune.study.tune` loop reports only its objective) ranks after those
  with one on a tie.
* **Confirmation.** The best value of many noisy single-seed trials is biased upward (the
  winner's curse). :mod:`lrtune.study.confirm` retrains the top trials and the baseline (trial 0,
  the strong default) on the same fresh seeds; :func:`confirmed_winner` then names the candidate
  with the best mean over those seeds (ties again by mean validation loss, the baseline first), and
  its gain over the baseline on those shared seeds.

Example:
    >>> a = Confirmed(trial_number=0, seeds=(7, 8), values=(0.90, 0.92), val_losses=(0.3, 0.3))
    >>> b = Confirmed(trial_number=4, seeds=(7, 8), values=(0.93, 0.95), val_losses=(0.2, 0.2))
    >>> winner = confirmed_winner([a, b], baseline_number=0, direction="maximize")
    >>> winner.best.trial_number, round(winner.gain, 3)
    (4, 0.03)
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from optuna.trial import FrozenTrial

#: Trial attribute holding the final epoch's validation loss (the tie-breaker).
VAL_LOSS_ATTR = "val_loss"
#: Trial attribute holding the epochs the trial trained (all its seeds, when racing): its cost.
EPOCHS_ATTR = "epochs_trained"
#: Trial attribute marking the study's baseline (value :data:`BASELINE_ROLE`).
ROLE_ATTR = "role"
BASELINE_ROLE = "baseline"


def _signed(value: float, direction: str) -> float:
    """``value`` as a quantity to minimize."""
    return -value if direction == "maximize" else value


def _loss_key(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.inf


def ranked(trials: Sequence[FrozenTrial], direction: str) -> list[FrozenTrial]:
    """The complete trials of ``trials``, best first (ties by validation loss, then trial number).

    Example:
        >>> import optuna
        >>> make = lambda v, loss: optuna.trial.create_trial(
        ...     value=v, user_attrs={"val_loss": loss}, params={}, distributions={})
        >>> trials = [make(0.95, 0.30), make(0.97, 0.20), make(0.97, 0.10)]
        >>> for n, t in enumerate(trials): t.number = n
        >>> [t.number for t in ranked(trials, "maximize")]
        [2, 1, 0]
    """
    import optuna

    complete = [
        t
        for t in trials
        if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None and not math.isnan(t.value)
    ]
    return sorted(
        complete,
        key=lambda t: (
            _signed(float(t.value or 0.0), direction),
            _loss_key(t.user_attrs.get(VAL_LOSS_ATTR)),
            t.number,
        ),
    )


def baseline_number(trials: Sequence[FrozenTrial]) -> int | None:
    """The number of the study's baseline trial (the first one marked so), or None."""
    marked = [t.number for t in trials if t.user_attrs.get(ROLE_ATTR) == BASELINE_ROLE]
    return min(marked) if marked else None


@dataclass(frozen=True)
class Confirmed:
    """One candidate retrained on fresh seeds.

    Args:
        trial_number: the study trial whose plan was retrained.
        seeds: the fresh seeds, in order.
        values: the objective value of each seed's run.
        val_losses: the final validation loss of each seed's run (NaN when unknown).
    """

    trial_number: int
    seeds: tuple[int, ...]
    values: tuple[float, ...]
    val_losses: tuple[float, ...]

    @property
    def mean(self) -> float:
        """Mean objective value over the seeds."""
        return statistics.fmean(self.values)

    @property
    def std(self) -> float:
        """Sample standard deviation over the seeds (0 for one seed)."""
        return statistics.stdev(self.values) if len(self.values) > 1 else 0.0

    @property
    def mean_val_loss(self) -> float:
        """Mean validation loss over the seeds (inf when any is unknown)."""
        finite = [v for v in self.val_losses if math.isfinite(v)]
        return statistics.fmean(finite) if len(finite) == len(self.val_losses) and finite else math.inf

    def summary(self) -> dict[str, Any]:
        """``{"seeds", "values", "mean", "std"}`` as the best file writes them."""
        return {"seeds": list(self.seeds), "values": list(self.values), "mean": self.mean, "std": self.std}


@dataclass(frozen=True)
class Winner:
    """The confirmed winner, the baseline, and the gain (winner − baseline, positive = better)."""

    best: Confirmed
    baseline: Confirmed
    gain: float
    direction: str

    @property
    def is_baseline(self) -> bool:
        """True when the search found nothing better than the baseline."""
        return self.best.trial_number == self.baseline.trial_number

    def gain_interval(self, confidence: float = 0.95) -> tuple[float, float]:
        """A paired t-interval of the gain over the shared seeds ((gain, gain) for one seed)."""
        diffs = [
            _signed(b, self.direction) - _signed(w, self.direction)
            for w, b in zip(self.best.values, self.baseline.values, strict=True)
        ]
        _, low, high = t_interval(diffs, confidence)
        return low, high


def t_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean and its two-sided Student-t interval (low = high = mean for one value).

    Example:
        >>> [round(v, 3) for v in t_interval([0.03, 0.02, 0.04])]  # t(0.975, 2) = 4.303
        [0.03, 0.005, 0.055]
    """
    if not values:
        raise ValueError("t_interval needs at least one value")
    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, mean, mean
    from scipy import stats

    quantile = float(stats.t.ppf(0.5 + confidence / 2, len(values) - 1))
    half = quantile * statistics.stdev(values) / math.sqrt(len(values))
    return mean, mean - half, mean + half


def confirmed_winner(confirmed: Sequence[Confirmed], *, baseline_number: int, direction: str) -> Winner:
    """The best candidate by mean over the shared fresh seeds; ties by mean validation loss, baseline first.

    Raises:
        ValueError: the baseline is not among ``confirmed``, or the candidates' seeds differ.
    """
    by_number = {c.trial_number: c for c in confirmed}
    if baseline_number not in by_number:
        raise ValueError(f"the baseline trial {baseline_number} was not confirmed")
    baseline = by_number[baseline_number]
    if any(c.seeds != baseline.seeds for c in confirmed):
        raise ValueError("every candidate must be confirmed on the same seeds")
    best = min(
        confirmed,
        key=lambda c: (
            _signed(c.mean, direction),
            c.mean_val_loss,
            c.trial_number != baseline_number,
            c.trial_number,
        ),
    )
    gain = _signed(baseline.mean, direction) - _signed(best.mean, direction)
    return Winner(best=best, baseline=baseline, gain=gain, direction=direction)


__all__ = [
    "BASELINE_ROLE",
    "EPOCHS_ATTR",
    "ROLE_ATTR",
    "VAL_LOSS_ATTR",
    "Confirmed",
    "Winner",
    "baseline_number",
    "confirmed_winner",
    "ranked",
    "t_interval",
]
