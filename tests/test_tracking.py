"""MLflow bookkeeping: secret masking, artifact locations, a finder run read back, the background writer."""

from __future__ import annotations

import logging
import math
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from mlflow.entities import Metric, Param, RunTag

from lrtune.errors import UsageError
from lrtune.tracking import (
    BatchWriter,
    TrackingSettings,
    artifact_root,
    log_finder_run,
    mask_secrets,
    sqlite_path,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("postgresql://bob:hunter2@db:5432/optuna", "postgresql://bob:***@db:5432/optuna"),
        ("postgresql+psycopg2://u:p%40ss@h/db", "postgresql+psycopg2://u:***@h/db"),
        ("mysql://u:p@h/db?password=x&charset=utf8", "mysql://u:***@h/db?password=***&charset=utf8"),
        ("sqlite:///lrtune.db", "sqlite:///lrtune.db"),
        ("http://host:5000", "http://host:5000"),
        ("see https://tok:abc@example.org/x and more", "see https://tok:***@example.org/x and more"),
    ],
)
def test_mask_secrets(text: str, expected: str) -> None:
    assert mask_secrets(text) == expected
    assert "hunter2" not in mask_secrets(text)


def test_artifact_root_sits_beside_the_sqlite_database(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path}/sub/mlflow.db"
    assert sqlite_path(uri) == tmp_path / "sub" / "mlflow.db"
    assert artifact_root(uri) == (tmp_path / "sub" / "mlartifacts").as_uri()
    assert artifact_root("sqlite:///mlflow.db") == (Path.cwd() / "mlartifacts").as_uri()
    assert artifact_root("http://localhost:5000") is None


@pytest.mark.parametrize(
    "uri",
    ["mlflow.db", "file:///tmp/mlruns", "sqlite:////nonexistent-folder-xyz/mlflow.db"],
)
def test_bad_tracking_uris_are_usage_errors(uri: str) -> None:
    with pytest.raises(UsageError):
        TrackingSettings(tracking_uri=uri)


def test_empty_experiment_name_is_rejected() -> None:
    with pytest.raises(UsageError, match="experiment"):
        TrackingSettings(experiment="  ")


def test_finder_run_is_logged_and_read_back(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    settings = TrackingSettings(tracking_uri=uri, experiment="exp-a")
    result = SimpleNamespace(
        lrs=[1e-4, 1e-3, 1e-2, 1e-1],
        losses=[2.0, 1.5, float("nan"), 3.0],
        suggested_lr=1e-3,
        lr_low=1e-4,
        lr_high=1e-2,
        spread_decades=None,
        flags=["no_divergence"],
        confidence="medium",
    )
    artifact = tmp_path / "finder.json"
    artifact.write_text("{}")
    run_id = log_finder_run(
        settings,
        result=result,
        params={"task": "digits", "storage": "postgresql://u:secret@h/db"},
        files=[artifact],
    )
    client = MlflowClient(tracking_uri=uri)
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["task"] == "digits"
    assert "secret" not in run.data.params["storage"]
    assert run.data.metrics["suggested_lr"] == pytest.approx(1e-3)
    assert run.data.tags["lrtune.flags"] == "no_divergence"
    losses = client.get_metric_history(run_id, "loss")
    assert [(m.step, m.value) for m in losses] == [(0, 2.0), (1, 1.5), (3, 3.0)]  # NaN point skipped
    assert len(client.get_metric_history(run_id, "lr")) == 4
    assert [f.path for f in client.list_artifacts(run_id)] == ["finder.json"]
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts").as_uri())

    # a second run reuses the experiment
    second = log_finder_run(settings, result=result, params={}, files=[])
    assert client.get_run(second).info.experiment_id == run.info.experiment_id


# ------------------------------------------------------------------------------ background writer
class SlowStore:
    """Records ``log_batch`` calls after ``delay`` seconds each; fails the calls listed in ``fail``."""

    def __init__(self, delay: float = 0.0, fail: tuple[int, ...] = ()) -> None:
        self.delay = delay
        self.fail = fail
        self.calls: list[tuple[str, list[Any], list[Any], list[Any]]] = []
        self.attempts = 0
        self.gate = threading.Event()
        self.gate.set()

    def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
        self.gate.wait()
        time.sleep(self.delay)
        self.attempts += 1
        if self.attempts in self.fail:
            raise ConnectionError("cannot reach http://bob:hunter2@mlflow.example:5000")
        self.calls.append((run_id, list(metrics), list(params), list(tags)))


def metrics(key: str, n: int, first: int = 0) -> list[Metric]:
    return [Metric(key, float(i), 0, first + i) for i in range(n)]


def test_the_writer_queues_without_waiting_and_keeps_the_order() -> None:
    store = SlowStore()
    store.gate.clear()  # the store hangs: logging must return all the same
    writer = BatchWriter(store, min_interval=0)
    for i in range(20):
        writer.log(f"run-{i % 2}", metrics=metrics("loss", 3, first=3 * i))
    assert store.calls == [] and writer.pending == 20
    store.gate.set()
    assert writer.flush() is True
    assert writer.pending == 0
    # neighbours of different runs are never merged: one request each, in the order queued
    assert [run_id for run_id, *_ in store.calls] == [f"run-{i % 2}" for i in range(20)]
    steps = [m.step for _, batch, _, _ in store.calls for m in batch]
    assert steps == list(range(60))


def test_the_writer_splits_requests_within_mlflows_limits() -> None:
    store = SlowStore()
    writer = BatchWriter(store)
    params = [Param(f"p{i}", str(i)) for i in range(150)]
    tags = [RunTag("lrtune.state", "RUNNING")]
    writer.log("run", metrics=metrics("lr", 2500), params=params, tags=tags)
    writer.log("run")  # nothing: no request
    writer.flush()
    shapes = [(len(m), len(p), len(t)) for _, m, p, t in store.calls]
    # split at 1000 metrics / 100 params, then neighbours merged while they fit
    assert shapes == [(1000, 0, 0), (1000, 0, 0), (500, 100, 0), (0, 50, 1)]
    assert [m.step for _, batch, _, _ in store.calls for m in batch] == list(range(2500))


def test_requests_of_one_run_wait_for_the_next_send_and_go_together() -> None:
    store = SlowStore()
    writer = BatchWriter(store, min_interval=2.0)
    writer.log("run", metrics=metrics("loss", 1))  # the first one goes at once
    writer.flush()
    for epoch in range(1, 4):
        writer.log("run", metrics=metrics("loss", 1, first=epoch))
    writer.log("other", metrics=metrics("loss", 1, first=9))
    time.sleep(0.1)
    assert len(store.calls) == 1  # held back: the next send is due 2 s after the first
    writer.flush()  # a flush does not wait for that
    assert [(run_id, [m.step for m in batch]) for run_id, batch, _, _ in store.calls] == [
        ("run", [0]),
        ("run", [1, 2, 3]),
        ("other", [9]),
    ]
    held = BatchWriter(store, min_interval=0, settle=2.0)
    held.log("run", metrics=metrics("loss", 1, first=5))
    time.sleep(0.1)
    assert len(store.calls) == 3  # every request waits ``settle`` first
    held.flush()
    assert store.calls[-1][1][0].step == 5
    quick = BatchWriter(store, min_interval=0.1)
    quick.log("run", metrics=metrics("loss", 1, first=10))
    quick.flush()
    quick.log("run", metrics=metrics("loss", 1, first=11))  # sent 0.1 s after the last send, unasked
    deadline = time.monotonic() + 10
    while quick.pending and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.calls[-1][1][0].step == 11


def test_a_failing_request_is_logged_once_masked_and_dropped(caplog: pytest.LogCaptureFixture) -> None:
    store = SlowStore(fail=(1, 3))
    writer = BatchWriter(store, min_interval=0)
    with caplog.at_level(logging.DEBUG, logger="lrtune.tracking"):
        for i in range(4):
            writer.log("run", metrics=metrics("loss", 1, first=i))
            assert writer.flush() is True  # one request each
    assert [batch[0].step for _, batch, _, _ in store.calls] == [1, 3]  # requests 1 and 3 failed
    assert writer.failures == 2
    records = [r for r in caplog.records if "could not log" in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.DEBUG]
    assert all("hunter2" not in r.getMessage() and "bob:***@" in r.getMessage() for r in records)


def test_flush_waits_for_a_slow_store_and_can_time_out() -> None:
    store = SlowStore()
    store.gate.clear()  # the store hangs
    writer = BatchWriter(store)
    writer.log("run", metrics=metrics("loss", 1))
    assert writer.flush(timeout=0.05) is False
    assert writer.pending == 2  # the request and the first flush's marker
    threading.Timer(0.1, store.gate.set).start()
    assert writer.flush() is True
    assert len(store.calls) == 1


def test_the_thread_exits_when_idle_and_comes_back() -> None:
    store = SlowStore()
    writer = BatchWriter(store, idle_seconds=0.05)
    assert writer.flush() is True  # nothing queued: no thread started
    assert writer._thread is None
    writer.log("run", metrics=metrics("loss", 1))
    thread = writer._thread
    assert thread is not None
    writer.flush()
    thread.join(timeout=5)
    assert not thread.is_alive() and writer._thread is None
    writer.log("run", metrics=metrics("loss", 1, first=1))
    writer.flush()
    assert [batch[0].step for _, batch, _, _ in store.calls] == [0, 1]
    with pytest.raises(UsageError, match="idle_seconds"):
        BatchWriter(store, idle_seconds=0)
    with pytest.raises(UsageError, match="min_interval"):
        BatchWriter(store, min_interval=-1)
    with pytest.raises(UsageError, match="settle"):
        BatchWriter(store, settle=math.nan)


def test_what_is_queued_at_exit_is_still_sent(tmp_path: Path) -> None:
    out = tmp_path / "sent.txt"
    program = f"""
import time
from types import SimpleNamespace
from lrtune.tracking import BatchWriter

class Store:
    def log_batch(self, run_id, metrics=(), params=(), tags=()):
        time.sleep(0.02)
        with open({str(out)!r}, "a") as f:
            f.write(" ".join(str(m.step) for m in metrics) + "\\n")

writer = BatchWriter(Store())
for i in range(10):
    writer.log("run", metrics=[SimpleNamespace(step=i)])
"""  # the program ends without flushing
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert out.read_text().split() == [str(i) for i in range(10)]


def test_relative_sqlite_stores_stay_in_the_folder_they_were_opened_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lrtune.tracking import absolute_sqlite_uri, open_client

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    for folder in (first, second):
        monkeypatch.chdir(folder)
        assert absolute_sqlite_uri("sqlite:///mlflow.db") == f"sqlite:///{folder / 'mlflow.db'}"
        client = open_client(TrackingSettings(experiment=f"in-{folder.name}"))
        client.create_experiment(f"made-in-{folder.name}")
        monkeypatch.chdir(tmp_path)  # a later change of folder must not move the store
        assert client.get_experiment_by_name(f"made-in-{folder.name}") is not None
    assert (first / "mlflow.db").is_file() and (second / "mlflow.db").is_file()
    assert not (tmp_path / "mlflow.db").exists()


def test_a_queued_run_end_is_sent_after_what_was_queued_before_it() -> None:
    from mlflow.entities import Metric

    calls: list[tuple[str, str]] = []

    class Store:
        def log_batch(self, run_id: str, metrics: Any = (), params: Any = (), tags: Any = ()) -> None:
            time.sleep(0.05)
            calls.append(("log", run_id))

        def set_terminated(self, run_id: str, status: str) -> None:
            calls.append((status, run_id))

    writer = BatchWriter(Store(), min_interval=0.0, settle=0.0)
    writer.log("a", metrics=[Metric("loss", 1.0, 0, 0)])
    writer.end_run("a", "FINISHED")
    writer.log("b", metrics=[Metric("loss", 1.0, 0, 0)])
    writer.end_run("b", "KILLED")
    assert writer.flush(10)
    assert calls == [("log", "a"), ("FINISHED", "a"), ("log", "b"), ("KILLED", "b")]
    assert writer.pending == 0
