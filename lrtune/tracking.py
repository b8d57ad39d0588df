"""MLflow bookkeeping: where runs go, how they are logged, and keeping secrets out.

lrtune talks to MLflow through :class:`mlflow.tracking.MlflowClient` with an explicit
tracking URI (never the process-global one), and logs metric series in batches so a
curve of a few hundred points costs one or two requests. :class:`BatchWriter` sends such
batches from a background thread, so a training loop never waits for the store. An
``sqlite:///`` store is opened in WAL mode (see :mod:`lrtune.sqlite_tuning`).

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

import atexit
import logging
import math
import os
import queue
import re
import threading
import time
import weakref
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
    see :mod:`lrtune.sqlite_tuning`).
    """
    from mlflow.tracking import MlflowClient

    from lrtune.sqlite_tuning import tune_sqlite_url

    quiet_mlflow_logs()  # after the import: importing mlflow configures its own loggers
    uri = absolute_sqlite_uri(settings.tracking_uri)
    tune_sqlite_url(uri)
    try:
        client = MlflowClient(tracking_uri=uri)
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


def param_entities(params: Mapping[str, Any]) -> list[Any]:
    """MLflow params with their values masked and cut to MLflow's length limit."""
    from mlflow.entities import Param

    return [Param(str(k), mask_secrets(str(v))[:_MAX_PARAM_LENGTH]) for k, v in params.items()]


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    """Log params (values masked and cut to MLflow's length limit) in batches."""
    items = param_entities(params)
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


@dataclass
class _Batch:
    """One ``log_batch`` request."""

    run_id: str
    metrics: list[Any]
    params: list[Any]
    tags: list[Any]

    def fits(self, other: _Batch) -> bool:
        """Whether ``other`` can join this request (same run, within MLflow's limits)."""
        return (
            other.run_id == self.run_id
            and len(self.metrics) + len(other.metrics) <= _MAX_METRICS_PER_BATCH
            and len(self.params) + len(other.params) <= _MAX_PARAMS_PER_BATCH
            and len(self.tags) + len(other.tags) <= _MAX_PARAMS_PER_BATCH
            and self.size + other.size <= _MAX_METRICS_PER_BATCH
        )

    @property
    def size(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)


class BatchWriter:
    """Sends MLflow ``log_batch`` requests from one background thread, in the order they were queued.

    :meth:`log` only queues (it never waits for the store and never raises), so a training loop
    does not wait for MLflow; :meth:`flush` waits until everything queued before it was sent:
    call it before ending a run. Requests of one run queued close together are merged (within
    MLflow's limits) and the thread sends at most once per ``min_interval`` seconds unless a
    flush asks: a store's cost is mostly per request, so a short trial costs one request at
    its end, while epochs longer than ``min_interval`` still show up in MLflow as they end. A
    request also waits ``settle`` seconds, so that what the caller does right after queueing
    it (reporting the epoch to Optuna) does not compete with the send for the interpreter.

    A request that fails is dropped and logged, the first failure as a warning (secrets
    masked), later ones at DEBUG: logging never stops training. The thread starts with the
    first request and exits after ``idle_seconds`` without one; what is still queued when the
    interpreter exits is sent before it does.

    MLflow's own asynchronous logging (``synchronous=False``) is not used: its queue is shared
    by every run of a store and its worker pool sends batches in parallel, so neither the order
    within a run nor "everything of this run is stored" at the run's end is guaranteed.

    Args:
        client: what sends the requests (an :class:`mlflow.tracking.MlflowClient`).
        min_interval: seconds from one send to the next, unless a flush asks sooner.
        settle: seconds a request waits before it is sent, unless a flush asks sooner.
        idle_seconds: how long the thread waits for more work before it exits.

    Example:
        >>> from mlflow.entities import Metric
        >>> class Store:
        ...     sent = []
        ...     def log_batch(self, run_id, metrics=(), params=(), tags=()):
        ...         self.sent.append((run_id, [(m.key, m.step) for m in metrics]))
        >>> store = Store()
        >>> writer = BatchWriter(store)
        >>> writer.log("run-1", metrics=[Metric("loss", 0.5, 0, 1), Metric("loss", 0.4, 0, 2)])
        >>> writer.flush()
        True
        >>> store.sent
        [('run-1', [('loss', 1), ('loss', 2)])]
    """

    def __init__(
        self, client: Any, *, min_interval: float = 5.0, settle: float = 0.05, idle_seconds: float = 5.0
    ) -> None:
        if not (math.isfinite(min_interval) and min_interval >= 0):
            raise UsageError(f"min_interval must be a number of seconds >= 0 {min_interval=}")
        if not (math.isfinite(settle) and settle >= 0):
            raise UsageError(f"settle must be a number of seconds >= 0 {settle=}")
        if not (math.isfinite(idle_seconds) and idle_seconds > 0):
            raise UsageError(f"idle_seconds must be a positive number of seconds {idle_seconds=}")
        self.client = client
        self.min_interval = min_interval
        self.settle = settle
        self.idle_seconds = idle_seconds
        self.failures = 0
        self._queue: queue.SimpleQueue[_Batch | threading.Event] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._last_send = -math.inf
        _WRITERS.add(self)

    def log(
        self,
        run_id: str,
        *,
        metrics: Sequence[Any] = (),
        params: Sequence[Any] = (),
        tags: Sequence[Any] = (),
    ) -> None:
        """Queue metrics, params and tags of a run (split into requests within MLflow's limits)."""
        batches = [
            _Batch(run_id, list(metrics[i : i + _MAX_METRICS_PER_BATCH]), [], [])
            for i in range(0, len(metrics), _MAX_METRICS_PER_BATCH)
        ]
        batches += [
            _Batch(run_id, [], list(params[i : i + _MAX_PARAMS_PER_BATCH]), [])
            for i in range(0, len(params), _MAX_PARAMS_PER_BATCH)
        ]
        batches += [
            _Batch(run_id, [], [], list(tags[i : i + _MAX_PARAMS_PER_BATCH]))
            for i in range(0, len(tags), _MAX_PARAMS_PER_BATCH)
        ]
        if batches:
            self._put(*batches)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every request queued so far was sent (or failed); False if ``timeout`` ran out."""
        with self._lock:
            if self._pending == 0:
                return True
        done = threading.Event()
        self._put(done)
        return done.wait(timeout)

    @property
    def pending(self) -> int:
        """Requests and flushes queued and not done yet."""
        with self._lock:
            return self._pending

    def _put(self, *items: _Batch | threading.Event) -> None:
        with self._lock:
            for item in items:
                self._queue.put(item)
            self._pending += len(items)
            if self._thread is None:
                _register_exit_flush()
                self._thread = threading.Thread(target=self._work, name="lrtune-mlflow-writer", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._pending == 0:
                        self._thread = None
                        return
                continue
            self._process(self._gather(first))

    def _gather(self, first: _Batch | threading.Event) -> list[_Batch | threading.Event]:
        """``first`` and what arrives until the next send is due (at once when a flush waits)."""
        items = [first]
        due = max(self._last_send + self.min_interval, time.monotonic() + self.settle)
        while not isinstance(items[-1], threading.Event):
            left = due - time.monotonic()
            try:
                items.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _process(self, items: Sequence[_Batch | threading.Event]) -> None:
        """Send the batches, merging neighbours of one run; a flush is done once all before it are sent."""
        merged: _Batch | None = None
        count = 0  # queued items inside ``merged``
        for item in items:
            if isinstance(item, threading.Event):
                if merged is not None:
                    self._send(merged, count)
                    merged, count = None, 0
                self._done(1)
                item.set()
            elif merged is not None and merged.fits(item):
                merged.metrics += item.metrics
                merged.params += item.params
                merged.tags += item.tags
                count += 1
            else:
                if merged is not None:
                    self._send(merged, count)
                merged, count = _Batch(item.run_id, [*item.metrics], [*item.params], [*item.tags]), 1
        if merged is not None:
            self._send(merged, count)

    def _done(self, count: int) -> None:
        with self._lock:
            self._pending -= count

    def _send(self, batch: _Batch, count: int) -> None:
        """Send one request made of ``count`` queued ones."""
        try:
            self._log(batch)
        finally:
            self._last_send = time.monotonic()
            self._done(count)

    def _log(self, batch: _Batch) -> None:
        try:
            self.client.log_batch(batch.run_id, metrics=batch.metrics, params=batch.params, tags=batch.tags)
        except Exception as exc:
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            logger.log(
                level,
                "could not log %d values to MLflow run %s: %s%s",
                batch.size,
                batch.run_id,
                mask_secrets(f"{type(exc).__name__}: {one_line(exc)}"),
                "; later failures are logged at DEBUG" if self.failures == 1 else "",
            )


_WRITERS: weakref.WeakSet[BatchWriter] = weakref.WeakSet()
_exit_flush_registered = False


def _register_exit_flush() -> None:
    global _exit_flush_registered
    if not _exit_flush_registered:
        _exit_flush_registered = True
        atexit.register(_flush_all)


def _flush_all() -> None:
    """At interpreter exit: send what every writer still has queued."""
    for writer in list(_WRITERS):
        writer.flush()


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
    "BatchWriter",
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
    "param_entities",
    "quiet_mlflow_logs",
    "sqlite_path",
]
