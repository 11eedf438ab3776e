"""The MongoDB store: one AsyncMongoClient per process, every transition a compare-and-set.

Layout (database ``THEODOLITE_DB``):

* ``jobs``: one document per job (``_id`` = job id): state, the validated document
  (zlib-compressed JSON), parameters, step names in document order, first error.
* ``steps``: one document per step that has *done* something (``_id`` = ``job:step``,
  unique ``(job, step)``): state, attempt, device, worker, lease, error, and — once
  succeeded — its encoded outputs. A step without a document is pending (or dispatched, see
  ``dispatched``); writing 5,000 pending documents up front cost more than running 5,000 no-op
  steps, so documents are created by the first write that concerns the step: a worker's claim
  or result, or the planner marking it waiting, skipped or cancelled. Every such write is an
  upsert guarded by the step's state.
* ``dispatched``: one document per dispatch round of a job (``job``, ``steps``, ``at``): which
  steps the planner has queued, for monitors (``queued_steps``); written after publishing. A worker's final write is a compare-and-set: the step must be unfinished
  at an attempt no newer than the worker's (or running under the worker's own attempt).
  A redelivered step finds the step finished and records nothing; a late duplicate of an
  older attempt matches nothing and cannot overwrite the newer one (the upsert then hits
  the unique ``_id`` and is reported as not recorded).
* ``events``: job-level events and rejected or dead-lettered messages, for people.
* GridFS bucket ``values``: arrays and byte strings above the threshold.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bson
from bson import Binary, ObjectId
from gridfs import AsyncGridFSBucket
from gridfs.errors import NoFile
from pymongo import AsyncMongoClient, ReturnDocument, UpdateOne
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError, ServerSelectionTimeoutError

from shared import codec
from shared.constants import ARTIFACT_INPUTS, DISPATCHED, EVENTS, GRIDFS_BUCKET, JOBS, STEPS
from shared.distributed_errors import CodecError, StoreError, StoreUnreachable, connection_reason
from shared.document.model import JobDocument
from shared.resource import AsyncResource
from shared.settings import Settings, redact_url
from shared.store.states import ACTIVE_JOB_STATES, FINAL_STEP_STATES, NOT_STARTED_STATES

DUPLICATE_KEY = 11000
SPILLED = "outputs-blob"


def step_id(job_id: str, step: str) -> str:
    return f"{job_id}:{step}"


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    state: str
    document: JobDocument
    parameters: dict[str, Any]
    step_names: list[str]
    fail_fast: bool
    error: dict[str, Any] | None


@dataclass
class Finish:
    """One step's final write (see :meth:`Store.finish_many`)."""

    job_id: str
    step: str
    attempt: int
    worker_id: str
    succeeded: bool
    outputs: codec.Encoded | None = None
    error: Mapping[str, Any] | None = None
    duration_s: float = 0.0


def _unfinished_at(attempt: int, *, running: bool = True) -> dict[str, Any]:
    """Filter: a step not finished, at an attempt no newer than ``attempt``.

    With ``running``, a step some worker is running counts as unfinished too (its final
    write may come from another holder of the same or an older claim: the first final
    write wins). Written without ``$or``, which some servers answer by a full scan.
    """
    states = [*NOT_STARTED_STATES, "running"] if running else list(NOT_STARTED_STATES)
    return {"state": {"$in": states}, "attempt": {"$lte": attempt}}


@dataclass(frozen=True)
class StepRecord:
    step: str
    state: str
    attempt: int
    device: str
    worker: str | None = None
    error: dict[str, Any] | None = None


class Store(AsyncResource):
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
        await self.db[EVENTS].create_index([("job_id", 1), ("at", 1)])
        await self.db[DISPATCHED].create_index([("job", 1)])

    # jobs ---------------------------------------------------------------------------------
    async def insert_job(
        self, job_id: str, document: JobDocument, parameters: Mapping[str, Any], *,
        name: str, fail_fast: bool, submitted_at: float,
    ) -> bool:
        """Store a new job as pending; False when it exists already (a redelivered submission)."""
        encoded = codec.encode(dict(parameters), threshold_bytes=self.settings.max_inline_outputs_bytes)
        doc = {
            "_id": job_id, "state": "pending", "name": name, "fail_fast": fail_fast,
            "document": Binary(zlib.compress(document.model_dump_json().encode("utf-8"), 1)),
            "parameters": encoded.tree, "step_names": list(document.steps),
            "submitted_at": submitted_at, "created_at": time.time(), "error": None,
        }
        try:
            await self.db[JOBS].insert_one(doc)
        except DuplicateKeyError:
            return False
        return True

    async def insert_rejected_job(self, job_id: str, name: str, problems: list[str]) -> None:
        doc = {"_id": job_id, "state": "failed", "name": name, "step_names": [], "problems": problems,
               "error": {"step": "document", "type": "InvalidDocument", "message": "; ".join(problems)},
               "created_at": time.time(), "finished_at": time.time()}
        try:
            await self.db[JOBS].insert_one(doc)
        except DuplicateKeyError:
            pass

    async def job_state(self, job_id: str) -> dict[str, Any] | None:
        return await self.db[JOBS].find_one({"_id": job_id}, {"document": 0, "parameters": 0})

    async def load_job(self, job_id: str) -> JobRecord | None:
        doc = await self.db[JOBS].find_one({"_id": job_id})
        if doc is None or "document" not in doc:
            return None
        document = JobDocument.model_validate_json(zlib.decompress(bytes(doc["document"])))
        return JobRecord(
            job_id=job_id, state=doc["state"], document=document, parameters=codec.decode(doc["parameters"]),
            step_names=list(doc["step_names"]), fail_fast=bool(doc.get("fail_fast", True)), error=doc.get("error"),
        )

    async def set_job_state(self, job_id: str, expected: Sequence[str], state: str, **fields: Any) -> bool:
        """Compare-and-set of a job's state; False when it was not in an ``expected`` state."""
        update = {"$set": {"state": state, **fields}}
        found = await self.db[JOBS].find_one_and_update(
            {"_id": job_id, "state": {"$in": list(expected)}}, update, projection={"_id": 1},
        )
        return found is not None

    async def active_job_ids(self) -> list[str]:
        return [doc["_id"] async for doc in self.db[JOBS].find({"state": {"$in": list(ACTIVE_JOB_STATES)}}, {"_id": 1})]

    # steps: planner side ------------------------------------------------------------------
    async def insert_steps(self, job_id: str, document: JobDocument) -> None:
        """One pending document per step; existing ones (a redelivered job) are kept."""
        docs = [
            {"_id": step_id(job_id, name), "job": job_id, "step": name, "task": step.task,
             "device": document.tasks[step.task].device, "state": "pending", "attempt": 0}
            for name, step in document.steps.items()
        ]
        for start in range(0, len(docs), 5000):
            try:
                await self.db[STEPS].insert_many(docs[start:start + 5000], ordered=False)
            except BulkWriteError as error:
                if any(e.get("code") != DUPLICATE_KEY for e in error.details.get("writeErrors", [])):
                    raise StoreError(f"storing the steps of job {job_id} failed: {error}") from error

    async def step_records(self, job_id: str) -> dict[str, StepRecord]:
        cursor = self.db[STEPS].find({"job": job_id}, {"step": 1, "state": 1, "attempt": 1, "device": 1, "worker": 1, "error": 1})
        return {
            d["step"]: StepRecord(d["step"], d["state"], int(d.get("attempt", 0)), d.get("device", "cpu"), d.get("worker"), d.get("error"))
            async for d in cursor
        }

    async def mark_queued(self, job_id: str, names: Sequence[str]) -> None:
        """Record a dispatch round: one document, however many steps (see the module docstring)."""
        for start in range(0, len(names), 10000):
            await self.db[DISPATCHED].insert_one({"job": job_id, "steps": list(names[start:start + 10000]), "at": time.time()})

    async def queued_steps(self, job_id: str) -> set[str]:
        """Steps dispatched and not yet finished (pending steps have no document at all)."""
        dispatched = {name async for doc in self.db[DISPATCHED].find({"job": job_id}, {"steps": 1}) for name in doc["steps"]}
        finished = {doc["step"] async for doc in self.db[STEPS].find({"job": job_id, "state": {"$in": list(FINAL_STEP_STATES)}}, {"step": 1})}
        return dispatched - finished

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

    async def requeue(self, job_id: str, step: str, attempt: int, *, reason: str) -> int | None:
        """A lost claim (expired lease): running/queued attempt N -> queued attempt N+1."""
        found = await self.db[STEPS].find_one_and_update(
            {"_id": step_id(job_id, step), "attempt": attempt, "state": {"$in": ["queued", "waiting", "running"]}},
            {"$set": {"state": "queued", "queued_at": time.time(), "requeue_reason": reason, "lease_until": None},
             "$inc": {"attempt": 1}},
            projection={"attempt": 1}, return_document=ReturnDocument.AFTER,
        )
        return None if found is None else int(found["attempt"])

    async def mark_not_started(self, job_id: str, names: Sequence[str], state: str) -> None:
        """Skip or cancel steps that have not started (a claimed step keeps running)."""
        if not names:
            return
        await self._upsert_unstarted(job_id, names, NOT_STARTED_STATES, {"state": state, "finished_at": time.time()})

    async def set_waiting(self, job_id: str, names: Sequence[str], waiting: bool) -> None:
        if not names:
            return
        if waiting:
            await self._upsert_unstarted(job_id, names, ("pending", "queued"), {"state": "waiting"})
            return
        await self.db[STEPS].update_many(
            {"_id": {"$in": [step_id(job_id, n) for n in names]}, "state": "waiting"}, {"$set": {"state": "queued"}},
        )

    async def fail_step(self, job_id: str, step: str, error: Mapping[str, Any]) -> bool:
        """A step the planner fails itself (dead-lettered): any unfinished state -> failed."""
        found = await self.db[STEPS].find_one_and_update(
            {"_id": step_id(job_id, step), "state": {"$nin": list(FINAL_STEP_STATES)}},
            {"$set": {"state": "failed", "error": dict(error), "finished_at": time.time()}}, projection={"_id": 1},
        )
        return found is not None

    async def expired_leases(self, job_ids: Iterable[str], now: float) -> list[dict[str, Any]]:
        cursor = self.db[STEPS].find(
            {"state": "running", "lease_until": {"$lt": now}, "job": {"$in": list(job_ids)}},
            {"job": 1, "step": 1, "attempt": 1, "worker": 1},
        )
        return [doc async for doc in cursor]

    async def finished_since(self, job_ids: Iterable[str], since: float) -> list[dict[str, Any]]:
        """Steps finished by workers since ``since`` (to catch a notice that was never sent)."""
        cursor = self.db[STEPS].find(
            {"job": {"$in": list(job_ids)}, "state": {"$in": ["succeeded", "failed"]}, "finished_at": {"$gte": since}},
            {"job": 1, "step": 1, "attempt": 1, "state": 1, "worker": 1, "error": 1},
        )
        return [doc async for doc in cursor]

    # steps: worker side -------------------------------------------------------------------
    async def claim(self, job_id: str, step: str, attempt: int, worker_id: str, *, take_over: bool) -> bool:
        """Not started -> running for this attempt, with a lease. ``take_over`` (a redelivered
        message: its previous holder lost its channel) also takes a running claim of this
        attempt. Upserts: the planner may not have stored the step yet."""
        now = time.time()
        try:
            result = await self.db[STEPS].update_one(
                {"_id": step_id(job_id, step), **_unfinished_at(attempt, running=take_over)},
                {"$set": {"job": job_id, "step": step, "state": "running", "attempt": attempt, "worker": worker_id,
                          "started_at": now, "lease_until": now + self.settings.lease_s}},
                upsert=True,
            )
        except DuplicateKeyError:
            return False
        return result.matched_count == 1 or result.upserted_id is not None

    async def step_doc(self, job_id: str, step: str) -> dict[str, Any] | None:
        return await self.db[STEPS].find_one({"_id": step_id(job_id, step)}, {"outputs": 0})

    async def renew_leases(self, claims: Iterable[tuple[str, str, int]], worker_id: str) -> None:
        until = time.time() + self.settings.lease_s
        ops = [
            UpdateOne({"_id": step_id(job, step), "attempt": attempt, "state": "running", "worker": worker_id},
                      {"$set": {"lease_until": until}})
            for job, step, attempt in claims
        ]
        if ops:
            await self.db[STEPS].bulk_write(ops, ordered=False)

    async def finish(
        self, job_id: str, step: str, attempt: int, worker_id: str, *, succeeded: bool,
        outputs: codec.Encoded | None, error: Mapping[str, Any] | None, duration_s: float,
    ) -> bool:
        """The step's final write; True only for the one write that finished it."""
        (recorded,) = await self.finish_many([Finish(job_id, step, attempt, worker_id, succeeded, outputs, error, duration_s)])
        return recorded

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
                "state": "succeeded" if item.succeeded else "failed", "worker": item.worker_id,
                "finished_at": now, "duration_s": item.duration_s, "lease_until": None,
            }
            ids: list[ObjectId] = []
            if item.outputs is not None:
                ids = await self.upload(item.outputs.blobs)
                tree = item.outputs.tree
                if item.outputs.inline_bytes > self.settings.max_inline_outputs_bytes:
                    spilled = await self._spill(tree)
                    ids.append(spilled["file"])
                    tree = spilled
                fields["outputs"] = tree
            if item.error is not None:
                fields["error"] = dict(item.error)
            blobs.append(ids)
            writes.append(({"_id": step_id(item.job_id, item.step), **_unfinished_at(item.attempt)}, {"$set": fields}))
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

    async def upstream_outputs(self, job_id: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Decoded outputs of finished upstream steps (GridFS values fetched)."""
        if not names:
            return {}
        cursor = self.db[STEPS].find({"_id": {"$in": [step_id(job_id, n) for n in names]}, "state": "succeeded"}, {"step": 1, "outputs": 1})
        trees = {doc["step"]: doc.get("outputs") or {} async for doc in cursor}
        return {name: await self.load_outputs(tree) for name, tree in trees.items()}

    async def all_outputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        cursor = self.db[STEPS].find({"job": job_id}, {"step": 1, "state": 1, "outputs": 1, "error": 1, "duration_s": 1})
        docs = [doc async for doc in cursor]
        return {doc["step"]: {"state": doc["state"], "outputs": await self.load_outputs(doc.get("outputs") or {}),
                              "error": doc.get("error"), "duration_s": doc.get("duration_s")} for doc in docs}

    # artifact inputs ----------------------------------------------------------------------
    async def save_artifact_inputs(self, job_id: str, values: Mapping[str, Mapping[str, Any]]) -> None:
        """Store a job's artifact inputs (name -> named outputs) before the job is submitted."""
        trees: dict[str, Any] = {}
        for name, outputs in values.items():
            encoded = codec.encode(dict(outputs), threshold_bytes=self.settings.gridfs_threshold_bytes)
            await self.upload(encoded.blobs)
            trees[name] = encoded.tree
        await self.db[ARTIFACT_INPUTS].replace_one({"_id": job_id}, {"_id": job_id, "values": trees}, upsert=True)

    async def load_artifact_inputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        doc = await self.db[ARTIFACT_INPUTS].find_one({"_id": job_id})
        if doc is None:
            return {}
        return {name: await self.load_outputs(tree) for name, tree in (doc.get("values") or {}).items()}

    # values -------------------------------------------------------------------------------
    async def load_outputs(self, tree: Mapping[str, Any]) -> dict[str, Any]:
        if tree.get(codec.TAG) == SPILLED:
            tree = bson.decode(await self._download(tree["file"]))["outputs"]
        ids = codec.collect_file_ids(tree)
        blobs = dict(zip(ids, await asyncio.gather(*(self._download(i) for i in ids)))) if ids else {}
        if not tree:
            return {}
        value = codec.decode(tree, blobs)
        if not isinstance(value, dict):
            raise CodecError("", "stored step outputs are not a mapping")
        return value

    async def upload(self, blobs: Sequence[codec.Blob]) -> list[ObjectId]:
        bucket = self._require_bucket()
        await asyncio.gather(*(bucket.upload_from_stream_with_id(b.file_id, str(b.file_id), b.data, metadata=b.metadata) for b in blobs))
        return [b.file_id for b in blobs]

    async def delete_files(self, ids: Iterable[ObjectId]) -> None:
        bucket = self._require_bucket()
        for file_id in ids:
            try:
                await bucket.delete(file_id)
            except NoFile:
                pass

    async def _spill(self, tree: Mapping[str, Any]) -> dict[str, Any]:
        data = bson.encode({"outputs": tree})
        blob = codec.Blob(ObjectId(), data, {"kind": SPILLED, "nbytes": len(data)})
        await self.upload([blob])
        return {codec.TAG: SPILLED, "file": blob.file_id, "nbytes": len(data)}

    async def _download(self, file_id: ObjectId) -> bytes:
        bucket = self._require_bucket()
        try:
            stream = await bucket.open_download_stream(file_id)
        except NoFile:
            raise CodecError("", f"stored file {file_id} is missing") from None
        return bytes(await stream.read())

    def _require_bucket(self) -> AsyncGridFSBucket:
        if self._bucket is None:
            raise StoreError("the store is not open")
        return self._bucket

    # events -------------------------------------------------------------------------------
    async def record_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        if events:
            await self.db[EVENTS].insert_many([dict(e) for e in events], ordered=False)

    async def events(self, job_id: str | None = None, type_prefix: str | None = None) -> list[dict[str, Any]]:
        query: dict[str, Any] = {}
        if job_id is not None:
            query["job_id"] = job_id
        docs = [doc async for doc in self.db[EVENTS].find(query, {"_id": 0}).sort("at", 1)]
        if type_prefix is not None:
            docs = [d for d in docs if str(d.get("type", "")).startswith(type_prefix)]
        return docs
