"""In-memory stand-ins for the worker's store, broker and messages (unit tests only).

The fake store keeps step documents with the same compare-and-set rules as
:mod:`shared.store.steps` (enough of them for the worker's writes) and records every call,
so tests can assert which MongoDB round trips a path costs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared import codec
from shared.constants import HEADER_KIND, Names
from shared.messages import StepNotice, parse_notices
from shared.settings import Settings
from shared.states import FINISHED_STEP_STATES, NOT_STARTED_STATES, StepState
from shared.store import Finish, JobRecord
from shared.transport import Outgoing

UNSTARTED = {s.value for s in NOT_STARTED_STATES}
FINISHED = {s.value for s in FINISHED_STEP_STATES}


class FakeStore:
    """The worker-side methods of :class:`shared.store.Store`, over a dict of step documents."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.jobs: dict[str, JobRecord] = {}
        self.steps: dict[tuple[str, str], dict[str, Any]] = {}
        self.outputs: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[str] = []
        self.fail: dict[str, Callable[[], BaseException]] = {}
        """Method name -> the error it raises (every call while present)."""

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.fail:
            raise self.fail[name]()

    def _unfinished(self, job_id: str, step: str, attempt: int, *, running: bool) -> bool:
        doc = self.steps.get((job_id, step))
        if doc is None:
            return True
        states = UNSTARTED | ({StepState.RUNNING.value} if running else set())
        return doc["state"] in states and doc["attempt"] <= attempt

    async def load_job(self, job_id: str) -> JobRecord | None:
        self._call("load_job")
        await asyncio.sleep(0)
        return self.jobs.get(job_id)

    async def claim(self, job_id: str, step: str, attempt: int, worker_id: str, *, take_over: bool, publisher: str = "") -> bool:
        self._call("claim")
        doc = self.steps.get((job_id, step))
        same_copy = (doc is not None and doc.get("state") == "running" and doc.get("attempt") == attempt
                     and doc.get("publisher", "") == publisher)
        if not (self._unfinished(job_id, step, attempt, running=False) or take_over and same_copy):
            return False
        self.steps[(job_id, step)] = {"state": "running", "attempt": attempt, "worker": worker_id, "publisher": publisher}
        return True

    async def stop_unstarted(self, job_id: str, step: str, attempt: int, state: StepState, worker_id: str) -> bool:
        self._call("stop_unstarted")
        if not self._unfinished(job_id, step, attempt, running=False):
            return False
        self.steps[(job_id, step)] = {"state": state.value, "attempt": attempt, "worker": worker_id}
        return True

    async def step_doc(self, job_id: str, step: str) -> dict[str, Any] | None:
        self._call("step_doc")
        doc = self.steps.get((job_id, step))
        return None if doc is None else dict(doc)

    async def finish_many(self, finishes: Sequence[Finish]) -> list[bool]:
        self._call("finish_many")
        recorded = []
        for item in finishes:
            ok = self._unfinished(item.job_id, item.step, item.attempt, running=True)
            if ok:
                self.steps[(item.job_id, item.step)] = {
                    "state": "succeeded" if item.succeeded else "failed", "attempt": item.attempt, "worker": item.worker_id,
                    "error": dict(item.error) if item.error else None, "duration_s": item.duration_s,
                }
                if item.outputs is not None:
                    self.outputs[(item.job_id, item.step)] = codec.decode(item.outputs.tree)
            recorded.append(ok)
        return recorded

    async def upstream_outputs(self, job_id: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        self._call("upstream_outputs")
        return {n: self.outputs[(job_id, n)] for n in names if (job_id, n) in self.outputs}

    async def load_artifact_inputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        self._call("load_artifact_inputs")
        return {}

    async def renew_leases(self, claims: Sequence[tuple[str, str, int]], worker_id: str) -> None:
        self._call("renew_leases")


class FakeBroker:
    """Records publishes; never connects."""

    def __init__(self, settings: Settings, *, name: str) -> None:
        self.names = Names(settings.namespace)
        self.published: list[Outgoing] = []
        self.lost = asyncio.Event()

    async def publish(self, item: Outgoing, *, timeout_s: float | None = None) -> bool:
        self.published.append(item)
        return True

    def notices(self) -> list[StepNotice]:
        found: list[StepNotice] = []
        for item in self.published:
            if item.exchange == self.names.notices_exchange:
                found.extend(parse_notices(item.body, 1 << 24))
        return found


@dataclass
class FakeMessage:
    """The parts of an aio-pika incoming message the worker and ``settle`` touch."""

    body: bytes
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    delivery_tag: int = 1
    message_id: str | None = None
    processed: bool = False
    settled: list[tuple[str, bool]] = field(default_factory=list)
    """("ack"|"nack"|"reject", requeue) in order."""
    at: list[float] = field(default_factory=list)

    async def _settle(self, how: str, requeue: bool) -> None:
        if self.processed:
            raise RuntimeError(f"{how} of a message already settled")
        self.processed = True
        self.settled.append((how, requeue))
        self.at.append(time.monotonic())

    async def ack(self, multiple: bool = False) -> None:
        await self._settle("ack", False)

    async def nack(self, multiple: bool = False, requeue: bool = True) -> None:
        await self._settle("nack", requeue)

    async def reject(self, requeue: bool = False) -> None:
        await self._settle("reject", requeue)


def control_message(body: bytes, kind: str | None = "job.control") -> FakeMessage:
    return FakeMessage(body, headers={HEADER_KIND: kind} if kind else {})
