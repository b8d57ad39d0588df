"""MLflow bookkeeping: stores, the finder's run, a study's runs, SQLite tuning and secret masking.

Modules:
    masking: :func:`mask_secrets`, applied to everything lrtune logs or prints.
    stores: :class:`TrackingSettings`, opening a client, experiments, logging params and series.
    writer: :class:`BatchWriter`, the background sender of ``log_batch`` requests.
    finder_run: :func:`log_finder_run`, the MLflow run of ``lrtune find``.
    study_runs: :class:`StudyTracker` and :class:`TrialRun`, a study's parent run and a child per trial.
    sqlite_tuning: WAL and ``synchronous=NORMAL`` for the SQLite files lrtune writes.

Importing this package is cheap (MLflow is imported when a client is opened).

Example:
    >>> mask_secrets("postgresql://bob:hunter2@db:5432/optuna")
    'postgresql://bob:***@db:5432/optuna'
"""

from lrtune.tracking.finder_run import log_finder_run
from lrtune.tracking.masking import mask_secrets
from lrtune.tracking.stores import (
    DEFAULT_TRACKING_URI,
    TrackingSettings,
    absolute_sqlite_uri,
    artifact_root,
    experiment_id,
    log_files,
    log_params,
    log_series,
    log_values,
    open_client,
    param_entities,
    quiet_mlflow_logs,
    sqlite_path,
)
from lrtune.tracking.study_runs import PARENT_ATTR, RUN_STATUS, StudyTracker, TrialRun
from lrtune.tracking.writer import BatchWriter

__all__ = [
    "DEFAULT_TRACKING_URI",
    "PARENT_ATTR",
    "RUN_STATUS",
    "BatchWriter",
    "StudyTracker",
    "TrackingSettings",
    "TrialRun",
    "absolute_sqlite_uri",
    "artifact_root",
    "experiment_id",
    "log_files",
    "log_finder_run",
    "log_params",
    "log_series",
    "log_values",
    "mask_secrets",
    "open_client",
    "param_entities",
    "quiet_mlflow_logs",
    "sqlite_path",
]
