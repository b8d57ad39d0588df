"""Reading a schedule spec from a file: a ``best`` file or a bare spec.

Example:
    >>> import json, pathlib, tempfile
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "best.json"
    >>> _ = path.write_text(json.dumps({"schedule": {"type": "constant", "base_lr": 0.1}, "epochs": 3}))
    >>> load_schedule(path)
    {'type': 'constant', 'base_lr': 0.1}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lrtune.errors import UsageError
from lrtune.schedules.registry import parse_spec


def load_schedule(path: str | Path) -> dict[str, Any]:
    """The schedule spec in ``path``, validated, as plain JSON.

    ``path`` is either a file written by ``lrtune best --out`` (``{"schedule": {...},
    "optimizer": {...}, ...}``) or a bare spec (``{"type": "cosine", "base_lr": 0.1, ...}``).

    Raises:
        UsageError: the file is missing, is not JSON, holds no schedule, or the spec is invalid.
    """
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"schedule file not found: {file}") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read schedule file {file}: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"schedule file {file} is not valid JSON: {exc}") from None
    if isinstance(data, dict) and "schedule" in data:
        data = data["schedule"]
    if not isinstance(data, dict) or "type" not in data:
        raise UsageError(
            f'schedule file {file} holds no schedule: expected {{"schedule": {{...}}, ...}} '
            f'or a spec like {{"type": "cosine", "base_lr": 0.1}}'
        )
    try:
        parse_spec(data)
    except UsageError as exc:
        raise UsageError(f"schedule file {file}: {exc}") from None
    return data
