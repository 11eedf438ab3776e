"""A request to stop one running step: seen by its task at once, enforced after a grace period.

``theodolite cancel --grace S`` (and Ctrl-C under ``run``) request it: the task's
``context.cancelled()`` turns true at once (a process-isolated task's child gets ``SIGUSR1``),
and a task still running when the grace period ends is stopped — its child process killed, or,
for a thread-isolated task, its call abandoned — and the step ends ``cancelled``
(:class:`~shared.errors.StepCancelledError`, never retried).
"""

from __future__ import annotations

import threading
import time

__all__ = ["Cancellation"]


class Cancellation:
    """Thread-safe: requested from the runner's or worker's loop, read by the slot's thread."""

    def __init__(self) -> None:
        self._requested = threading.Event()
        self._stop_at: float | None = None
        self._lock = threading.Lock()

    def request(self, grace_s: float) -> None:
        """Ask the task to stop; stop it ``grace_s`` seconds from now (a later request may
        shorten the grace, never lengthen it)."""
        with self._lock:
            at = time.monotonic() + max(0.0, grace_s)
            self._stop_at = at if self._stop_at is None else min(self._stop_at, at)
        self._requested.set()

    def requested(self) -> bool:
        return self._requested.is_set()

    def wait(self, timeout_s: float | None = None) -> bool:
        return self._requested.wait(timeout_s)

    @property
    def stop_at(self) -> float | None:
        """When the task is stopped (``time.monotonic()``); None until requested."""
        with self._lock:
            return self._stop_at
