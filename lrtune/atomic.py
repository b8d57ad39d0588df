"""Writing files so that a reader never sees half of one: a temporary file, then a rename.

The temporary file sits in the target's own folder (a rename is atomic only within one
file system) and keeps the target's suffix, so writers that pick a format from the name
(matplotlib) still work. If writing fails, the temporary file is removed and an existing
target is left as it was.

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "spec.json"
    >>> write_json_atomically(path, {"type": "constant", "base_lr": 0.1})
    >>> path.read_text().startswith("{")
    True
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any


def write_atomically(path: str | os.PathLike[str], write: Callable[[Path], None]) -> None:
    """Call ``write(tmp)`` on a fresh temporary path beside ``path``, then rename it over ``path``."""
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp{target.suffix}")
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json_atomically(path: str | os.PathLike[str], data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON (no NaN/inf) to ``path`` atomically."""

    def write(tmp: Path) -> None:
        with open(tmp, "x", encoding="utf-8") as fh:  # "x": a fresh file with the usual permissions
            json.dump(dict(data), fh, indent=2, allow_nan=False)
            fh.write("\n")

    write_atomically(path, write)
