"""MLflow stores: where runs go, opening a client, experiments, and logging params and metric series.

lrtune talks to MLflow through :class:`mlflow.tracking.MlflowClient` with an explicit
tracking URI (never the process-global one), and logs metric series in batches so a
curve of a few hundred points costs one or two requests. An ``sqlite:///`` store is opened
in WAL mode (see :mod:`lrtune.tracking.sqlite_tuning`).

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
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError, one_line
from lrtune.tracking.masking import mask_secrets

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient

logger = logging.getLogger(__name__)

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The tag the MLflow UI reads to open an experiment on its runs (not on the GenAI pages)."""
EXPERIMENT_KIND = "custom_model_development"
MAX_METRICS_PER_BATCH = 1000
MAX_PARAMS_PER_BATCH = 100
_MAX_PARAM_LENGTH = 6000


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URI, or None for any other URI."""
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///") :])


def absolute_sqlite_uri(uri: str) -> str:
    """``sqlite:///relative.db`` made absolute against the current folder; any other URI unchanged.

    SQLAlchemy resolves a relative SQLite path when it opens a connection, and MLflow keeps one
    store per URI string for the life of the process: with a relative URI, a later change of
    folder (or a connection opened later by a pool or a background writer) would reach another file.

    Example:
        >>> absolute_sqlite_uri("http://host:5000")
        'http://host:5000'
        >>> absolute_sqlite_uri("sqlite:///mlflow.db") == "sqlite:///" + str(Path.cwd() / "mlflow.db")
        True
    """
    db = sqlite_path(uri)
    if db is None or db.is_absolute() or str(db) in ("", ":memory:"):
        return uri
    return f"sqlite:///{Path.cwd() / db}"


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
    """An MLflow client bound to ``settings.tracking_uri`` (schema created if new).

    An ``sqlite:///`` store is switched to WAL with ``synchronous=NORMAL`` (only that file;
    see :mod:`lrtune.tracking.sqlite_tuning`).
    """
    from mlflow.tracking import MlflowClient

    from lrtune.tracking.sqlite_tuning import tune_sqlite_url

    quiet_mlflow_logs()  # after the import: importing mlflow configures its own loggers
    # Ending a run on a server would print "View run ... at: URL" to stdout (and ask the server once more).
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    uri = absolute_sqlite_uri(settings.tracking_uri)
    tune_sqlite_url(uri)
    try:
        _probe_database(uri)
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as exc:
        raise UsageError(
            f"cannot open the MLflow store {mask_secrets(settings.tracking_uri)}: "
            f"{mask_secrets(one_line(exc))}"
        ) from None
    return client


def _probe_database(uri: str) -> None:
    """Connect once to a database store other than SQLite, so a wrong address fails in seconds.

    MLflow itself retries a failing database connection with growing pauses (about 100 s in all)
    before it gives up.
    """
    scheme = uri.split(":", 1)[0].split("+", 1)[0].lower()
    if scheme not in ("postgresql", "mysql", "mssql"):
        return
    import sqlalchemy

    connect_args = {"connect_timeout": 10} if scheme in ("postgresql", "mysql") else {}
    engine = sqlalchemy.create_engine(uri, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def experiment_id(client: MlflowClient, settings: TrackingSettings) -> str:
    """Id of the experiment named in ``settings``, created (with lrtune's artifact root) if missing.

    An experiment lrtune creates carries ``mlflow.experimentKind = custom_model_development``, so
    the MLflow UI opens it on its runs. On a server, artifacts go where the server says (through
    the server, ``mlflow-artifacts:/``, when it serves them).
    """
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
        return str(
            client.create_experiment(
                settings.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
            )
        )
    except MlflowException:
        # Another worker created it between our lookup and our create.
        again = client.get_experiment_by_name(settings.experiment)
        if again is None:
            raise
        return str(again.experiment_id)


def param_entities(params: Mapping[str, Any]) -> list[Any]:
    """MLflow params with their values masked and cut to MLflow's length limit."""
    from mlflow.entities import Param

    return [Param(str(k), mask_secrets(str(v))[:_MAX_PARAM_LENGTH]) for k, v in params.items()]


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params (values masked and cut to MLflow's length limit) in batches."""
    items = param_entities(params)
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH])


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
    for start in range(0, len(metrics), MAX_METRICS_PER_BATCH):
        client.log_batch(run_id, metrics=metrics[start : start + MAX_METRICS_PER_BATCH])


def log_files(
    client: MlflowClient, run_id: str, files: Iterable[Path], *, artifact_path: str | None = None
) -> None:
    """Attach files to a run as artifacts."""
    for path in files:
        client.log_artifact(run_id, str(path), artifact_path=artifact_path)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "experiment"


__all__ = [
    "DEFAULT_TRACKING_URI",
    "EXPERIMENT_KIND",
    "EXPERIMENT_KIND_TAG",
    "MAX_METRICS_PER_BATCH",
    "MAX_PARAMS_PER_BATCH",
    "TrackingSettings",
    "absolute_sqlite_uri",
    "artifact_root",
    "experiment_id",
    "log_files",
    "log_params",
    "log_series",
    "log_values",
    "mask_secrets",
    "open_client",
    "param_entities",
    "quiet_mlflow_logs",
    "sqlite_path",
]
