"""A background writer for MLflow ``log_batch`` requests, so a training loop never waits for the store."""

from __future__ import annotations

import atexit
import logging
import math
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lrtune.errors import UsageError, one_line
from lrtune.tracking.masking import mask_secrets
from lrtune.tracking.stores import MAX_METRICS_PER_BATCH, MAX_PARAMS_PER_BATCH

logger = logging.getLogger(__name__)


@dataclass
class _Batch:
    """One ``log_batch`` request."""

    run_id: str
    metrics: list[Any]
    params: list[Any]
    tags: list[Any]

    def fits(self, other: _Batch) -> bool:
        """Whether ``other`` can join this request (same run, within MLflow's limits)."""
        return (
            other.run_id == self.run_id
            and len(self.metrics) + len(other.metrics) <= MAX_METRICS_PER_BATCH
            and len(self.params) + len(other.params) <= MAX_PARAMS_PER_BATCH
            and len(self.tags) + len(other.tags) <= MAX_PARAMS_PER_BATCH
            and self.size + other.size <= MAX_METRICS_PER_BATCH
        )

    @property
    def size(self) -> int:
        return len(self.metrics) + len(self.params) + len(self.tags)


@dataclass(frozen=True)
class _End:
    """Ending a run (``set_terminated``), sent after everything queued before it."""

    run_id: str
    status: str


class BatchWriter:
    """Sends MLflow ``log_batch`` requests from one background thread, in the order they were queued.

    :meth:`log` only queues (it never waits for the store and never raises), so a training loop
    does not wait for MLflow; :meth:`flush` waits until everything queued before it was sent:
    call it before ending a run. Requests of one run queued close together are merged (within
    MLflow's limits) and the thread sends at most once per ``min_interval`` seconds unless a
    flush asks: a store's cost is mostly per request, so a short trial costs one request at
    its end, while epochs longer than ``min_interval`` still show up in MLflow as they end. A
    request also waits ``settle`` seconds, so that what the caller does right after queueing
    it (reporting the epoch to Optuna) does not compete with the send for the interpreter.

    A request that fails is dropped and logged, the first failure as a warning (secrets
    masked), later ones at DEBUG: logging never stops training. The thread starts with the
    first request and exits after ``idle_seconds`` without one; what is still queued when the
    interpreter exits is sent before it does.

    MLflow's own asynchronous logging (``synchronous=False``) is not used: its queue is shared
    by every run of a store and its worker pool sends batches in parallel, so neither the order
    within a run nor "everything of this run is stored" at the run's end is guaranteed.

    Args:
        client: what sends the requests (an :class:`mlflow.tracking.MlflowClient`).
        min_interval: seconds from one send to the next, unless a flush asks sooner.
        settle: seconds a request waits before it is sent, unless a flush asks sooner.
        idle_seconds: how long the thread waits for more work before it exits.

    Example:
        >>> from mlflow.entities import Metric
        >>> class Store:
        ...     sent = []
        ...     def log_batch(self, run_id, metrics=(), params=(), tags=()):
        ...         self.sent.append((run_id, [(m.key, m.step) for m in metrics]))
        >>> store = Store()
        >>> writer = BatchWriter(store)
        >>> writer.log("run-1", metrics=[Metric("loss", 0.5, 0, 1), Metric("loss", 0.4, 0, 2)])
        >>> writer.flush()
        True
        >>> store.sent
        [('run-1', [('loss', 1), ('loss', 2)])]
    """

    def __init__(
        self, client: Any, *, min_interval: float = 5.0, settle: float = 0.05, idle_seconds: float = 5.0
    ) -> None:
        if not (math.isfinite(min_interval) and min_interval >= 0):
            raise UsageError(f"min_interval must be a number of seconds >= 0 {min_interval=}")
        if not (math.isfinite(settle) and settle >= 0):
            raise UsageError(f"settle must be a number of seconds >= 0 {settle=}")
        if not (math.isfinite(idle_seconds) and idle_seconds > 0):
            raise UsageError(f"idle_seconds must be a positive number of seconds {idle_seconds=}")
        self.client = client
        self.min_interval = min_interval
        self.settle = settle
        self.idle_seconds = idle_seconds
        self.failures = 0
        self._queue: queue.SimpleQueue[_Batch | _End | threading.Event] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._pending = 0
        self._thread: threading.Thread | None = None
        self._last_send = -math.inf
        _WRITERS.add(self)

    def log(
        self,
        run_id: str,
        *,
        metrics: Sequence[Any] = (),
        params: Sequence[Any] = (),
        tags: Sequence[Any] = (),
    ) -> None:
        """Queue metrics, params and tags of a run (split into requests within MLflow's limits)."""
        batches = [
            _Batch(run_id, list(metrics[i : i + MAX_METRICS_PER_BATCH]), [], [])
            for i in range(0, len(metrics), MAX_METRICS_PER_BATCH)
        ]
        batches += [
            _Batch(run_id, [], list(params[i : i + MAX_PARAMS_PER_BATCH]), [])
            for i in range(0, len(params), MAX_PARAMS_PER_BATCH)
        ]
        batches += [
            _Batch(run_id, [], [], list(tags[i : i + MAX_PARAMS_PER_BATCH]))
            for i in range(0, len(tags), MAX_PARAMS_PER_BATCH)
        ]
        if batches:
            self._put(*batches)

    def end_run(self, run_id: str, status: str) -> None:
        """Queue the end of a run: sent after everything queued before it, without waiting."""
        self._put(_End(run_id, status))

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every request queued so far was sent (or failed); False if ``timeout`` ran out."""
        with self._lock:
            if self._pending == 0:
                return True
        done = threading.Event()
        self._put(done)
        return done.wait(timeout)

    @property
    def pending(self) -> int:
        """Requests and flushes queued and not done yet."""
        with self._lock:
            return self._pending

    def _put(self, *items: _Batch | _End | threading.Event) -> None:
        with self._lock:
            for item in items:
                self._queue.put(item)
            self._pending += len(items)
            if self._thread is None:
                _register_exit_flush()
                self._thread = threading.Thread(target=self._work, name="lrtune-mlflow-writer", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        while True:
            try:
                first = self._queue.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._pending == 0:
                        self._thread = None
                        return
                continue
            self._process(self._gather(first))

    def _gather(self, first: _Batch | _End | threading.Event) -> list[_Batch | _End | threading.Event]:
        """``first`` and what arrives until the next send is due (at once when a flush waits)."""
        items = [first]
        due = max(self._last_send + self.min_interval, time.monotonic() + self.settle)
        while not isinstance(items[-1], threading.Event):
            left = due - time.monotonic()
            try:
                items.append(self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def _process(self, items: Sequence[_Batch | _End | threading.Event]) -> None:
        """Send the batches, merging neighbours of one run; a flush is done once all before it are sent."""
        merged: _Batch | None = None
        count = 0  # queued items inside ``merged``
        for item in items:
            if isinstance(item, threading.Event):
                if merged is not None:
                    self._send(merged, count)
                    merged, count = None, 0
                self._done(1)
                item.set()
            elif isinstance(item, _End):
                if merged is not None:
                    self._send(merged, count)
                    merged, count = None, 0
                try:
                    self._terminate(item)
                finally:
                    self._done(1)
            elif merged is not None and merged.fits(item):
                merged.metrics += item.metrics
                merged.params += item.params
                merged.tags += item.tags
                count += 1
            else:
                if merged is not None:
                    self._send(merged, count)
                merged, count = _Batch(item.run_id, [*item.metrics], [*item.params], [*item.tags]), 1
        if merged is not None:
            self._send(merged, count)

    def _done(self, count: int) -> None:
        with self._lock:
            self._pending -= count

    def _send(self, batch: _Batch, count: int) -> None:
        """Send one request made of ``count`` queued ones."""
        try:
            self._log(batch)
        finally:
            self._last_send = time.monotonic()
            self._done(count)

    def _terminate(self, end: _End) -> None:
        try:
            self.client.set_terminated(end.run_id, status=end.status)
        except Exception as exc:
            self.failures += 1
            logger.warning(
                "could not end MLflow run %s as %s: %s",
                end.run_id,
                end.status,
                mask_secrets(f"{type(exc).__name__}: {one_line(exc)}"),
            )

    def _log(self, batch: _Batch) -> None:
        try:
            self.client.log_batch(batch.run_id, metrics=batch.metrics, params=batch.params, tags=batch.tags)
        except Exception as exc:
            self.failures += 1
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            logger.log(
                level,
                "could not log %d values to MLflow run %s: %s%s",
                batch.size,
                batch.run_id,
                mask_secrets(f"{type(exc).__name__}: {one_line(exc)}"),
                "; later failures are logged at DEBUG" if self.failures == 1 else "",
            )


_WRITERS: weakref.WeakSet[BatchWriter] = weakref.WeakSet()
_exit_flush_registered = False


def _register_exit_flush() -> None:
    global _exit_flush_registered
    if not _exit_flush_registered:
        _exit_flush_registered = True
        atexit.register(_flush_all)


def _flush_all() -> None:
    """At interpreter exit: send what every writer still has queued."""
    for writer in list(_WRITERS):
        writer.flush()


__all__ = ["BatchWriter"]
