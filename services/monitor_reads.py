"""What ``theodolite monitor`` reads from MongoDB (the other I/O side of the monitor).

* where to start the history stream (:func:`stream_start`): ``--from start`` replays from a
  little before the job was recorded (``--job``), or before the oldest job still running;
* a job's state when the events cannot tell it (:func:`load_status`: a gap, a late join), as
  the view of ``theodolite status`` (:func:`services.job_views.job_status`), its step documents
  read without their outputs;
* whether a terminal event was the job's last end (:func:`is_last_end`: a resumed job ends
  once per run).

:class:`Reads` carries out the state's requests one at a time, in the background, so that
events keep flowing while MongoDB answers (or is away).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.job_views import JobStatus, job_status
from services.monitor_feed import StreamOffset
from services.monitor_state import ConfirmEnd, LoadJob, MonitorState, Request
from shared.background import cancel_and_wait
from shared.constants import STEPS
from shared.outages import retried_read, short
from shared.states import ACTIVE_JOB_STATES, JobState
from shared.store import Store
from shared.store.queries import JobQuery

REPLAY_MARGIN_S = 60.0
"""``--from start`` replays from this long before the job was recorded (clocks of the planner
and of RabbitMQ may differ a little; earlier events of other jobs are skipped)."""
STREAM_MAX_AGE_S = 7 * 86400.0
"""What the history stream keeps (``x-max-age`` 7 days): older jobs cannot be replayed."""
END_TOLERANCE_S = 0.002
"""A terminal event is the job's last end when its ``at`` is not before the job's stored
``finished_at`` (the same value) by more than this."""
ACTIVE_JOBS_LIMIT = 1000
_STEP_FIELDS = {"step": 1, "state": 1, "worker": 1, "attempt": 1, "started_at": 1, "finished_at": 1, "duration_s": 1,
                "retry_at": 1, "error.kind": 1, "error.type": 1, "error.message": 1, "_id": 0}
log = logging.getLogger("theodolite.monitor")


@dataclass(frozen=True)
class Beginning:
    """Where the monitor starts: the history stream's offset, whether the jobs' events are
    replayed from their first, and the jobs to read from MongoDB at once."""

    offset: StreamOffset
    replay: bool
    jobs: tuple[str, ...]


async def stream_start(store: Store, job_id: str | None, replay: bool, now: float) -> Beginning:
    """Where the history stream is read from (``replay``: from a little before the job, or
    the oldest job still running, was recorded; else from now), and which jobs to read."""
    if job_id is not None:
        doc = await store.job_state(job_id)
        if not replay:
            return Beginning("next", False, (job_id,))
        if doc is None:  # not recorded yet (just submitted): its events are all to come
            return Beginning(_moment(now - REPLAY_MARGIN_S), True, (job_id,))
        finished_at = doc.get("finished_at")
        if isinstance(finished_at, int | float) and finished_at < now - STREAM_MAX_AGE_S + REPLAY_MARGIN_S:
            return Beginning("next", False, (job_id,))  # its events are gone from the stream
        return Beginning(_moment(_recorded_at(doc, now) - REPLAY_MARGIN_S), True, (job_id,))
    active = await store.find_jobs(JobQuery(states=list(ACTIVE_JOB_STATES), limit=ACTIVE_JOBS_LIMIT))
    jobs = tuple(str(doc["_id"]) for doc in reversed(active))  # oldest first
    if not replay or not active:
        return Beginning("next", False, jobs)
    return Beginning(_moment(min(_recorded_at(doc, now) for doc in active) - REPLAY_MARGIN_S), True, jobs)


def _recorded_at(doc: Mapping[str, Any], now: float) -> float:
    for key in ("created_at", "submitted_at", "started_at"):
        if isinstance(doc.get(key), int | float):
            return float(doc[key])
    return now


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(max(seconds, 0.0), UTC)


@retried_read
async def _step_documents(store: Store, job_id: str) -> list[dict[str, Any]]:
    """A job's step documents without their outputs, logs or metrics (a resync reads states)."""
    return [doc async for doc in store.db[STEPS].find({"job": job_id}, _STEP_FIELDS)]


async def load_status(store: Store, job_id: str, now: float) -> JobStatus | None:
    """The job as ``theodolite status`` shows it (without outputs); None when there is none."""
    found = await store.job_with_document(job_id)
    if found is None:
        return None
    doc, document = found
    steps = await _step_documents(store, job_id)
    dispatched = await store.dispatched_steps(job_id)
    return job_status(doc, document, steps, dispatched, now)


def is_last_end(doc: Mapping[str, Any] | None, at: float) -> bool:
    """Whether the job (its stored document) ended with the terminal event at ``at``: it is
    finished, and not since then (a job resumed and finished again has a later ``finished_at``)."""
    if doc is None:
        return True  # gone (its database dropped): nothing more will come
    if not JobState(doc["state"]).finished:
        return False  # resumed: it runs again
    finished_at = doc.get("finished_at")
    return not isinstance(finished_at, int | float) or finished_at <= at + END_TOLERANCE_S


class Reads:
    """Carries out the state's requests in order, in one background task; ``changed()`` after
    each answer. A read that fails (MongoDB away longer than the store retries) is reported
    through ``warn`` and answered as well as it can: a load as "nothing known", an end as
    confirmed (the event said so)."""

    def __init__(self, store: Store, state: MonitorState, *, changed: Callable[[], None], warn: Callable[[str], None]) -> None:
        self._store, self._state, self._changed, self._warn = store, state, changed, warn
        self._requests: asyncio.Queue[Request] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def ask(self, requests: Iterable[Request]) -> None:
        for request in requests:
            self._requests.put_nowait(request)
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="monitor-reads")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def _run(self) -> None:
        while True:
            request = await self._requests.get()
            try:
                await self._answer(request)
            except Exception as error:  # noqa: BLE001 - MongoDB away or a document we cannot read
                self._warn(f"reading job {request.job_id} from MongoDB failed: {short(error)}")
                if isinstance(request, LoadJob):
                    self._state.loaded(request, None, time.time())
                else:
                    self._state.end_checked(request, True)
            self._changed()

    async def _answer(self, request: Request) -> None:
        if isinstance(request, LoadJob):
            status = await load_status(self._store, request.job_id, time.time())
            if status is None and request.job_id == self._state.watching:
                self._warn(f"no job {request.job_id} in MongoDB yet; waiting for it")
            self._state.loaded(request, status, time.time())
        elif isinstance(request, ConfirmEnd):
            doc = await self._store.job_state(request.job_id)
            self._state.end_checked(request, is_last_end(doc, request.at))
