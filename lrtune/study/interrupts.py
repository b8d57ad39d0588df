"""Ctrl-C and SIGTERM during a study: stop quietly, leave everything consistent, exit 130 / 143.

Inside :func:`handle_signals`, the first SIGINT or SIGTERM raises :class:`StudyInterrupted` (a
``KeyboardInterrupt``) in the main thread. The running trial then ends as Optuna ends any trial
stopped by an exception (FAIL, so the next run runs it again), its MLflow run ends KILLED after
the background writer has sent what was queued, and the command reports one line. Optuna's own
warning with the interrupt's traceback is not shown. A second signal exits at once.

Example:
    >>> with handle_signals():
    ...     pass
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from lrtune.errors import LrtuneError

#: Signals handled, with the exit code a process stopped by each reports (128 + signal number).
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StudyInterrupted(KeyboardInterrupt):
    """A study stopped by SIGINT or SIGTERM.

    Args:
        signum: the signal.

    Attributes:
        trials: numbers of the trials this process was running (now FAIL).
    """

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum
        self.trials: list[int] = []

    @property
    def exit_code(self) -> int:
        """128 + the signal number: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + self.signum

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def as_error(self) -> LrtuneError:
        """The one-line error a command reports, with :attr:`exit_code`."""
        ran = ", ".join(str(n) for n in self.trials)
        detail = f"; trial {ran} is marked FAIL and runs again when the same command is re-run" if ran else ""
        error = LrtuneError(f"interrupted by {self.signal_name}{detail}")
        error.exit_code = self.exit_code
        return error


class _DropInterruptedTrialLogs(logging.Filter):
    """Drops Optuna's "Trial N failed ..." warnings once an interrupt was received."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.active and record.levelno >= logging.WARNING)


@contextlib.contextmanager
def handle_signals() -> Iterator[None]:
    """Turn SIGINT/SIGTERM into :class:`StudyInterrupted` (main thread only; elsewhere a no-op).

    After an interrupt the handlers stay installed, so that a second signal during the clean-up
    ends the process at once (``os._exit``) with 128 + its number.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    quiet = _DropInterruptedTrialLogs()
    optuna_logger = logging.getLogger("optuna.study._optimize")
    received: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if received:
            os._exit(128 + signum)
        received.append(signum)
        quiet.active = True
        raise StudyInterrupted(signum)

    previous = {sig: signal.signal(sig, handler) for sig in SIGNALS}
    optuna_logger.addFilter(quiet)
    try:
        yield
    finally:
        optuna_logger.removeFilter(quiet)
        if not received:
            for sig, old in previous.items():
                signal.signal(sig, old)


__all__ = ["SIGNALS", "StudyInterrupted", "handle_signals"]
