"""Giving up on a thread-isolated step that runs longer than its task's ``timeout``, or past the
grace period of its job's cancel.

Process-isolated steps are killed at their timeout instead (:mod:`shared.execution.process_pool`);
both warn at :data:`~shared.execution.options.TIMEOUT_WARNING_FRACTION` of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from shared.errors import StepCancelledError, StepTimeoutError
from shared.execution.cancellation import Cancellation
from shared.execution.options import TIMEOUT_WARNING_FRACTION

T = TypeVar("T")
log = logging.getLogger("theodolite.steps")
CANCEL_POLL_S = 0.1
TimeoutWarning = Callable[[float, float], None]
"""``on_warning(elapsed_s, timeout_s)``: a step has run ``elapsed_s`` of its ``timeout_s``."""


def call_with_timeout(step: str, timeout_s: float | None, call: Callable[[], T], *,
                      on_warning: TimeoutWarning | None = None, cancel: Cancellation | None = None) -> T:
    """Run ``call`` on a helper thread and raise :class:`StepTimeoutError` after ``timeout_s``
    (None: no limit), or :class:`StepCancelledError` once ``cancel``'s grace period is over.

    Python cannot stop a thread: the abandoned call keeps running in the background (its
    result is discarded), but the step ends on time and its slot is free again. Whatever
    ``call`` raises, ``SystemExit`` or any other ``BaseException`` included, is re-raised here,
    in the caller's thread (a helper thread would otherwise drop ``SystemExit`` silently).
    ``on_warning`` is called (on the caller's thread) if the call is still running at 80 %.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            box["error"] = error

    started = time.monotonic()
    thread = threading.Thread(target=target, name=f"theodolite-timeout-{step}", daemon=True)
    thread.start()
    warn_at = None if timeout_s is None or on_warning is None else started + timeout_s * TIMEOUT_WARNING_FRACTION
    give_up_at = None if timeout_s is None else started + timeout_s
    while thread.is_alive():
        stop_at = cancel.stop_at if cancel is not None else None
        poll_at = time.monotonic() + CANCEL_POLL_S if cancel is not None else None  # a new request may shorten the grace
        next_at = min((t for t in (warn_at, give_up_at, stop_at, poll_at) if t is not None), default=None)
        thread.join(None if next_at is None else max(0.0, next_at - time.monotonic()))
        if not thread.is_alive():
            break
        now = time.monotonic()
        if warn_at is not None and now >= warn_at:
            warn_at = None
            assert on_warning is not None and timeout_s is not None
            warn_safely(on_warning, now - started, timeout_s)
        if give_up_at is not None and now >= give_up_at:
            assert timeout_s is not None
            raise StepTimeoutError(step, timeout_s)
        if stop_at is not None and now >= stop_at:
            raise StepCancelledError(step)
    if "error" in box:
        raise box["error"]
    return box["value"]


def warn_safely(on_warning: TimeoutWarning, elapsed_s: float, timeout_s: float) -> None:
    """Call a warning hook; what it raises is logged, never charged to the step."""
    try:
        on_warning(elapsed_s, timeout_s)
    except Exception:
        log.exception("the timeout-warning hook raised")
