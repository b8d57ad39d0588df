"""MLflow bookkeeping: where runs go, how they are logged, and keeping secrets out.

lrtune talks to MLflow through :class:`mlflow.tracking.MlflowClient` with an explicit
tracking URI (never the process-global one), and logs metric series in batches so a
curve of a few hundred points costs one or two requests.

Defaults follow the DESIGN contract: ``sqlite:///mlflow.db`` in the current folder, with
artifacts in ``./mlartifacts``; for ``sqlite:///DIR/mlflow.db`` artifacts go to
``DIR/mlartifacts``. Other stores (an MLflow server, PostgreSQL) choose their own
artifact location.

Example:
    >>> mask_secrets("postgresql://bob:hunter2@db:5432/optuna")
    'postgresql://bob:***@db:5432/optuna'
    >>> artifact_root("sqlite:///runs/mlflow.db").endswith("runs/mlartifacts")
    True
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError, one_line

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
_MAX_METRICS_PER_BATCH = 1000
_MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000

_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@/\s]*)@")
_SECRET_QUERY = re.compile(r"(?i)(?P<key>(?:password|passwd|pwd|secret|token|api_key)=)(?P<value>[^&\s]+)")


def mask_secrets(text: str) -> str:
    """Replace passwords in URLs (``user:pw@host``) and secret query parameters with ``***``.

    Example:
        >>> mask_secrets("mysql://u:p@h/db?password=x&charset=utf8")
        'mysql://u:***@h/db?password=***&charset=utf8'
    """
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_QUERY.sub(lambda m: f"{m['key']}***", text)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def artifact_root(tracking_uri: str) -> str | None:
    """Where artifacts go for a store lrtune creates experiments in (None: the store decides)."""
    db = sqlite_path(tracking_uri)
    if db is None:
        return None
    return (db.parent / "mlartifacts").resolve().as_uri()


@dataclass(frozen=True)
class TrackingSettings:
    """Where and under which experiment runs are logged.

    Args:
        tracking_uri: an MLflow tracking URI (``sqlite:///...``, ``http(s)://...``, ``postgresql://...``).
        experiment: the MLflow experiment name.
    """

    tracking_uri: str = DEFAULT_TRACKING_URI
    experiment: str = "lrtune-find"

    def __post_init__(self) -> None:
        if not self.experiment.strip():
            raise UsageError("the MLflow experiment name must not be empty")
        if "://" not in self.tracking_uri:
            raise UsageError(
                f"tracking URI {mask_secrets(self.tracking_uri)!r} is not a URI; "
                "use e.g. sqlite:///mlflow.db or http://host:5000"
            )
        if self.tracking_uri.startswith("file:"):
            raise UsageError(
                "file-based MLflow stores are deprecated; use sqlite:///mlflow.db or an MLflow server URI"
            )
        db = sqlite_path(self.tracking_uri)
        if db is not None:
            folder = db.parent if str(db.parent) else Path(".")
            if not folder.is_dir():
                raise UsageError(f"the folder of the MLflow database {str(db)!r} does not exist")
            if db.exists() and db.is_dir():
                raise UsageError(f"the MLflow database path {str(db)!r} is a folder")


def quiet_mlflow_logs() -> None:
    """Keep MLflow's and alembic's INFO chatter (schema creation, migrations) off the terminal.

    The level is WARNING, or higher when ``MLFLOW_LOGGING_LEVEL`` asks for it (the CLI sets
    CRITICAL, because it reports failures itself in one line).
    """
    requested = logging.getLevelName(os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING").upper())
    level = max(logging.WARNING, requested if isinstance(requested, int) else logging.WARNING)
    for name in ("mlflow", "alembic", "alembic.runtime.migration"):
        logging.getLogger(name).setLevel(level)


def open_client(settings: TrackingSettings) -> MlflowClient:
    """An MLflow client bound to ``settings.tracking_uri`` (schema created if new)."""
    from mlflow.tracking import MlflowClient

    quiet_mlflow_logs()  # after the import: importing mlflow configures its own loggers
    try:
        client = MlflowClient(tracking_uri=settings.tracking_uri)
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise UsageError(
            f"cannot open the MLflow store {mask_secrets(settings.tracking_uri)}: "
            f"{mask_secrets(one_line(exc))}"
        ) from None
    return client


def experiment_id(client: MlflowClient, settings: TrackingSettings) -> str:
    """Id of the experiment named in ``settings``, created (with lrtune's artifact root) if missing."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(settings.experiment)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            raise UsageError(
                f"MLflow experiment {settings.experiment!r} is deleted; restore it or choose another name"
            )
        return str(found.experiment_id)
    root = artifact_root(settings.tracking_uri)
    location = f"{root}/{_slug(settings.experiment)}" if root else None
    try:
        return str(client.create_experiment(settings.experiment, artifact_location=location))
    except MlflowException:
        # Another worker created it between our lookup and our create.
        again = client.get_experiment_by_name(settings.experiment)
        if again is None:
            raise
        return str(again.experiment_id)


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params (values masked and cut to MLflow's length limit) in batches."""
    from mlflow.entities import Param

    items = [Param(str(k), mask_secrets(str(v))[:_MAX_PARAM_LENGTH]) for k, v in params.items()]
    for start in range(0, len(items), _MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + _MAX_PARAMS_PER_BATCH])


def log_series(
    client: MlflowClient,
    run_id: str,
    series: Mapping[str, Sequence[float]],
    *,
    steps: Sequence[int] | None = None,
) -> None:
    """Log step-wise metric curves in batches; non-finite points are skipped.

    Args:
        series: metric name → values; value i is logged at ``steps[i]`` (default: i).
    """
    import time

    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    metrics = [
        Metric(key, float(value), now, int(steps[i]) if steps is not None else i)
        for key, values in series.items()
        for i, value in enumerate(values)
        if value is not None and math.isfinite(value)
    ]
    _log_metric_batches(client, run_id, metrics)


def log_values(
    client: MlflowClient, run_id: str, values: Mapping[str, float | None], *, step: int = 0
) -> None:
    """Log single metric values (non-finite and None skipped)."""
    log_series(client, run_id, {k: [v] for k, v in values.items() if v is not None}, steps=[step])


def _log_metric_batches(client: MlflowClient, run_id: str, metrics: Sequence[Any]) -> None:
    for start in range(0, len(metrics), _MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + _MAX_METRICS_PER_BATCH])


def log_files(
    client: MlflowClient, run_id: str, files: Iterable[Path], *, artifact_path: str | None = None
) -> None:
    """Attach files to a run as artifacts."""
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_finder_run(
    settings: TrackingSettings,
    *,
    result: Any,
    params: Mapping[str, Any],
    files: Sequence[Path],
    run_name: str | None = None,
) -> str:
    """One MLflow run for ``lrtune find``: params, ``loss``/``lr`` curves, the suggestion, and files.

    Args:
        result: a :class:`lrtune.finder.FinderResult`.
        params: the settings of the sweep (task, optimizer, start/end LR, ...).
        files: artifacts to attach (``finder.json``, ``finder.png``).

    Returns:
        The run id.
    """
    client = open_client(settings)
    exp_id = experiment_id(client, settings)
    run = client.create_run(exp_id, run_name=run_name, tags={"lrtune.command": "find"})
    run_id = run.info.run_id
    status = "FAILED"
    try:
        log_params(client, run_id, params)
        log_series(client, run_id, {"loss": list(result.losses), "lr": list(result.lrs)})
        log_values(
            client,
            run_id,
            {
                "suggested_lr": result.suggested_lr,
                "lr_low": result.lr_low,
                "lr_high": result.lr_high,
                "spread_decades": result.spread_decades,
            },
        )
        client.set_tag(run_id, "lrtune.flags", ",".join(result.flags) or "none")
        client.set_tag(run_id, "lrtune.confidence", str(getattr(result, "confidence", "")))
        log_files(client, run_id, files)
        status = "FINISHED"
    finally:
        client.set_terminated(run_id, status=status)
    return str(run_id)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"


__all__ = [
    "DEFAULT_TRACKING_URI",
    "TrackingSettings",
    "artifact_root",
    "experiment_id",
    "log_files",
    "log_finder_run",
    "log_params",
    "log_series",
    "log_values",
    "mask_secrets",
    "open_client",
    "quiet_mlflow_logs",
    "sqlite_path",
]
