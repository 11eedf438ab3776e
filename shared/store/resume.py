"""Resuming a finished job as its next run (``theodolite resume``): the planner's writes.

A resumed job stays the same job (same id, same history): the choice of Argo's ``retry`` and
Temporal's ``reset`` over a new linked job, so ``status``, ``logs`` and the events of one
experiment stay in one place. The job document gets ``run`` N+1 and keeps each earlier run's
outcome under ``runs.N`` (``{state, started_at, finished_at, error}``); each step that runs
again is put back to ``pending`` at its next attempt number, the attempt it ended with kept in
its ``attempts`` history (so its logs, keyed by attempt, are kept too). Steps that succeeded
and do not run again keep their outputs, which the new run's steps read as before.

Steps are reset first and the job last, both fenced: a planner that dies in between leaves the
job finished, and sending the resume again finishes the work.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pymongo import UpdateOne

from shared.constants import JOBS, STEPS
from shared.states import JobState, StepState
from shared.store.values import ValuesMixin

RESUMABLE = (JobState.FAILED, JobState.CANCELLED, JobState.SUCCEEDED)
_CLEARED = {"outputs": "", "error": "", "retry_at": "", "lease_until": "", "finished_at": "", "started_at": "",
            "duration_s": "", "metrics": "", "logged_artifacts": "", "publisher": ""}


def step_key(job_id: str, step: str) -> str:
    from shared.store.steps import step_id

    return step_id(job_id, step)


class ResumeMixin(ValuesMixin):
    """Writes of :class:`~shared.store.Store` that start a finished job's next run."""

    if TYPE_CHECKING:  # provided by the Store (fenced planner writes)
        def _guard(self) -> None: ...

        def _fence_filter(self) -> dict[str, Any]: ...

        def _fence_set(self) -> dict[str, Any]: ...

    async def resume_job(self, job_id: str, rerun: Sequence[str], parameters_tree: Mapping[str, Any] | None) -> int | None:
        """Start run N+1 of a finished job: ``rerun`` steps back to pending, the job pending
        again; the new run number, or None when the job is not (or no longer) finished."""
        self._guard()
        job = await self.db[JOBS].find_one({"_id": job_id}, {"state": 1, "run": 1, "started_at": 1, "finished_at": 1, "error": 1})
        if job is None or job.get("state") not in [s.value for s in RESUMABLE]:
            return None
        run = int(job.get("run") or 1)
        docs = [doc async for doc in self.db[STEPS].find({"job": job_id, "step": {"$in": list(rerun)}},
                                                           {"step": 1, "attempt": 1, "worker": 1, "error": 1, "finished_at": 1,
                                                            "duration_s": 1, "state": 1})]
        writes = []
        for doc in docs:
            attempt = int(doc.get("attempt") or 0)
            fields: dict[str, Any] = {"state": StepState.PENDING.value, "run": run + 1}
            if attempt:
                fields[f"attempts.{attempt}"] = {"attempt": attempt, "worker": doc.get("worker"), "error": doc.get("error") or {},
                                                 "finished_at": doc.get("finished_at"), "duration_s": doc.get("duration_s"),
                                                 "state": doc.get("state"), "run": run}
            writes.append(UpdateOne({"_id": doc["_id"]}, {"$set": fields, "$unset": _CLEARED, "$inc": {"attempt": 1}}))
        if writes:
            self._guard()
            await self.db[STEPS].bulk_write(writes, ordered=False)
        fields = {"state": JobState.PENDING.value, "error": None, "finished_at": None, "started_at": None, "run": run + 1,
                  "resumed_at": time.time(), "control": {"claim": False, "stop": None, "grace_s": None},
                  f"runs.{run}": {"state": job.get("state"), "started_at": job.get("started_at"),
                                  "finished_at": job.get("finished_at"), "error": job.get("error")}, **self._fence_set()}
        if parameters_tree is not None:
            fields["parameters"] = dict(parameters_tree)
        found = await self.db[JOBS].find_one_and_update(
            {"_id": job_id, "state": job["state"], **self._fence_filter()}, {"$set": fields}, projection={"_id": 1})
        return None if found is None else run + 1
