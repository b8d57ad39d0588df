"""``lrtune ui`` runs MLflow's UI in its own process group: a signal to lrtune stops the whole group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from servers import free_port, port_open

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_server_and_its_children(tmp_path: Path, signum: int) -> None:
    port = free_port()
    # A stand-in for `mlflow ui`: a parent that ignores the signal and a child holding the port.
    server = tmp_path / "server.py"
    server.write_text(
        textwrap.dedent(
            f"""
            import signal, socket, subprocess, sys, time
            signal.signal(signal.SIGINT, signal.SIG_IGN)
            child = '''
            import socket, time
            sock = socket.socket(); sock.bind(("127.0.0.1", {port})); sock.listen()
            open({str(tmp_path / "child.pid")!r}, "w").write(str(__import__("os").getpid()))
            time.sleep(600)
            '''
            subprocess.Popen([sys.executable, "-c", child])
            time.sleep(600)
            """
        )
    )
    harness = (
        "import sys; from lrtune.cli import _run_group; "
        f"sys.exit(_run_group([sys.executable, {str(server)!r}]))"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", harness],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not port_open(port):
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.1)
        child = int((tmp_path / "child.pid").read_text())
        os.kill(process.pid, signum)  # lrtune alone, as a process manager or `kill` does
        assert process.wait(30) == 128 + signum
        assert not port_open(port)
        with pytest.raises(ProcessLookupError):
            os.kill(child, 0)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


def test_ui_names_the_runs_page_of_an_experiment_in_the_model_training_view(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from lrtune.cli import cli
    from lrtune.tracking import TrackingSettings, experiment_id, open_client

    monkeypatch.chdir(tmp_path)
    settings = TrackingSettings(tracking_uri="sqlite:///mlflow.db", experiment="night")
    client = open_client(settings)
    number = experiment_id(client, settings)
    assert client.get_experiment(number).tags["mlflow.experimentKind"] == "custom_model_development"
    calls: list[list[str]] = []
    monkeypatch.setattr("lrtune.cli._run_group", lambda command: calls.append(command) or 0)
    result = CliRunner().invoke(cli, ["ui", "--experiment", "night", "--port", "5077"])
    assert result.exit_code == 0, result.output
    assert f"http://127.0.0.1:5077/#/experiments/{number}/runs?workflowType=machine_learning" in result.output
    assert len(calls) == 1
    missing = CliRunner().invoke(cli, ["ui", "--experiment", "nope"])
    assert missing.exit_code == 2 and "no MLflow experiment 'nope'" in missing.output and not calls[1:]
