"""What a task prints and logs, captured per attempt and capped.

``sys.stdout`` and ``sys.stderr`` are replaced, once per process, by streams that route each
write to the capture of the thread that makes it (and on to the original stream as well, so a
worker's own output still shows it); a logging handler does the same for log records. So tasks
running side by side in threads (``isolation="thread"``) each get their own text, and in a child
process the task's thread is captured the same way. Output of threads a task starts itself, and
of C code writing to the file descriptors directly, is not captured (it still reaches the
worker's own output).

A capture keeps at most ``cap_bytes``: the first three quarters and the last quarter of what
was written, with a line saying how much was dropped in between (the start shows how a task
began, the end how it failed).
"""

from __future__ import annotations

import io
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["LOG_CAP_BYTES", "Capture", "capturing"]

LOG_CAP_BYTES = 1024 * 1024
"""What one attempt's captured output may hold (1 MiB); the rest is counted, not kept."""
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
LIVE_CAP_BYTES = 256 * 1024
"""What may wait to be sent live (:meth:`Capture.take_new`); older unsent text is dropped."""

_active: dict[int, Capture] = {}
"""Thread ident -> its capture: the routing table of the process-wide streams (guarded by _lock).
Module state by necessity: ``sys.stdout`` and the root logger are process-wide themselves."""
_lock = threading.Lock()


class Capture:
    """One attempt's output: a head kept in full, then a rolling tail."""

    def __init__(self, cap_bytes: int = LOG_CAP_BYTES) -> None:
        self.cap_bytes = max(1024, cap_bytes)
        self._head: list[str] = []
        self._head_bytes = 0
        self._tail: list[str] = []
        self._tail_bytes = 0
        self.dropped_bytes = 0
        self._unsent: list[str] = []
        self._unsent_bytes = 0
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        if not text:
            return
        size = len(text.encode("utf-8", "replace"))
        with self._lock:
            self._unsent.append(text)
            self._unsent_bytes += size
            while self._unsent_bytes > LIVE_CAP_BYTES and len(self._unsent) > 1:
                self._unsent_bytes -= len(self._unsent.pop(0).encode("utf-8", "replace"))
            head_room = self.cap_bytes * 3 // 4 - self._head_bytes
            if self._tail_bytes == 0 and size <= head_room:
                self._head.append(text)
                self._head_bytes += size
                return
            self._tail.append(text)
            self._tail_bytes += size
            limit = self.cap_bytes // 4
            while self._tail_bytes > limit and len(self._tail) > 1:
                gone = self._tail.pop(0)
                gone_bytes = len(gone.encode("utf-8", "replace"))
                self._tail_bytes -= gone_bytes
                self.dropped_bytes += gone_bytes
            if self._tail_bytes > limit:  # one write larger than the tail: keep its end
                only = self._tail[0].encode("utf-8", "replace")
                self.dropped_bytes += len(only) - limit
                self._tail = [only[-limit:].decode("utf-8", "ignore")]
                self._tail_bytes = limit

    def text(self) -> str:
        """What was kept, with a line where something was dropped."""
        with self._lock:
            middle = [f"\n... [{self.dropped_bytes} bytes of output dropped: the cap is {self.cap_bytes} bytes] ...\n"] \
                if self.dropped_bytes else []
            return "".join([*self._head, *middle, *self._tail])

    def take_new(self) -> str:
        """What was written since the last call (for live following; not capped)."""
        with self._lock:
            new, self._unsent, self._unsent_bytes = "".join(self._unsent), [], 0
            return new[-LIVE_CAP_BYTES:]


class _RoutingStream(io.TextIOBase):
    """Stands in for ``sys.stdout`` / ``sys.stderr``: writes go to the writing thread's
    capture, if it has one, and always to the original stream."""

    def __init__(self, original: TextIO) -> None:
        self.original = original

    def write(self, text: str) -> int:
        capture = _active.get(threading.get_ident())
        if capture is not None:
            capture.write(text)
        try:
            return self.original.write(text)
        except (OSError, ValueError):  # a closed worker stdout must not fail the task
            return len(text)

    def flush(self) -> None:
        try:
            self.original.flush()
        except (OSError, ValueError):
            pass

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.original, "encoding", "utf-8")

    def fileno(self) -> int:
        return self.original.fileno()


class _RoutingHandler(logging.Handler):
    """Root-logger handler: a record goes to the capture of the thread that logged it."""

    def emit(self, record: logging.LogRecord) -> None:
        capture = _active.get(record.thread or 0)
        if capture is None:
            return
        try:
            capture.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never fail a task
            self.handleError(record)


_handler = _RoutingHandler()
_handler.setFormatter(logging.Formatter(LOG_FORMAT))


def _install() -> None:
    """Put the routing streams and handler in place (once; under ``_lock``)."""
    if not isinstance(sys.stdout, _RoutingStream):
        sys.stdout = _RoutingStream(sys.stdout)
    if not isinstance(sys.stderr, _RoutingStream):
        sys.stderr = _RoutingStream(sys.stderr)
    root = logging.getLogger()
    if _handler not in root.handlers:
        root.addHandler(_handler)


@contextmanager
def capturing(cap_bytes: int = LOG_CAP_BYTES) -> Iterator[Capture]:
    """Capture this thread's prints and log records until the block ends."""
    capture = Capture(cap_bytes)
    ident = threading.get_ident()
    with _lock:
        _install()
        _active[ident] = capture
    try:
        yield capture
    finally:
        with _lock:
            _active.pop(ident, None)
