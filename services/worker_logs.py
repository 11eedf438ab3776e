"""A worker's side of step logs: live output of running steps, and each attempt's final log.

A process-isolated task's child sends what it printed about every second; the worker keeps it
per running step (capped like the final capture) and rewrites the step's log document every
:data:`LIVE_FLUSH_S` while it runs (``final: false``), so ``theodolite logs --follow`` shows it.
When the attempt ends, its final log (the capture, the traceback of a failure) is written before
the result: once a job has ended, every log of it is in MongoDB. A log is written only when the
attempt printed something or failed (a 5,000-step fan-out of quiet tasks costs no writes).
Writing a log is best effort: through a MongoDB outage it is tried a few times, then given up
with a warning, and never fails or re-runs the step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from services.worker_results import Reports
from shared.execution.capture import Capture
from shared.messages import StepDispatch
from shared.store import Store
from shared.store.logs import StepLog

log = logging.getLogger("theodolite.worker")
LIVE_FLUSH_S = 2.0
SAVE_TRIES = 3

StepKey = tuple[str, str, int]


class StepLogs:
    """Owned by one worker; :meth:`run` is its background flush loop."""

    def __init__(self, store: Store, worker_id: str, *, flush_s: float = LIVE_FLUSH_S) -> None:
        self.store = store
        self.worker_id = worker_id
        self.flush_s = flush_s
        self._live: dict[StepKey, Capture] = {}
        self._dirty: set[StepKey] = set()

    def append(self, dispatch: StepDispatch, text: str) -> None:
        """Output a running step printed (on the event loop)."""
        key = (dispatch.job_id, dispatch.step, dispatch.attempt)
        self._live.setdefault(key, Capture()).write(text)
        self._dirty.add(key)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_s)
            await self.flush()

    async def flush(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for key in dirty:
            capture = self._live.get(key)
            if capture is None:
                continue
            job_id, step, attempt = key
            await self._save(StepLog(job_id, step, attempt, self.worker_id, capture.text(), capture.dropped_bytes, final=False))

    async def final(self, dispatch: StepDispatch, reports: Reports, error: Mapping[str, Any] | None) -> None:
        """The attempt's log as it ended (nothing when it printed nothing and succeeded)."""
        key = (dispatch.job_id, dispatch.step, dispatch.attempt)
        self._live.pop(key, None)
        self._dirty.discard(key)
        traceback = str(error.get("traceback")) if error and error.get("traceback") else None
        if not reports.logs and traceback is None:
            return
        await self._save(StepLog(dispatch.job_id, dispatch.step, dispatch.attempt, self.worker_id, reports.logs,
                                 reports.logs_dropped, traceback, final=True))

    async def _save(self, entry: StepLog) -> None:
        for attempt in range(1, SAVE_TRIES + 1):
            try:
                await self.store.save_log(entry)
                return
            except Exception as error:  # noqa: BLE001 - logs are best effort; the step's result is not
                if attempt == SAVE_TRIES:
                    log.warning("the log of step %s of job %s attempt %d was not stored: %s: %s", entry.step, entry.job_id,
                                entry.attempt, type(error).__name__, error)
                    return
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.sleep(0.5 * 2 ** (attempt - 1))
