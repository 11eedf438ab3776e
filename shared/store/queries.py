"""The store's read side for people: which jobs exist, how far each got, what one job did.

Used by ``theodolite jobs`` and ``theodolite status`` (:mod:`services.jobs_cli`). Standard
commands only, each one round trip, none loading a job's document for a listing or any GridFS
file: ``aggregate`` with ``$match`` / ``$sort`` / ``$limit`` / ``$project`` over ``jobs`` (the
step count is ``$size`` of ``step_names``, so the names are not sent), ``$match`` / ``$group``
over ``steps`` for the counts, and plain ``find`` for one job's steps. No ``$or`` (nx-27017
answers it with a full scan). Every read is retried through a MongoDB outage (``retried_read``).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.constants import DISPATCHED, JOBS, STEPS
from shared.document.model import JobDocument
from shared.outages import retried_read
from shared.settings import Settings
from shared.states import FINISHED_STEP_STATES, JobState, StepState

_FINISHED = [s.value for s in FINISHED_STEP_STATES]
_LISTED_FIELDS = ("name", "state", "labels", "error", "submitted_at", "created_at", "started_at", "finished_at")


@dataclass(frozen=True)
class JobQuery:
    """Which jobs ``theodolite jobs`` lists, newest first (by ``created_at``, the planner's clock)."""

    states: Sequence[JobState] = ()
    """Any of these states (all when empty)."""
    labels: Mapping[str, str | None] = field(default_factory=dict)
    """Every one of these labels: ``key -> value``, or ``key -> None`` for "has the key"."""
    since: float | None = None
    """Recorded at or after this time (seconds since the epoch)."""
    limit: int = 50

    def match(self) -> dict[str, Any]:
        """The ``$match`` filter of this query."""
        found: dict[str, Any] = {}
        if self.states:
            found["state"] = {"$in": [JobState(s).value for s in self.states]}
        for key, value in self.labels.items():
            found[f"labels.{key}"] = {"$exists": True} if value is None else value
        if self.since is not None:
            found["created_at"] = {"$gte": self.since}
        return found


@dataclass(frozen=True)
class StepCounts:
    """How far a job got: finished steps (any final state), failed ones, the first to fail."""

    done: int = 0
    failed: int = 0
    first_failed: str | None = None


class QueriesMixin:
    """Read-only queries of :class:`~shared.store.Store` (which owns the client)."""

    settings: Settings

    @property
    def db(self) -> Any:
        raise NotImplementedError

    @retried_read
    async def find_jobs(self, query: JobQuery) -> list[dict[str, Any]]:
        """Job documents without their document, parameters or step names; ``step_count`` added."""
        project: dict[str, Any] = {name: 1 for name in _LISTED_FIELDS}
        project["step_count"] = {"$size": "$step_names"}
        pipeline = [{"$match": query.match()}, {"$sort": {"created_at": -1}}, {"$limit": query.limit}, {"$project": project}]
        return [doc async for doc in await self.db[JOBS].aggregate(pipeline)]

    @retried_read
    async def step_counts(self, job_ids: Sequence[str]) -> dict[str, StepCounts]:
        """:class:`StepCounts` of each job (a job with no finished step is absent)."""
        if not job_ids:
            return {}
        finished = [
            {"$match": {"job": {"$in": list(job_ids)}, "state": {"$in": _FINISHED}}},
            {"$group": {"_id": "$job", "done": {"$sum": 1},
                        "failed": {"$sum": {"$cond": [{"$eq": ["$state", StepState.FAILED.value]}, 1, 0]}}}},
        ]
        first_failed = [
            {"$match": {"job": {"$in": list(job_ids)}, "state": StepState.FAILED.value}},
            {"$sort": {"finished_at": 1}},
            {"$group": {"_id": "$job", "step": {"$first": "$step"}}},
        ]
        firsts = {doc["_id"]: doc["step"] async for doc in await self.db[STEPS].aggregate(first_failed)}
        return {doc["_id"]: StepCounts(int(doc["done"]), int(doc["failed"]), firsts.get(doc["_id"]))
                async for doc in await self.db[STEPS].aggregate(finished)}

    @retried_read
    async def job_with_document(self, job_id: str) -> tuple[dict[str, Any], JobDocument | None] | None:
        """One job's document (without its parameters) and its validated job document (None for
        a rejected submission); None when there is no such job."""
        doc = await self.db[JOBS].find_one({"_id": job_id}, {"parameters": 0})
        if doc is None:
            return None
        packed = doc.pop("document", None)
        return doc, None if packed is None else _unpacked(packed)

    @retried_read
    async def step_documents(self, job_id: str) -> list[dict[str, Any]]:
        """Every stored step of a job as stored: outputs are codec trees, GridFS values not fetched."""
        return [doc async for doc in self.db[STEPS].find({"job": job_id}, {"lease_until": 0, "publisher": 0})]

    @retried_read
    async def dispatched_steps(self, job_id: str) -> set[str]:
        """The steps of a job the planner has published (a step without a document is queued if here)."""
        names: set[str] = set()
        async for doc in self.db[DISPATCHED].find({"job": job_id}, {"steps": 1, "_id": 0}):
            names.update(doc.get("steps") or [])
        return names


def _unpacked(packed: Any) -> JobDocument | None:
    """A stored job document; None if it cannot be read (written by another version): the
    job's steps are still shown, without their tasks and devices."""
    try:
        return JobDocument.model_validate_json(zlib.decompress(bytes(packed)))
    except (zlib.error, ValueError, TypeError):
        return None
