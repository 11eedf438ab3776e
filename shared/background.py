"""Ending a background task its owner started (the one place the idiom lives)."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Future[Any] | None) -> None:
    """Cancel ``task`` (if any and not done) and wait until it has ended; its cancellation is
    not re-raised here (the caller asked for it). Another exception it ends with is raised."""
    if task is None:
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
