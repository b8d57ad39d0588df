"""WAL + synchronous=NORMAL on lrtune's own SQLite files, and on no other SQLite engine of the process."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from lrtune.study.storage import open_storage
from lrtune.tracking import TrackingSettings, open_client, sqlite_tuning
from lrtune.tracking.sqlite_tuning import is_tuned_file, tune_sqlite_file, tune_sqlite_url

FULL, NORMAL = 2, 1  # PRAGMA synchronous values


def pragmas(engine: Engine) -> tuple[str, int]:
    """(journal_mode, synchronous) of a fresh connection of ``engine``."""
    engine.dispose()  # a new DB-API connection, so the connect listener runs
    with engine.connect() as connection:
        mode = connection.execute(text("PRAGMA journal_mode")).scalar()
        synchronous = connection.execute(text("PRAGMA synchronous")).scalar()
    return str(mode), int(synchronous or 0)


def journal_mode(path: Path) -> str:
    """The journal mode stored in a database file (read without SQLAlchemy)."""
    connection = sqlite3.connect(path)
    try:
        return str(connection.execute("PRAGMA journal_mode").fetchone()[0])
    finally:
        connection.close()


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for engine in made:
        engine.dispose()


def engine_for(path: Path, engines: list[Engine], **kwargs: Any) -> Engine:
    engine = create_engine(f"sqlite:///{path}", **kwargs)
    engines.append(engine)
    return engine


def test_lrtunes_stores_are_tuned_and_other_engines_are_not(tmp_path: Path, engines: list[Engine]) -> None:
    other = engine_for(tmp_path / "users-own.db", engines)  # made before lrtune registers anything
    with other.begin() as connection:
        connection.execute(text("CREATE TABLE t (x INTEGER)"))

    storage = open_storage(f"sqlite:///{tmp_path}/lrtune.db")
    client = open_client(TrackingSettings(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db"))
    client.search_experiments(max_results=1)

    for name in ("lrtune.db", "mlflow.db"):  # switched by Optuna's and MLflow's own engines
        assert journal_mode(tmp_path / name) == "wal"
    assert journal_mode(tmp_path / "users-own.db") == "delete"
    assert pragmas(storage.engine) == ("wal", NORMAL)
    assert pragmas(engine_for(tmp_path / "mlflow.db", engines)) == ("wal", NORMAL)
    assert pragmas(other) == ("delete", FULL)
    late = engine_for(tmp_path / "made-after.db", engines)  # made after: still untouched
    assert pragmas(late) == ("delete", FULL)
    memory = create_engine("sqlite://")
    engines.append(memory)
    assert pragmas(memory) == ("memory", FULL)
    # synchronous belongs to each connection: one opened without SQLAlchemy keeps FULL.
    plain = sqlite3.connect(tmp_path / "lrtune.db")
    try:
        assert plain.execute("PRAGMA synchronous").fetchone()[0] == FULL
    finally:
        plain.close()


def test_a_relative_url_registers_the_file_it_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, engines: list[Engine]
) -> None:
    monkeypatch.chdir(tmp_path)
    assert tune_sqlite_url("sqlite:///relative.db")
    assert is_tuned_file(tmp_path / "relative.db")
    assert not is_tuned_file(tmp_path / "other.db")
    assert pragmas(engine_for(tmp_path / "relative.db", engines)) == ("wal", NORMAL)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://bob:pw@db/optuna",
        "http://localhost:5000",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:///file:x.db?mode=ro&uri=true",
        "not a url",
    ],
)
def test_other_urls_are_left_alone(url: str) -> None:
    assert tune_sqlite_url(url) is False


def test_files_on_a_network_file_system_keep_sqlites_defaults(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    engines: list[Engine],
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(sqlite_tuning, "_network_file_system", lambda path: "nfs4")
    with caplog.at_level(logging.INFO, logger="lrtune.tracking.sqlite_tuning"):
        assert tune_sqlite_file(tmp_path / "shared.db") is False
    assert "nfs4" in caplog.text
    assert not is_tuned_file(tmp_path / "shared.db")
    assert pragmas(engine_for(tmp_path / "shared.db", engines)) == ("delete", FULL)


def test_network_file_systems_are_found_in_the_mount_table(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "/dev/sda1 / ext4 rw 0 0\n"
        "server:/export /mnt/nfs nfs4 rw,relatime 0 0\n"
        "tmpfs /mnt/nfs/scratch tmpfs rw 0 0\n"
        "//host/share /mnt/my\\040share cifs rw 0 0\n"
        "short\n"
    )

    def found(path: str) -> str | None:
        return sqlite_tuning._network_file_system(path, mounts=str(mounts))

    assert found("/mnt/nfs/study/lrtune.db") == "nfs4"
    assert found("/mnt/nfs") == "nfs4"
    assert found("/mnt/nfs/scratch/lrtune.db") is None  # a local mount inside the network one
    assert found("/mnt/nfsother/lrtune.db") is None  # a prefix of the name is not a parent folder
    assert found("/mnt/my share/lrtune.db") == "cifs"
    assert found("/home/me/lrtune.db") is None
    assert sqlite_tuning._network_file_system("/x.db", mounts=str(tmp_path / "missing")) is None


def test_a_locked_file_keeps_full_sync_and_still_connects(tmp_path: Path, engines: list[Engine]) -> None:
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    try:
        holder.execute("CREATE TABLE t (x INTEGER)")
        holder.execute("BEGIN IMMEDIATE")  # another process mid-write: WAL cannot be switched on now
        holder.execute("INSERT INTO t VALUES (1)")
        assert tune_sqlite_file(path)
        engine = engine_for(path, engines, connect_args={"timeout": 0.05})
        with engine.connect() as connection:
            assert connection.execute(text("PRAGMA journal_mode")).scalar() == "delete"
            assert connection.execute(text("PRAGMA synchronous")).scalar() == FULL
            assert connection.execute(text("SELECT count(*) FROM t")).scalar() == 0
        holder.execute("COMMIT")
        assert pragmas(engine) == ("wal", NORMAL)  # the next connection switches
    finally:
        holder.close()
