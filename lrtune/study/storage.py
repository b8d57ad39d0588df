"""Opening a study's Optuna storage: RDB URLs, heartbeats that retry crashed trials, no leaked secrets.

Every study storage is an :class:`optuna.storages.RDBStorage` (``sqlite:///lrtune.db`` on one
machine, PostgreSQL or MySQL for many workers) with a heartbeat: a worker that dies mid-trial
stops beating, and after :data:`GRACE_PERIOD` seconds (``--grace-period``) the next worker looking for a
trial marks it FAIL and enqueues a copy with the same params (up to :data:`MAX_RETRY` times). Heartbeats are
written only inside ``study.optimize`` (not with ask/tell), so lrtune always uses ``optimize``.

An SQLite storage is opened in WAL mode with ``synchronous=NORMAL`` (a study commits a few
dozen times per trial; see :mod:`lrtune.tracking.sqlite_tuning`, which also says why a file on a
network file system keeps SQLite's defaults).

A password in a storage URL never reaches the terminal or a log: errors name the URL with
:func:`lrtune.tracking.mask_secrets`, and :func:`mask_secrets_in_logs` masks the log records
of Optuna and SQLAlchemy.

Example:
    >>> import tempfile
    >>> url = f"sqlite:///{tempfile.mkdtemp()}/lrtune.db"
    >>> storage = open_storage(url)
    >>> study_names(storage)
    []
"""

from __future__ import annotations

import logging
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrtune.errors import UsageError, one_line
from lrtune.tracking import absolute_sqlite_uri, mask_secrets, sqlite_path

if TYPE_CHECKING:
    import optuna

#: Seconds between two heartbeats of a running trial.
HEARTBEAT_INTERVAL = 60
#: Seconds without a heartbeat after which a running trial counts as crashed (FAIL, then retried).
GRACE_PERIOD = 180
#: How often one crashed trial is retried.
MAX_RETRY = 2
#: Seconds SQLite waits for a lock held by another worker before giving up.
SQLITE_TIMEOUT = 30

DEFAULT_STORAGE = "sqlite:///lrtune.db"


class _MaskSecrets(logging.Filter):
    """Rewrites a log record's message with passwords masked."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed record is the handler's problem, not ours
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True


_FILTER = _MaskSecrets()


def mask_secrets_in_logs() -> None:
    """Mask passwords in what Optuna, SQLAlchemy and the root handlers log (idempotent).

    The filter sits on those loggers (records they log themselves) and on the handlers of
    Optuna's logger and of the root logger (records propagated from their children).
    """
    import optuna

    loggers = [logging.getLogger(name) for name in ("optuna", "sqlalchemy", "lrtune")]
    handlers = [*optuna.logging.get_logger("optuna").handlers, *logging.getLogger().handlers]
    for target in (*loggers, *handlers):
        if _FILTER not in target.filters:
            target.addFilter(_FILTER)


def check_storage_url(url: str) -> None:
    """Raise UsageError for what is wrong with a storage URL before opening it (writes nothing)."""
    if not isinstance(url, str) or "://" not in url:
        raise UsageError(
            f"study storage {mask_secrets(str(url))!r} is not a URL; use e.g. sqlite:///lrtune.db "
            "or postgresql://user:password@host/db"
        )
    check_sqlite_folder(url)


def check_sqlite_folder(url: str, *, what: str = "study storage") -> None:
    """Raise UsageError when a ``sqlite:///`` URL points into a folder that does not exist."""
    path = sqlite_path(url)
    if path is None or str(path) == ":memory:":
        return
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise UsageError(f"the folder of the {what} {str(path)!r} does not exist; create it first")
    if path.is_dir():
        raise UsageError(f"the {what} path {str(path)!r} is a folder, not a database file")


def open_storage(
    url: str,
    *,
    heartbeat: bool = True,
    heartbeat_interval: int = HEARTBEAT_INTERVAL,
    grace_period: int = GRACE_PERIOD,
) -> optuna.storages.RDBStorage:
    """Open (creating the tables if new) the RDB storage at ``url``.

    Args:
        url: an SQLAlchemy URL: ``sqlite:///lrtune.db``, ``postgresql://user:pw@host/db``, ...
        heartbeat: record heartbeats and retry crashed trials (see the module docstring).
        heartbeat_interval: seconds between two heartbeats of a running trial.
        grace_period: seconds without a heartbeat after which a running trial counts as crashed.

    Raises:
        UsageError: the URL cannot be opened (the message has the password masked).
    """
    import optuna

    from lrtune.tracking.sqlite_tuning import tune_sqlite_url

    check_storage_url(url)
    mask_secrets_in_logs()
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        url = absolute_sqlite_uri(url)  # pooled connections opened later must reach the same file
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": SQLITE_TIMEOUT}}
        tune_sqlite_url(url)  # before the engine opens its first connection
    try:
        with warnings.catch_warnings():  # heartbeats and their retry callback are marked experimental
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if heartbeat:
                kwargs.update(
                    heartbeat_interval=int(heartbeat_interval),
                    grace_period=int(grace_period),
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                        max_retry=MAX_RETRY
                    ),
                )
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(url, **kwargs)
                except Exception as exc:  # workers creating the tables of a new storage at once
                    if attempt == 2 or not any(
                        text in str(exc) for text in ("already exists", "duplicate key", "UniqueViolation")
                    ):
                        raise
                    time.sleep(0.5 * (attempt + 1))
            raise AssertionError("unreachable")
    except Exception as exc:
        raise UsageError(
            f"cannot open the study storage {mask_secrets(url)}: {mask_secrets(f'{type(exc).__name__}: {one_line(exc)}')}"
        ) from None


def open_existing_storage(url: str) -> optuna.storages.RDBStorage:
    """Open a storage that must already exist (an SQLite file is never created here)."""
    path = sqlite_path(url) if isinstance(url, str) else None
    if path is not None and str(path) != ":memory:" and not path.is_file():
        raise UsageError(f"no study storage at {str(path)!r}; pass the --storage the study was run with")
    return open_storage(url, heartbeat=False)


def study_names(storage: optuna.storages.BaseStorage) -> list[str]:
    """The names of the studies in ``storage``."""
    return [s.study_name for s in storage.get_all_studies()]


def find_study_id(storage: optuna.storages.BaseStorage, study_name: str) -> int | None:
    """The id of the study named ``study_name``, or None when it does not exist (nothing is written)."""
    try:
        return int(storage.get_study_id_from_name(study_name))
    except KeyError:
        return None


__all__ = [
    "DEFAULT_STORAGE",
    "GRACE_PERIOD",
    "HEARTBEAT_INTERVAL",
    "MAX_RETRY",
    "check_sqlite_folder",
    "check_storage_url",
    "find_study_id",
    "mask_secrets_in_logs",
    "open_existing_storage",
    "open_storage",
    "study_names",
]
