"""Easing the cyclic garbage collector around allocation-heavy, cycle-free work.

Parsing and validating a large document allocates hundreds of thousands of small containers
and no reference cycles; with the collector at its default thresholds, its repeated passes
over them double the time of a 50,000-step document. Reference counting frees everything
meanwhile either way.

The collector's switch and thresholds belong to the whole process, so how much is eased
depends on who else could notice:

* called from the main thread while it is the only thread, and not nested in another pause,
  the collector is paused (``gc.disable``) and re-enabled afterwards: nobody else runs
  Python code that could miss a collection (the command line, the benchmark);
* anywhere else (the planner validates in a worker thread beside its event loop and other
  workers) the collector stays enabled: only the generation-0 threshold is raised, while at
  least one such call is in progress, so collections still happen for every thread, just less
  often. The first call in raises it, the last one out restores the previous value (unless
  someone else changed the thresholds meanwhile, then theirs stand).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

RELAXED_THRESHOLD = 50_000
"""Generation-0 threshold while a threaded caller validates (CPython's default is 700)."""

_lock = threading.Lock()
_relaxed_calls = 0
_saved_threshold: tuple[int, ...] | None = None
_owned = threading.local()


@contextmanager
def gc_paused() -> Iterator[None]:
    if getattr(_owned, "pausing", False) or not gc.isenabled():
        yield  # nested in our own pause, or someone else has switched the collector off
        return
    if _alone_in_main_thread():
        _owned.pausing = True
        gc.disable()
        try:
            yield
        finally:
            gc.enable()
            _owned.pausing = False
        return
    _relax()
    try:
        yield
    finally:
        _restore()


def _alone_in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread() and threading.active_count() == 1


def _relax() -> None:
    global _relaxed_calls, _saved_threshold
    with _lock:
        _relaxed_calls += 1
        if _relaxed_calls == 1:
            current = gc.get_threshold()
            if current[0] and current[0] < RELAXED_THRESHOLD:
                _saved_threshold = current
                gc.set_threshold(RELAXED_THRESHOLD, *current[1:])


def _restore() -> None:
    global _relaxed_calls, _saved_threshold
    with _lock:
        _relaxed_calls -= 1
        if _relaxed_calls == 0 and _saved_threshold is not None:
            if gc.get_threshold()[0] == RELAXED_THRESHOLD:
                gc.set_threshold(*_saved_threshold)
            _saved_threshold = None
