"""Shared fixtures: tiny stand-ins for dataset files that cannot be downloaded here."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest


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
