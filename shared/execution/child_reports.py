"""A child process's side of the task context: live reports to its parent during a call.

While a task runs, the child may send *progress frames* before its reply, on the same pipe
(``{"progress": {"metrics": [...]}}`` as a metric is logged, ``{"progress": {"logs": "..."}}``
every :data:`LOG_FLUSH_S` with what the task printed since); the parent's slot hands them to
its ``on_progress`` hook and goes on waiting for the reply (:mod:`shared.execution.process_pool`).
Frames and the reply share one lock: the task's thread and the log flusher both send.

A cancellation reaches the child as ``SIGUSR1`` (see :class:`ChildCancel`): ``cancelled()``
turns true at once, and the parent kills the child if the task has not returned by the end
of the grace period.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from shared import codec
from shared.execution import wire
from shared.execution.capture import Capture
from shared.task_context import MAX_ARTIFACTS_PER_ATTEMPT, MAX_METRICS_PER_ATTEMPT, Metric

__all__ = ["CANCEL_SIGNAL", "LOG_FLUSH_S", "ChildCancel", "ChildReports"]

LOG_FLUSH_S = 1.0
"""How often a running task's new output is sent to the parent (live ``logs --follow``)."""
CANCEL_SIGNAL = signal.SIGUSR1


class ChildCancel:
    """The child's cancel flag, set by :data:`CANCEL_SIGNAL` and cleared before each call."""

    def __init__(self) -> None:
        self.flag = threading.Event()

    def install(self) -> None:
        signal.signal(CANCEL_SIGNAL, lambda *_: self.flag.set())


class ChildReports:
    """The task context's sink in a child: metrics go to the parent at once, artifacts are kept
    for the reply, the cancel flag is the child's."""

    def __init__(self, conn: Connection, lock: threading.Lock, cancel: ChildCancel) -> None:
        self.conn = conn
        self.lock = lock
        self.cancel = cancel
        self.metrics = 0
        self.dropped_metrics = 0
        self.artifacts: dict[str, Any] = {}

    def metric(self, metric: Metric) -> None:
        if self.metrics >= MAX_METRICS_PER_ATTEMPT:
            self.dropped_metrics += 1
            return
        self.metrics += 1
        self.send({"metrics": [metric.model_dump()]})

    def artifact(self, name: str, value: Any) -> None:
        if name not in self.artifacts and len(self.artifacts) >= MAX_ARTIFACTS_PER_ATTEMPT:
            raise ValueError(f"a step may log at most {MAX_ARTIFACTS_PER_ATTEMPT} artifacts")
        self.artifacts[name] = value

    def cancelled(self) -> bool:
        return self.cancel.flag.is_set()

    def send(self, progress: dict[str, Any]) -> None:
        with self.lock, contextlib.suppress(OSError, EOFError):
            wire.send(self.conn, {"progress": progress})

    def encoded_artifacts(self, threshold_bytes: int, for_storage: bool) -> codec.Encoded | None:
        """The logged artifacts as one codec tree (raises a CodecError naming what cannot cross)."""
        if not self.artifacts:
            return None
        return wire.encode(self.artifacts, threshold_bytes=threshold_bytes, for_storage=for_storage, path="artifacts")

    @contextlib.contextmanager
    def flushing(self, capture: Capture) -> Iterator[None]:
        """Send ``capture``'s new output every :data:`LOG_FLUSH_S` until the block ends."""
        done = threading.Event()

        def flush() -> None:
            while not done.wait(LOG_FLUSH_S):
                text = capture.take_new()
                if text:
                    self.send({"logs": text})

        thread = threading.Thread(target=flush, name="theodolite-log-flush", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
