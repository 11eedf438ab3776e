"""Ctrl-C while a job runs in this process: the first cancels it with a grace period, the second
stops what still runs at once (as ``theodolite cancel JOB --grace S`` does on a cluster)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator

__all__ = ["cancel_on_interrupt"]


@contextlib.contextmanager
def cancel_on_interrupt(cancel: Callable[[float], None], *, grace_s: float, say: Callable[[str], None]) -> Iterator[None]:
    """While the block runs (in the main thread), SIGINT calls ``cancel(grace_s)`` the first
    time and ``cancel(0)`` after, each on a thread of its own (a signal handler must not wait
    for the runner's lock), and tells the person what happens with ``say``."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    presses = 0

    def on_interrupt(_signum: int, _frame: object) -> None:
        nonlocal presses
        presses += 1
        if presses == 1:
            say(f"cancelling: running steps may finish within {grace_s:g} s; Ctrl-C again to stop them now")
            threading.Thread(target=cancel, args=(grace_s,), name="theodolite-cancel", daemon=True).start()
        else:
            say("stopping the running steps now")
            threading.Thread(target=cancel, args=(0.0,), name="theodolite-cancel", daemon=True).start()

    previous = signal.signal(signal.SIGINT, on_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
