"""Optuna studies over learning-rate schedules, every trial logged to MLflow.

:func:`run_study` is ``lrtune study``: it takes the LR bounds from a range test (run first with
``bounds: auto``, or read from a ``finder.json``), builds the search space of
:mod:`lrtune.space` from them, and trains one fresh model of the task per trial.
:func:`tune` does the same for a training loop of your own. :func:`load_best` gives the best
schedule as the file ``lrtune best`` writes.

How a study runs:

* **Storage.** Any Optuna RDB URL (``sqlite:///lrtune.db`` by default; PostgreSQL/MySQL for many
  workers), opened with heartbeats: a worker that crashes leaves its trial RUNNING, and
  once the heartbeat is stale the next worker marks it FAIL and retries its params as a new
  trial (:mod:`lrtune.study.storage`).
* **n_trials is the study's total.** Complete and pruned trials count; failed ones do not (a
  crashed trial is retried, a trial that raised is re-run by the next invocation). Re-running a
  command therefore adds only what is missing, and with several workers
  ``optuna.study.MaxTrialsCallback`` stops all of them at the total.
* **Resume.** The study stores its settings, its LR bounds and the range test they came from
  (:mod:`lrtune.study.record`); a resumed run reuses them and never re-runs the finder. Task,
  epochs, batch size, schedules, optimizers, weight decay, LR dropout, the warmup limit and the
  objective must stay the same (an explicit ``--bounds`` must match the stored bounds); anything
  else (n_trials, timeout, sampler, pruner, seed, device, AMP, tracking) may change.
* **First trial.** A baseline — the finder's suggested LR, ``constant`` (else ``cosine``), no
  warmup — is enqueued once per optimizer when the study is new.
* **Objective.** The last epoch's validation metric (maximized, or minimized by the task's
  ``metric_mode``), else the validation loss (minimized); it is reported every epoch. Trial *n*
  trains with seed ``seed + n``.
* **Pruning and short-horizon bias.** A pruner judges trials by their early epochs, which
  punishes schedules that pay off late: warmups, one-cycle's rise, slow annealing (Wu et al.,
  *Understanding Short-Horizon Bias in Stochastic Meta-Optimization*, 2018). So no trial is
  pruned before ``min_resource`` epochs: one past the longest warmup any trial of the space can
  draw (:func:`lrtune.study.engine.min_resource`).
* **Divergence guard.** An epoch whose loss is NaN/inf or explodes prunes its trial with the
  reason in the trial's ``reason`` attribute and the MLflow tag ``lrtune.reason``; the study
  goes on.
* **MLflow.** One parent run per study (finder result, study plots, best spec), one child run
  per trial with per-epoch ``train_loss``/``val_loss``/``val_<metric>`` and per-step ``lr``;
  pruned trials end KILLED, failed ones FAILED (:mod:`lrtune.tracking.study_runs`).

Example:
    >>> from lrtune.config import build_config
    >>> outcome = run_study(build_config(None, {"n_trials": 6, "epochs": 5}))  # doctest: +SKIP
    >>> outcome.best["schedule"]                                              # doctest: +SKIP
    {'type': 'cosine', 'base_lr': 0.21, 'min_lr': 0.0021, 'warmup_steps': 0}
"""

from __future__ import annotations

from lrtune.study.best import best_file, load_best, write_json_atomic
from lrtune.study.engine import StudyOutcome
from lrtune.study.record import StudyRecord
from lrtune.study.runner import TaskObjective, objective_of, run_study
from lrtune.study.storage import open_storage
from lrtune.study.tune import tune

__all__ = [
    "StudyOutcome",
    "StudyRecord",
    "TaskObjective",
    "best_file",
    "load_best",
    "objective_of",
    "open_storage",
    "run_study",
    "tune",
    "write_json_atomic",
]
