"""Giving up on a thread-isolated step that runs longer than its task's ``timeout``.

Process-isolated steps are killed at their timeout instead (:mod:`shared.execution.process_pool`);
both warn at :data:`~shared.execution.options.TIMEOUT_WARNING_FRACTION` of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from shared.errors import StepTimeoutError
from shared.execution.options import TIMEOUT_WARNING_FRACTION

T = TypeVar("T")
log = logging.getLogger("theodolite.steps")
TimeoutWarning = Callable[[float, float], None]
"""``on_warning(elapsed_s, timeout_s)``: a step has run ``elapsed_s`` of its ``timeout_s``."""


def call_with_timeout(step: str, timeout_s: float, call: Callable[[], T], *,
                      on_warning: TimeoutWarning | None = None) -> T:
    """Run ``call`` on a helper thread and raise :class:`StepTimeoutError` after ``timeout_s``.

    Python cannot stop a thread: the abandoned call keeps running in the background (its
    result is discarded), but the step fails on time and its slot is free again. Whatever
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
    if on_warning is not None:
        thread.join(timeout_s * TIMEOUT_WARNING_FRACTION)
        if thread.is_alive():
            warn_safely(on_warning, time.monotonic() - started, timeout_s)
    thread.join(max(0.0, timeout_s - (time.monotonic() - started)))
    if thread.is_alive():
        raise StepTimeoutError(step, timeout_s)
    if "error" in box:
        raise box["error"]
    return box["value"]


def warn_safely(on_warning: TimeoutWarning, elapsed_s: float, timeout_s: float) -> None:
    """Call a warning hook; what it raises is logged, never charged to the step."""
    try:
        on_warning(elapsed_s, timeout_s)
    except Exception:
        log.exception("the timeout-warning hook raised")
