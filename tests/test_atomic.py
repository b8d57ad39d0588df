"""Atomic writes: a failed write leaves the old file and no temporary file behind."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lrtune.atomic import write_atomically, write_json_atomically


def test_json_is_written_and_replaces_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "best.json"
    target.write_text("old")
    write_json_atomically(target, {"a": 1.5})
    assert json.loads(target.read_text()) == {"a": 1.5}
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / "best.json"
    target.write_text("old")
    with pytest.raises(ValueError, match="Out of range float"):
        write_json_atomically(target, {"a": float("nan")})
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["best.json"]


def test_the_temporary_keeps_the_suffix_and_interrupts_propagate(tmp_path: Path) -> None:
    seen: list[Path] = []

    def write(tmp: Path) -> None:
        seen.append(tmp)
        tmp.write_bytes(b"partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomically(tmp_path / "plot.png", write)
    assert seen[0].suffix == ".png" and seen[0].parent == tmp_path
    assert list(tmp_path.iterdir()) == []
