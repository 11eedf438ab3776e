"""The MongoDB store: one AsyncMongoClient per process, every transition a compare-and-set.

Layout (database ``THEODOLITE_DB``):

* ``jobs``: one document per job (``_id`` = job id): state, the validated document
  (zlib-compressed JSON), parameters, step names in document order, first error, the
  submitter's ``labels``, and the planner's ``control`` word to workers (``claim``, ``stop``: see
  :class:`~shared.messages.JobControl`), and ``event_seq_reserved``: the job's event numbers
  a planner has taken (docs/events.md). A rejected submission is a job in state ``rejected``
  with its ``problems``.
* ``steps``: one document per step that has *done* something (see
  :mod:`shared.store.steps`): state, attempt, device, worker, lease, error (with its
  ``kind``), and, once succeeded, its encoded outputs.
* ``dispatched``: one document per dispatch round of a job (``job``, ``steps``, ``at``),
  written after the round was published: which steps the planner has sent, for people.
* ``events``: job-level events and rejected or dead-lettered messages, for people.
* GridFS bucket ``values``: arrays and byte strings above the threshold (see
  :mod:`shared.store.values`).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from bson import Binary
from gridfs import AsyncGridFSBucket
from pymongo import AsyncMongoClient, ReturnDocument
from pymongo.errors import DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError

from shared import codec
from shared.constants import DISPATCHED, EVENTS, GRIDFS_BUCKET, JOBS, STEPS
from shared.distributed_errors import StoreError, StoreUnreachable, connection_reason
from shared.document.model import JobDocument
from shared.outages import retried_read
from shared.resource import AsyncResource
from shared.settings import Settings, redact_url
from shared.states import ACTIVE_JOB_STATES, JobState, StepState
from shared.store.lease import LeaseMixin
from shared.store.logs import LOGS, LogsMixin
from shared.store.queries import QueriesMixin
from shared.store.resume import ResumeMixin
from shared.store.steps import StepsMixin


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    state: JobState
    document: JobDocument
    parameters: dict[str, Any]
    step_names: list[str]
    fail_fast: bool
    error: dict[str, Any] | None
    claim: bool = False
    """Restored by a restarted planner: workers claim its steps before running them."""
    stop: StepState | None = None
    """The job is stopping: its steps not started become this state (skipped or cancelled)."""
    event_seq_reserved: int = 0
    """The job's event numbers taken so far (:meth:`Store.reserve_event_seq`): a planner that
    restores the job numbers its events after it."""
    seed: int = 0
    """The job's seed (its steps' task contexts get seeds derived from it and their names)."""


class Store(StepsMixin, LogsMixin, LeaseMixin, QueriesMixin, ResumeMixin, AsyncResource):
    """Owns one AsyncMongoClient (create it inside the event loop that uses it)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._client: AsyncMongoClient[dict[str, Any]] | None = None
        self._bucket: AsyncGridFSBucket | None = None

    # lifecycle ----------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        url = redact_url(self.settings.mongo_url)
        started = time.monotonic()
        try:
            client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
                self.settings.mongo_url, serverSelectionTimeoutMS=int(self.settings.connect_timeout_s * 1000),
            )
        except (PyMongoError, ValueError, TypeError) as error:  # a malformed URL or option
            raise StoreUnreachable(url, connection_reason(str(error)), hint="check THEODOLITE_MONGO_URL") from None
        try:
            await client.admin.command("ping")
        except ServerSelectionTimeoutError as error:  # not answering: one line, not PyMongo's topology dump
            await client.close()
            raise StoreUnreachable(url, connection_reason(str(error)), tried_s=time.monotonic() - started) from error
        except PyMongoError as error:  # answering but refusing, e.g. authentication
            await client.close()
            raise StoreUnreachable(url, connection_reason(str(error).split(", full error:")[0]), refused=True,
                                   hint="check the user, password and options in THEODOLITE_MONGO_URL") from error
        self._client = client
        self._bucket = AsyncGridFSBucket(client[self.settings.db], bucket_name=GRIDFS_BUCKET)

    async def close(self) -> None:
        client, self._client, self._bucket = self._client, None, None
        if client is not None:
            await client.close()

    @property
    def db(self) -> Any:
        if self._client is None:
            raise StoreError("the store is not open")
        return self._client[self.settings.db]

    async def ensure_indexes(self) -> None:
        steps = self.db[STEPS]
        await steps.create_index([("job", 1), ("step", 1)], unique=True)
        await steps.create_index([("job", 1), ("state", 1)])
        await steps.create_index([("state", 1), ("lease_until", 1)])
        await self.db[JOBS].create_index([("state", 1)])
        await self.db[JOBS].create_index([("created_at", -1)])  # theodolite jobs: newest first
        await self.db[EVENTS].create_index([("job_id", 1), ("at", 1)])
        await self.db[DISPATCHED].create_index([("job", 1)])
        await self.db[LOGS].create_index([("job", 1), ("step", 1)])

    # jobs ---------------------------------------------------------------------------------
    async def insert_job(
        self, job_id: str, document: JobDocument, parameters: Mapping[str, Any], *,
        name: str, fail_fast: bool, submitted_at: float, labels: Mapping[str, str] | None = None, seed: int = 0,
    ) -> bool:
        """Store a new job as pending; False when it exists already (a redelivered submission)."""
        encoded = codec.encode(dict(parameters), threshold_bytes=self.settings.max_inline_outputs_bytes)
        doc = {
            "_id": job_id, "state": JobState.PENDING.value, "name": name, "fail_fast": fail_fast,
            "document": Binary(zlib.compress(document.model_dump_json().encode("utf-8"), 1)),
            "parameters": encoded.tree, "step_names": list(document.steps),
            "submitted_at": submitted_at, "created_at": time.time(), "error": None, "labels": dict(labels or {}),
            "control": {"claim": False, "stop": None}, "fence": self.fence.token if self.fence else 0, "seed": int(seed),
        }
        self._guard()
        try:
            await self.db[JOBS].insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def insert_rejected_job(self, job_id: str, name: str, problems: Sequence[str], *, at: float) -> None:
        """Record a submission that never became a job (idempotent: a redelivery adds nothing)."""
        self._guard()
        doc = {"_id": job_id, "state": JobState.REJECTED.value, "name": name, "step_names": [], "problems": list(problems),
               "error": {"step": "document", "type": "InvalidDocument", "message": "; ".join(problems)},
               "created_at": at, "finished_at": at}
        try:
            await self.db[JOBS].insert_one(doc)
        except DuplicateKeyError:
            pass

    @retried_read
    async def job_state(self, job_id: str) -> dict[str, Any] | None:
        return await self.db[JOBS].find_one({"_id": job_id}, {"document": 0, "parameters": 0})

    @retried_read
    async def load_job(self, job_id: str) -> JobRecord | None:
        doc = await self.db[JOBS].find_one({"_id": job_id})
        if doc is None or "document" not in doc:
            return None
        document = JobDocument.model_validate_json(zlib.decompress(bytes(doc["document"])))
        control = doc.get("control") or {}
        return JobRecord(
            job_id=job_id, state=JobState(doc["state"]), document=document, parameters=codec.decode(doc["parameters"]),
            step_names=list(doc["step_names"]), fail_fast=bool(doc.get("fail_fast", True)), error=doc.get("error"),
            claim=bool(control.get("claim")), stop=StepState(control["stop"]) if control.get("stop") else None,
            event_seq_reserved=int(doc.get("event_seq_reserved") or 0), seed=int(doc.get("seed") or 0),
        )

    async def set_job_state(self, job_id: str, expected: Sequence[JobState], state: JobState, **fields: Any) -> bool:
        """Compare-and-set of a job's state; False when it was not in an ``expected`` state (or,
        fenced, when a planner holding a newer lease has written the job)."""
        update = {"$set": {"state": state.value, **fields, **self._fence_set()}}
        found = await self.db[JOBS].find_one_and_update(
            {"_id": job_id, "state": {"$in": [s.value for s in expected]}, **self._fence_filter()}, update, projection={"_id": 1},
        )
        return found is not None

    def _fence_filter(self) -> dict[str, Any]:
        """A fenced job write matches only a job no newer lease holder has written (every job
        document has a ``fence``: :meth:`insert_job` sets it; ``$lte`` rather than ``$not $gt``,
        which nx-27017 does not evaluate like MongoDB)."""
        self._guard()
        return {} if self.fence is None else {"fence": {"$lte": self.fence.token}}

    def _fence_set(self) -> dict[str, Any]:
        return {} if self.fence is None else {"fence": self.fence.token}

    async def reserve_event_seq(self, job_id: str, upto: int) -> bool:
        """Take the job's event numbers up to ``upto`` (``event_seq_reserved`` never goes down);
        False when the job is gone or, fenced, a planner holding a newer lease has written it:
        then the numbers are not ours to publish."""
        update: dict[str, Any] = {"$max": {"event_seq_reserved": upto}}
        if self.fence is not None:
            update["$set"] = self._fence_set()
        result = await self.db[JOBS].update_one({"_id": job_id, **self._fence_filter()}, update)
        return bool(result.matched_count)

    async def next_event_seq(self, job_id: str) -> int | None:
        """Take one event number of a job this planner does not hold (a cancel of a job no
        planner runs); None when the job is gone or fenced off."""
        doc = await self.db[JOBS].find_one_and_update({"_id": job_id, **self._fence_filter()}, {"$inc": {"event_seq_reserved": 1}},
                                                      projection={"event_seq_reserved": 1}, return_document=ReturnDocument.AFTER)
        return None if doc is None else int(doc["event_seq_reserved"])

    async def set_job_control(self, job_id: str, *, claim: bool, stop: StepState | None, grace_s: float | None = None) -> None:
        """The planner's word to workers that load the job from now on (see JobRecord)."""
        control = {"claim": claim, "stop": stop.value if stop else None, "grace_s": grace_s}
        await self.db[JOBS].update_one({"_id": job_id, **self._fence_filter()}, {"$set": {"control": control, **self._fence_set()}})

    @retried_read
    async def active_job_ids(self) -> list[str]:
        return [doc["_id"] async for doc in self.db[JOBS].find({"state": {"$in": [s.value for s in ACTIVE_JOB_STATES]}}, {"_id": 1})]

    # events -------------------------------------------------------------------------------
    async def record_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        self._guard()
        if events:
            await self.db[EVENTS].insert_many([dict(e) for e in events], ordered=False)

    @retried_read
    async def events(self, job_id: str | None = None, type_prefix: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if job_id is not None:
            query["job_id"] = job_id
        docs = [doc async for doc in self.db[EVENTS].find(query, {"_id": 0}).sort("at", 1)]
        if type_prefix is not None:
            docs = [d for d in docs if str(d.get("type", "")).startswith(type_prefix)]
        return docs
