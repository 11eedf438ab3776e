"""What each step attempt printed and logged, kept in MongoDB (collection ``step_logs``).

One document per attempt, ``_id`` ``JOB/STEP#ATTEMPT``: ``text`` (the capture, already capped at
:data:`~shared.execution.capture.LOG_CAP_BYTES` by the worker) inline while it fits in
:data:`INLINE_LOG_BYTES`, else in a GridFS file named by ``file``; ``dropped_bytes`` (output
beyond the cap, counted), ``traceback`` (a failed attempt's), ``final`` (False while the step
runs: a worker rewrites the document every few seconds with what it has so far, so
``theodolite logs --follow`` shows output live) and ``updated_at``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bson import ObjectId

from shared import codec
from shared.constants import JOBS
from shared.store.values import ValuesMixin

LOGS = "step_logs"
INLINE_LOG_BYTES = 256 * 1024
"""Larger captures go to GridFS: a step document stays small, whatever a task prints."""
LOG_FILE_KIND = "step-logs"


@dataclass(frozen=True)
class StepLog:
    job_id: str
    step: str
    attempt: int
    worker: str
    text: str
    dropped_bytes: int = 0
    traceback: str | None = None
    final: bool = True
    updated_at: float = 0.0


def log_id(job_id: str, step: str, attempt: int) -> str:
    return f"{job_id}/{step}#{attempt}"


class LogsMixin(ValuesMixin):
    """Writes and reads of :class:`~shared.store.Store` for step logs."""

    async def save_log(self, log: StepLog) -> None:
        """Store (or replace) one attempt's log; a larger text goes to GridFS, and a file of an
        earlier version of the same attempt's log is deleted once replaced."""
        data = log.text.encode("utf-8", "replace")
        doc: dict[str, Any] = {
            "job": log.job_id, "step": log.step, "attempt": log.attempt, "worker": log.worker, "bytes": len(data),
            "dropped_bytes": log.dropped_bytes, "traceback": log.traceback, "final": log.final, "updated_at": time.time(),
        }
        if len(data) <= INLINE_LOG_BYTES:
            doc.update(text=log.text, file=None)
        else:
            blob = codec.Blob(ObjectId(), data, {"kind": LOG_FILE_KIND, "nbytes": len(data)})
            await self.upload([blob])
            doc.update(text=None, file=blob.file_id)
        before = await self.db[LOGS].find_one_and_update({"_id": log_id(log.job_id, log.step, log.attempt)}, {"$set": doc},
                                                         projection={"file": 1}, upsert=True)
        if before and before.get("file") and before["file"] != doc["file"]:
            await self.delete_files([before["file"]])

    async def read_logs(self, job_id: str, step: str | None = None, *, since: float | None = None) -> list[StepLog]:
        """The logs of a job (or one step), by step then attempt; ``since``: only those updated
        after that time (for following)."""
        query: dict[str, Any] = {"job": job_id}
        if step is not None:
            query["step"] = step
        if since is not None:
            query["updated_at"] = {"$gt": since}
        docs = [doc async for doc in self.db[LOGS].find(query)]
        docs.sort(key=lambda doc: (str(doc.get("step")), int(doc.get("attempt") or 0)))
        return [await self._log_of(doc) for doc in docs]

    async def _log_of(self, doc: Mapping[str, Any]) -> StepLog:
        text = doc.get("text")
        if text is None and doc.get("file") is not None:
            text = (await self._download(doc["file"])).decode("utf-8", "replace")
        return StepLog(str(doc["job"]), str(doc["step"]), int(doc.get("attempt") or 0), str(doc.get("worker") or ""),
                       str(text or ""), int(doc.get("dropped_bytes") or 0), doc.get("traceback"), bool(doc.get("final", True)),
                       float(doc.get("updated_at") or 0.0))

    async def job_state_of(self, job_id: str) -> str | None:
        """The job's state as stored (None: no such job), without loading its document."""
        doc = await self.db[JOBS].find_one({"_id": job_id}, {"state": 1})
        return None if doc is None else str(doc.get("state"))
