"""Giving up on a step that runs longer than its task's ``timeout``."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

from shared.errors import StepTimeoutError

T = TypeVar("T")


def call_with_timeout(step: str, timeout_s: float, call: Callable[[], T]) -> T:
    """Run ``call`` on a helper thread and raise :class:`StepTimeoutError` after ``timeout_s``.

    Python cannot stop a thread: the abandoned call keeps running in the background (its
    result is discarded), but the step fails on time and its slot is free again. Whatever
    ``call`` raises, ``SystemExit`` or any other ``BaseException`` included, is re-raised here,
    in the caller's thread (a helper thread would otherwise drop ``SystemExit`` silently).
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = call()
        except BaseException as error:  # noqa: BLE001 - re-raised in the caller
            box["error"] = error

    thread = threading.Thread(target=target, name=f"theodolite-timeout-{step}", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise StepTimeoutError(step, timeout_s)
    if "error" in box:
        raise box["error"]
    return box["value"]
