"""Racing over seeds: a pruner that never judges a schedule before its end.

Epoch-based pruners (Hyperband, median) compare trials part-way through, where a constant rate
still beats a cosine that has not annealed yet: they prune exactly the schedules that pay off
late (short-horizon bias, Wu et al. 2018). Racing keeps the fidelity that matters — the full
schedule over the full budget — and spends the pruning budget on *seeds* instead: every trial
trains its plan once, to the end, on its own seed; the best third of the trials at that rung
(successive halving, reduction factor 3) train it on :data:`RACE_SEEDS` − 1 more seeds, and a
trial's value is its mean over the seeds it trained. So the trials that reach the top are the
ones that are good on several data orders, not one lucky one (SMAC's intensification and irace
race configurations the same way).

The resource a racing trial reports to Optuna is the number of seeds trained (steps 1, 2, 3),
not epochs; per-epoch curves of the first seed still go to MLflow, and each seed's value is the
MLflow metric ``race_value`` at step = seed index.

Example:
    >>> race_seed(base=7, index=0), race_seed(base=7, index=1)
    (7, 2000010)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import optuna

#: The pruner's registered name.
RACING = "racing"
#: Seeds a trial that survives every rung trains.
RACE_SEEDS = 3
#: Successive halving's reduction factor: the best 1/3 of the trials at a rung go on.
REDUCTION_FACTOR = 3
#: Distance between a trial's racing seeds (away from search seeds ``seed + n`` and confirmation seeds).
SEED_STRIDE = 2_000_003


def race_seed(*, base: int, index: int) -> int:
    """The seed of a racing trial's ``index``-th run (``index`` 0 is the trial's own seed ``base``)."""
    return (base + index * SEED_STRIDE) % 2**32


def racing_pruner() -> optuna.pruners.BasePruner:
    """Successive halving over seeds: the best third after one seed trains :data:`RACE_SEEDS` in all."""
    import optuna

    return optuna.pruners.SuccessiveHalvingPruner(
        min_resource=1, reduction_factor=REDUCTION_FACTOR, min_early_stopping_rate=0
    )


__all__ = ["RACE_SEEDS", "RACING", "REDUCTION_FACTOR", "race_seed", "racing_pruner"]
