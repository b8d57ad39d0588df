"""SIGINT/SIGTERM during a study: one exception with the right exit code, Optuna's traceback dropped."""

from __future__ import annotations

import logging
import os
import signal

import pytest

from lrtune.study.interrupts import StudyInterrupted, handle_signals


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_becomes_one_interrupt_with_its_exit_code(
    signum: int, code: int, caplog: pytest.LogCaptureFixture
) -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        with pytest.raises(StudyInterrupted) as caught, handle_signals():
            try:
                os.kill(os.getpid(), signum)  # the handler runs before the next bytecode
                for _ in range(1000):
                    pass
            except StudyInterrupted as exc:
                exc.trials.append(4)
                with caplog.at_level(logging.WARNING, logger="optuna"):
                    logging.getLogger("optuna.study._optimize").warning("Trial 4 failed with value None.")
                raise
        assert caught.value.exit_code == code
        error = caught.value.as_error()
        assert error.exit_code == code
        assert str(error) == (
            f"interrupted by {signal.Signals(signum).name}; trial 4 is marked FAIL and runs again "
            "when the same command is re-run"
        )
        assert "Trial 4 failed" not in caplog.text  # Optuna's warning (with the traceback) is dropped
        assert signal.getsignal(signum) not in before.values()  # a second signal would exit at once
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


def test_without_a_signal_the_handlers_are_restored() -> None:
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with handle_signals():
        assert signal.getsignal(signal.SIGTERM) != before[signal.SIGTERM]
    assert {s: signal.getsignal(s) for s in before} == before
    logging.getLogger("optuna.study._optimize").warning("still shown")  # the filter is gone too
    assert not logging.getLogger("optuna.study._optimize").filters
