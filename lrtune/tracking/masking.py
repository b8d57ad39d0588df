"""Keeping secrets out of everything lrtune writes: passwords in URLs and secret query parameters.

Example:
    >>> mask_secrets("postgresql://bob:hunter2@db:5432/optuna")
    'postgresql://bob:***@db:5432/optuna'
"""

from __future__ import annotations

import re

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


__all__ = ["mask_secrets"]
