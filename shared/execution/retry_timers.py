"""Delayed retries for the embedded runner: one timer thread for every waiting step.

A step whose attempt failed and whose task retries waits ``delay_s`` before it runs again. It
waits here, not in a runner thread: a runner thread (and its child process) serves other steps
meanwhile, as a worker slot does in a cluster, where the planner's timers play this part. One
thread serves any number of waiting steps (a fan-out whose steps all fail waits on one heap, not
on thousands of ``threading.Timer`` threads).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["RetryTimers"]


class RetryTimers:
    """Calls ``due(name)`` once each scheduled step's delay has passed (on the timer thread;
    ``due`` must be quick, e.g. put the name on a queue). Started on first use; :meth:`close`
    ends the thread and drops what is still waiting."""

    def __init__(self, due: Callable[[str], None], *, clock: Callable[[], float] = time.monotonic) -> None:
        self._due = due
        self._clock = clock
        self._heap: list[tuple[float, int, str]] = []
        self._waiting: set[str] = set()
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    def schedule(self, name: str, delay_s: float) -> None:
        """Run ``name`` again in ``delay_s`` seconds (a step waits at most once at a time)."""
        with self._changed:
            if self._closed:
                return
            heapq.heappush(self._heap, (self._clock() + max(0.0, delay_s), next(self._order), name))
            self._waiting.add(name)
            if self._thread is None:
                self._thread = threading.Thread(target=self._serve, name="theodolite-retry-timers", daemon=True)
                self._thread.start()
            self._changed.notify()

    def cancel_all(self) -> list[str]:
        """Drop every waiting step (its job is stopping); the names, in due order."""
        with self._changed:
            names = [name for _, _, name in sorted(self._heap)]
            self._heap.clear()
            self._waiting.clear()
            self._changed.notify()
            return names

    @property
    def waiting(self) -> frozenset[str]:
        with self._changed:
            return frozenset(self._waiting)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._heap.clear()
            self._waiting.clear()
            self._changed.notify()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            with self._changed:
                while not self._closed and (not self._heap or self._heap[0][0] > self._clock()):
                    self._changed.wait(None if not self._heap else self._heap[0][0] - self._clock())
                if self._closed:
                    return
                _, _, name = heapq.heappop(self._heap)
                self._waiting.discard(name)
            self._due(name)
