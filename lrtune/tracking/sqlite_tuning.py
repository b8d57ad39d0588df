"""Faster commits for the SQLite files lrtune writes to: WAL journal and ``synchronous=NORMAL``.

With SQLite's defaults (rollback journal, ``synchronous=FULL``) every commit waits for
several disk syncs; a study commits a few dozen times per trial (Optuna's params,
intermediate values and heartbeats, MLflow's runs and metrics), which on a slow disk costs
more than the trial's training. In WAL mode with ``synchronous=NORMAL`` a commit appends to
the ``-wal`` file and syncs only at checkpoints. The database cannot be corrupted by a
crash; a power cut may lose the last few commits (a trial then counts as crashed and is
retried, see :mod:`lrtune.study.storage`).

Only the files registered here are tuned (lrtune's study storage and its MLflow store):
one SQLAlchemy ``connect`` listener checks each new SQLite connection's main database file
(``PRAGMA database_list``) against the registered paths, so other SQLite engines of the
same process keep their settings.

WAL is safe for several processes on one machine (the documented local setup: several
``lrtune study`` workers sharing ``sqlite:///lrtune.db``), but NOT for a database on a
network file system (NFS, SMB, Lustre, ...) shared between machines: WAL coordinates
readers and writers through shared memory, which does not work across machines. Files on a
network file system are therefore left with SQLite's defaults; for workers on several
machines use PostgreSQL or MySQL. The journal mode is stored in the database file itself:
once switched, the file stays in WAL mode for every program that opens it.

Example:
    >>> import sqlite3, tempfile
    >>> from sqlalchemy import create_engine, text
    >>> path = Path(tempfile.mkdtemp()) / "lrtune.db"
    >>> tune_sqlite_url(f"sqlite:///{path}")
    True
    >>> with create_engine(f"sqlite:///{path}").connect() as connection:
    ...     connection.execute(text("PRAGMA journal_mode")).scalar()
    'wal'
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

JOURNAL_MODE = "WAL"
SYNCHRONOUS = "NORMAL"

#: File system types (as in ``/proc/self/mounts``) whose files are shared between machines.
NETWORK_FILE_SYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smbfs",
        "smb3",
        "ncpfs",
        "afs",
        "lustre",
        "gpfs",
        "beegfs",
        "ceph",
        "glusterfs",
        "fuse.glusterfs",
        "fuse.sshfs",
        "fuse.cephfs",
        "fuse.gcsfuse",
        "fuse.s3fs",
        "ocfs2",
        "gfs2",
        "panfs",
        "9p",
    }
)

_lock = threading.Lock()
_paths: set[str] = set()
_installed = False


def tune_sqlite_url(url: str) -> bool:
    """Register the database file of an SQLite URL (``sqlite:///path``) for WAL + ``synchronous=NORMAL``.

    Call it before the engine for ``url`` is created: connections opened earlier keep their
    settings. Other URLs (PostgreSQL, an MLflow server, in-memory SQLite) are ignored.

    Returns:
        Whether connections to the file will be tuned (False for other URLs and for files on
        a network file system).
    """
    path = _database_file(url)
    return path is not None and tune_sqlite_file(path)


def tune_sqlite_file(path: str | os.PathLike[str]) -> bool:
    """Register an SQLite database file (it need not exist yet); see :func:`tune_sqlite_url`."""
    real = os.path.realpath(path)
    file_system = _network_file_system(real)
    if file_system is not None:
        logger.info(
            "%s is on a %s network file system: keeping SQLite's default journal (WAL needs one machine)",
            real,
            file_system,
        )
        return False
    with _lock:
        _install()
        _paths.add(real)
    return True


def is_tuned_file(path: str | os.PathLike[str]) -> bool:
    """Whether new connections to ``path`` get WAL + ``synchronous=NORMAL``."""
    with _lock:
        return os.path.realpath(path) in _paths


def _database_file(url: str) -> Path | None:
    """The database file of an SQLite URL, or None (another database, in memory, or a ``file:`` URI)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return None
    if database.startswith("file:") or parsed.query.get("uri") in ("true", "1"):
        return None
    return Path(database)


def _install() -> None:
    """Listen to every new DB-API connection of every SQLAlchemy engine (once per process)."""
    global _installed
    if _installed:
        return
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    event.listen(Engine, "connect", _on_connect)
    _installed = True


def _on_connect(dbapi_connection: Any, _record: Any) -> None:
    if not isinstance(dbapi_connection, sqlite3.Connection) or not _paths:
        return
    try:
        main = _main_file(dbapi_connection)
        if main is None:
            return
        with _lock:
            registered = os.path.realpath(main) in _paths
        if registered:
            _apply(dbapi_connection)
    except sqlite3.Error as exc:  # e.g. locked by another process: SQLite's defaults stay
        logger.debug("could not set the SQLite journal mode: %s", exc)


def _main_file(connection: sqlite3.Connection) -> str | None:
    for _seq, name, file in connection.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return str(file) if file else None  # "" for in-memory and temporary databases
    return None


def _apply(connection: sqlite3.Connection) -> None:
    mode = connection.execute("PRAGMA journal_mode").fetchone()[0]
    if str(mode).lower() != JOURNAL_MODE.lower():
        mode = connection.execute(f"PRAGMA journal_mode={JOURNAL_MODE}").fetchone()[0]
    # synchronous=NORMAL is only crash-safe in WAL mode: keep FULL if the switch failed.
    if str(mode).lower() == JOURNAL_MODE.lower():
        connection.execute(f"PRAGMA synchronous={SYNCHRONOUS}")


def _network_file_system(path: str, *, mounts: str = "/proc/self/mounts") -> str | None:
    """The type of the network file system holding ``path``, or None (local, or not Linux)."""
    try:
        with open(mounts, encoding="utf-8", errors="replace") as table:
            lines = table.read().splitlines()
    except OSError:
        return None
    best, best_type = "", ""
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        mount = _unescape(fields[1])
        inside = path == mount or path.startswith(mount.rstrip("/") + "/")
        if inside and len(mount) >= len(best):
            best, best_type = mount, fields[2]
    return best_type if best_type in NETWORK_FILE_SYSTEMS else None


def _unescape(field: str) -> str:
    """``/proc/mounts`` writes space, tab, newline and backslash as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field


__all__ = [
    "JOURNAL_MODE",
    "NETWORK_FILE_SYSTEMS",
    "SYNCHRONOUS",
    "is_tuned_file",
    "tune_sqlite_file",
    "tune_sqlite_url",
]
