"""Step documents: every write is a compare-and-set on the step's state and attempt.

A step without a document is pending (or dispatched and not started: see ``dispatched`` in
:mod:`shared.store.mongo`). Documents are created by the first write that concerns the step
(a worker's claim, skip or result; the planner marking it waiting, skipped, cancelled or
failed); every such write is an upsert guarded by the step's state, so a write that finds
the step finished, or at a newer attempt, misses its filter, hits the unique ``_id`` and is
reported as not done.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import ObjectId
from pymongo import ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError

from shared import codec
from shared.constants import DISPATCHED, STEPS
from shared.distributed_errors import StoreError
from shared.outages import retried_read
from shared.states import FINISHED_STEP_STATES, NOT_STARTED_STATES, StepState
from shared.store.lease import Fence
from shared.store.values import ValuesMixin

DUPLICATE_KEY = 11000
_UNSTARTED = [s.value for s in NOT_STARTED_STATES]


def step_id(job_id: str, step: str) -> str:
    return f"{job_id}:{step}"


def _unfinished_at(attempt: int, *, running: bool = True) -> dict[str, Any]:
    """Filter: a step not finished, at an attempt no newer than ``attempt``.

    With ``running``, a step some worker is running counts as unfinished too (its final
    write may come from another holder of the same or an older claim: the first final
    write wins). Written without ``$or``, which some servers answer by a full scan.
    """
    states = [*_UNSTARTED, StepState.RUNNING.value] if running else list(_UNSTARTED)
    return {"state": {"$in": states}, "attempt": {"$lte": attempt}}


@dataclass(frozen=True)
class StepRecord:
    step: str
    state: StepState
    attempt: int
    device: str
    worker: str | None = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None
    """Queued for a retry due at this time (see :class:`Finish`)."""

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> StepRecord:
        return cls(doc["step"], StepState(doc["state"]), int(doc.get("attempt", 0)), doc.get("device", "cpu"),
                   doc.get("worker"), doc.get("error"), doc.get("retry_at"))


@dataclass
class Finish:
    """One step's final write (see :meth:`StepsMixin.finish_many`)."""

    job_id: str
    step: str
    attempt: int
    worker_id: str
    succeeded: bool
    outputs: codec.Encoded | None = None
    error: Mapping[str, Any] | None = None
    duration_s: float = 0.0
    cancelled: bool = False
    """The task was stopped at the end of its job's cancel grace: stored ``cancelled``, with the error."""
    metrics: Sequence[Mapping[str, Any]] = ()
    """What the task logged with ``context.log_metric`` (``metrics``: the last attempt's, and each
    retried attempt's in its ``attempts`` entry)."""
    artifacts: codec.Encoded | None = None
    """What the task logged with ``context.log_artifact`` (``logged_artifacts``, stored like outputs)."""
    retry_at: float | None = None
    """A failed attempt that will be retried: the step is stored queued as the next attempt,
    due at this time, with this attempt's error kept, and the attempt is added to the step's
    history ``attempts`` (a mapping ``"1": {attempt, worker, error, finished_at, duration_s}``;
    keyed rather than pushed, so a write applied twice records it once); the planner
    dispatches the next attempt then."""


_RECORD_FIELDS = {"step": 1, "state": 1, "attempt": 1, "device": 1, "worker": 1, "error": 1, "retry_at": 1}


class StepsMixin(ValuesMixin):
    """Step reads and writes of :class:`~shared.store.Store`."""

    fence: Fence | None = None
    """Set on a planner's store while it holds the lease: its writes are checked against it
    (see :mod:`shared.store.lease`); None for workers and clients."""

    def _guard(self) -> None:
        """Before a planner write: refuse it once the lease is no longer safely held."""
        if self.fence is not None:
            self.fence.check()

    # planner side -------------------------------------------------------------------------
    @retried_read
    async def step_records(self, job_id: str) -> dict[str, StepRecord]:
        cursor = self.db[STEPS].find({"job": job_id}, _RECORD_FIELDS)
        return {d["step"]: StepRecord.from_doc(d) async for d in cursor}

    async def mark_dispatched(self, job_id: str, names: Sequence[str]) -> None:
        """Record a dispatch round (for people and monitors): one document, however many steps."""
        self._guard()
        for start in range(0, len(names), 10000):
            await self.db[DISPATCHED].insert_one({"job": job_id, "steps": list(names[start:start + 10000]), "at": time.time()})

    async def _upsert_unstarted(self, job_id: str, names: Sequence[str], states: Sequence[str], fields: Mapping[str, Any]) -> None:
        """Set ``fields`` on steps that are absent or in one of ``states``; others are left alone."""
        for start in range(0, len(names), 5000):
            ops = [UpdateOne({"_id": step_id(job_id, n), "state": {"$in": list(states)}},
                             {"$set": {"job": job_id, "step": n, **fields}, "$setOnInsert": {"attempt": 0}}, upsert=True)
                   for n in names[start:start + 5000]]
            try:
                await self.db[STEPS].bulk_write(ops, ordered=False)
            except BulkWriteError as error:
                if any(e.get("code") != DUPLICATE_KEY for e in error.details.get("writeErrors", [])):
                    raise StoreError(f"updating the steps of job {job_id} failed: {error}") from error

    async def stop_steps(self, job_id: str, names: Sequence[str], state: StepState) -> None:
        """Skip or cancel steps that have not started (a claimed step keeps running)."""
        self._guard()
        if names:
            await self._upsert_unstarted(job_id, names, _UNSTARTED, {"state": state.value, "finished_at": time.time()})

    async def set_waiting(self, job_id: str, names: Sequence[str], waiting: bool) -> None:
        self._guard()
        if not names:
            return
        if waiting:
            await self._upsert_unstarted(job_id, names, (StepState.PENDING.value, StepState.QUEUED.value), {"state": StepState.WAITING.value})
            return
        await self.db[STEPS].update_many(
            {"_id": {"$in": [step_id(job_id, n) for n in names]}, "state": StepState.WAITING.value},
            {"$set": {"state": StepState.QUEUED.value}},
        )

    async def requeue(self, job_id: str, step: str, attempt: int, *, reason: str) -> int | None:
        """A lost claim (expired lease): running/queued attempt N -> queued attempt N+1."""
        self._guard()
        found = await self.db[STEPS].find_one_and_update(
            {"_id": step_id(job_id, step), "attempt": attempt,
             "state": {"$in": [StepState.QUEUED.value, StepState.WAITING.value, StepState.RUNNING.value]}},
            {"$set": {"state": StepState.QUEUED.value, "queued_at": time.time(), "requeue_reason": reason, "lease_until": None,
                      "retry_at": None},
             "$inc": {"attempt": 1}},
            projection={"attempt": 1}, return_document=ReturnDocument.AFTER,
        )
        return None if found is None else int(found["attempt"])

    async def fail_step(self, job_id: str, step: str, attempt: int, error: Mapping[str, Any], *,
                        publisher: str = "") -> StepRecord | None:
        """The planner fails a step itself (its message was dead-lettered): absent or not started
        at an attempt no newer than ``attempt``, or running under a claim made through the same
        publisher's copy (its holder died with it) -> failed. A claim made through another copy
        is a live run elsewhere and keeps running. Returns the step as stored afterwards (a step
        that finished first keeps its outcome), None if it has no document."""
        self._guard()
        fields = {"job": job_id, "step": step, "state": StepState.FAILED.value, "attempt": attempt, "error": dict(error),
                  "finished_at": time.time(), "lease_until": None}
        try:
            result = await self.db[STEPS].update_one(
                {"_id": step_id(job_id, step), **_unfinished_at(attempt, running=False)}, {"$set": fields}, upsert=True)
            matched = result.matched_count == 1 or result.upserted_id is not None
        except DuplicateKeyError:
            matched = False
        if not matched:
            await self.db[STEPS].update_one(
                {"_id": step_id(job_id, step), "state": StepState.RUNNING.value, "attempt": attempt, "publisher": publisher},
                {"$set": fields})
        doc = await self.db[STEPS].find_one({"_id": step_id(job_id, step)}, _RECORD_FIELDS)
        return None if doc is None else StepRecord.from_doc(doc)

    @retried_read
    async def expired_leases(self, job_ids: Iterable[str], now: float) -> list[dict[str, Any]]:
        cursor = self.db[STEPS].find(
            {"state": StepState.RUNNING.value, "lease_until": {"$lt": now}, "job": {"$in": list(job_ids)}},
            {"job": 1, "step": 1, "attempt": 1, "worker": 1},
        )
        return [doc async for doc in cursor]

    @retried_read
    async def finished_since(self, job_ids: Iterable[str], since: float) -> list[dict[str, Any]]:
        """Steps finished since ``since``, and failed attempts stored since then as queued for
        their retry (to catch a worker's report that never arrived)."""
        jobs, fields = {"$in": list(job_ids)}, {"job": 1, "step": 1, "attempt": 1, "state": 1, "worker": 1, "error": 1, "retry_at": 1}
        finished = self.db[STEPS].find({"job": jobs, "state": {"$in": [s.value for s in FINISHED_STEP_STATES]},
                                        "finished_at": {"$gte": since}}, fields)
        retried = self.db[STEPS].find({"job": jobs, "state": StepState.QUEUED.value, "retried_at": {"$gte": since}}, fields)
        return [doc async for doc in finished] + [doc async for doc in retried if doc.get("retry_at") is not None]

    # worker side --------------------------------------------------------------------------
    async def claim(self, job_id: str, step: str, attempt: int, worker_id: str, *, take_over: bool, publisher: str = "") -> bool:
        """Not started -> running for this attempt, with a lease; the claim records the
        ``publisher`` of the message copy it was made through. ``take_over`` (a redelivered
        message: its previous holder lost its channel) also takes a running claim of this
        attempt made through the same publisher's copy, never one made through another copy of the step (a restarted
        planner republishes steps: both copies may be in flight, and only one may run), and
        only once that claim's lease has expired: a holder that lost only its RabbitMQ
        connection (a broker restart) is alive, runs on and renews its lease, and the copy
        RabbitMQ redelivered must not run the step a second time. (A dead holder's step is
        re-queued by the planner when the lease expires, or taken over by a copy then.)
        Upserts: the planner may not have stored the step yet."""
        now = time.time()
        fields = {"job": job_id, "step": step, "state": StepState.RUNNING.value, "attempt": attempt, "worker": worker_id,
                  "publisher": publisher, "started_at": now, "lease_until": now + self.settings.lease_s, "retry_at": None}
        try:
            result = await self.db[STEPS].update_one(
                {"_id": step_id(job_id, step), **_unfinished_at(attempt, running=False)}, {"$set": fields}, upsert=True,
            )
        except DuplicateKeyError:
            result = None
        if result is not None and (result.matched_count == 1 or result.upserted_id is not None):
            return True
        if not take_over:
            return False
        taken = await self.db[STEPS].update_one(
            {"_id": step_id(job_id, step), "state": StepState.RUNNING.value, "attempt": attempt, "publisher": publisher,
             "lease_until": {"$lt": now}}, {"$set": fields},
        )
        return taken.matched_count == 1

    async def stop_unstarted(self, job_id: str, step: str, attempt: int, state: StepState, worker_id: str) -> bool:
        """A worker does not start a step of a stopping job: not started at an attempt no newer
        than ``attempt`` -> ``state`` (skipped or cancelled). False when the step started,
        finished or moved on (then it is not this worker's to report)."""
        try:
            result = await self.db[STEPS].update_one(
                {"_id": step_id(job_id, step), **_unfinished_at(attempt, running=False)},
                {"$set": {"job": job_id, "step": step, "state": state.value, "attempt": attempt, "worker": worker_id,
                          "finished_at": time.time()}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return result.matched_count == 1 or result.upserted_id is not None

    @retried_read
    async def step_doc(self, job_id: str, step: str) -> dict[str, Any] | None:
        return await self.db[STEPS].find_one({"_id": step_id(job_id, step)}, {"outputs": 0})

    async def renew_leases(self, claims: Iterable[tuple[str, str, int]], worker_id: str) -> None:
        until = time.time() + self.settings.lease_s
        ops = [
            UpdateOne({"_id": step_id(job, step), "attempt": attempt, "state": StepState.RUNNING.value, "worker": worker_id},
                      {"$set": {"lease_until": until}})
            for job, step, attempt in claims
        ]
        if ops:
            await self.db[STEPS].bulk_write(ops, ordered=False)

    async def finish_many(self, finishes: Sequence[Finish]) -> list[bool]:
        """Final writes of many steps in one round trip; for each, whether it was recorded.

        Each write is an upserting compare-and-set (see the module docstring); a write that
        finds the step finished or at a newer attempt fails on the unique ``_id`` and is not
        recorded (its GridFS values are deleted again).
        """
        now = time.time()
        writes: list[tuple[dict[str, Any], dict[str, Any]]] = []
        blobs: list[list[ObjectId]] = []
        for item in finishes:
            fields: dict[str, Any] = {
                "job": item.job_id, "step": item.step, "attempt": item.attempt,
                "state": (StepState.SUCCEEDED if item.succeeded else StepState.CANCELLED if item.cancelled else StepState.FAILED).value,
                "worker": item.worker_id,
                "finished_at": now, "duration_s": item.duration_s, "lease_until": None,
            }
            ids: list[ObjectId] = []
            if item.retry_at is not None:  # not final: queued as the next attempt, due later
                fields.update(state=StepState.QUEUED.value, attempt=item.attempt + 1, retry_at=item.retry_at, finished_at=None,
                              retried_at=now)
            if item.outputs is not None:
                ids = await self.upload(item.outputs.blobs)
                tree = item.outputs.tree
                if item.outputs.inline_bytes > self.settings.max_inline_outputs_bytes:
                    spilled = await self.spill(tree)
                    ids.append(spilled["file"])
                    tree = spilled
                fields["outputs"] = tree
            if item.error is not None:
                fields["error"] = dict(item.error)
            if item.metrics:
                fields["metrics"] = [dict(point) for point in item.metrics]
            if item.artifacts is not None:
                ids += await self.upload(item.artifacts.blobs)
                fields["logged_artifacts"] = item.artifacts.tree
            blobs.append(ids)
            if item.retry_at is not None:  # the history, keyed by attempt: a write applied twice records it once
                fields[f"attempts.{item.attempt}"] = {"attempt": item.attempt, "worker": item.worker_id, "error": dict(item.error or {}),
                                                      "finished_at": now, "duration_s": item.duration_s,
                                                      "metrics": [dict(point) for point in item.metrics]}
            update: dict[str, Any] = {"$set": fields}
            writes.append(({"_id": step_id(item.job_id, item.step), **_unfinished_at(item.attempt)}, update))
        recorded = [True] * len(writes)
        if not writes:
            return []
        try:
            if len(writes) == 1:  # a chain's common case: the cheapest write
                await self.db[STEPS].update_one(*writes[0], upsert=True)
            else:
                await self.db[STEPS].bulk_write([UpdateOne(f, u, upsert=True) for f, u in writes], ordered=False)
        except DuplicateKeyError:
            recorded[0] = False
        except BulkWriteError as error:
            for problem in error.details.get("writeErrors", []):
                if problem.get("code") != DUPLICATE_KEY:
                    raise StoreError(f"recording step results failed: {problem.get('errmsg')}") from error
                recorded[int(problem["index"])] = False
        for ok, ids in zip(recorded, blobs):
            if not ok and ids:
                await self.delete_files(ids)
        return recorded

    @retried_read
    async def upstream_outputs(self, job_id: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Decoded outputs of finished upstream steps (GridFS values fetched)."""
        if not names:
            return {}
        cursor = self.db[STEPS].find({"_id": {"$in": [step_id(job_id, n) for n in names]}, "state": StepState.SUCCEEDED.value},
                                     {"step": 1, "outputs": 1})
        trees = {doc["step"]: doc.get("outputs") or {} async for doc in cursor}
        return {name: await self.load_outputs(tree) for name, tree in trees.items()}

    @retried_read
    async def all_outputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        cursor = self.db[STEPS].find({"job": job_id}, {"step": 1, "state": 1, "outputs": 1, "error": 1, "duration_s": 1,
                                                       "metrics": 1, "attempt": 1})
        docs = [doc async for doc in cursor]
        return {doc["step"]: {"state": doc["state"], "outputs": await self.load_outputs(doc.get("outputs") or {}),
                              "error": doc.get("error"), "duration_s": doc.get("duration_s"), "metrics": doc.get("metrics") or [],
                              "attempt": doc.get("attempt")} for doc in docs}
