"""Errors raised by lrtune.

The library raises these; the CLI maps them to exit codes in one place
(:func:`lrtune.cli.main`). Anything the user can fix by changing their input is
a :class:`UsageError` (exit code 2); failures outside the user's control are a
plain :class:`LrtuneError` (exit code 1).

Example:
    >>> from lrtune.errors import UsageError
    >>> UsageError("start_lr must be below end_lr").exit_code
    2
"""

from __future__ import annotations


class LrtuneError(Exception):
    """Base class of every error lrtune raises on purpose."""

    exit_code = 1


class UsageError(LrtuneError, ValueError):
    """The user's input is wrong: bad option, bad file, unknown name.

    It is also a :class:`ValueError`, so settings objects validated in
    ``__post_init__`` raise it and Python callers can catch either.
    """

    exit_code = 2


class TaskError(UsageError):
    """A task cannot be loaded or built (unknown name, broken module, bad return value)."""


class DataUnavailableError(UsageError):
    """A dataset is missing locally and cannot be downloaded."""


class DeviceError(UsageError):
    """The requested device is not available (e.g. ``--device cuda`` without a GPU)."""


def one_line(exc: BaseException, *, limit: int = 300, last: bool = False) -> str:
    """An exception's message as one short line: what a user needs to see, without a traceback.

    Args:
        exc: the exception.
        limit: longest result; longer messages are cut with ``...``.
        last: take the last non-empty line instead of the first (for errors that put the cause last).

    Example:
        >>> one_line(RuntimeError("disk full\\nwhile writing x"))
        'disk full'
        >>> one_line(ValueError(""))
        'ValueError'
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = (lines[-1] if last else lines[0]) if lines else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
