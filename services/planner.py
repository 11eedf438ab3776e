"""The planner service: validates jobs, persists them, and drives one PlannerCore per job.

Loops (all on one event loop; the cores are only touched here):

* **jobs**: a submission is validated with the same validator as ``theodolite validate``
  (in a thread, so notices keep flowing), stored with its steps, started; a cancel
  cancels. A job the store already has (a redelivered submission) is resumed instead.
* **notices**: completion notices are drained in batches; each batch is applied to the
  cores, newly ready steps are published together with confirms, and the notices acked
  together. The planner's own state writes (steps queued, skipped; jobs running, finished)
  go through one ordered background writer, off the critical path: a worker's writes do not
  depend on them (see shared/store/mongo.py), and a restart recomputes anything lost.
* **dead letters**: a dead-lettered step fails with the reason; anything else is recorded.
* **housekeeping** (every ``tick_s``): unroutable steps are re-published once their device
  queue exists; steps whose device has no consumer are shown as ``waiting``; expired leases
  are re-queued with a new attempt; finished steps whose notice never came are applied.

Nothing here survives a restart except through MongoDB: :meth:`Planner.resume` rebuilds
each running job's core with ``PlannerCore.restore`` from the stored step states.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared.constants import HEADER_KIND, job_event_key, step_event_key
from shared.distributed_errors import MessageError
from shared.document import catalog_for, check_text
from shared.document.artifact_steps import with_artifact_steps
from shared.document.issues import has_errors
from shared.document.model import JobDocument
from shared.document.parameters import bind_parameters
from shared.document.types import TypeRegistry
from shared.messages import (
    Event,
    EventBatch,
    JobCancel,
    JobSubmission,
    StepBatch,
    StepDispatch,
    StepErrorInfo,
    StepNotice,
    StepRef,
    encode,
    parse_dispatches,
    parse_job_message,
    parse_notices,
)
from shared.planner.core import FINISHED_STEP_STATES, PlannerCore, StepState
from shared.settings import Settings
from shared.store import Store
from shared.store.states import FINAL_JOB_STATES, core_state
from shared.transport import Broker, Outgoing
from shared.transport.settle import Reject, settle

log = logging.getLogger("theodolite.planner")
NOTICE_BATCH = 2000
MAX_BATCH = 64
MIN_MESSAGES = 32
WRITE_PAUSE_S = 0.02
EVENT_FLUSH_S = 0.05


class StateWriter:
    """Runs the planner's MongoDB writes in order, in the background, coalesced.

    Publishing never waits for these writes. Order is kept (a job's steps are stored before
    they are marked queued, skipped steps before the job is finished); consecutive step
    marks of one kind for one job become one write, and rounds are at least ``pause_s``
    apart so a fast chain costs a few writes a second, not one per hop. :meth:`flush`
    waits for everything enqueued so far (drain, tests).
    """

    def __init__(self, store: Store, *, pause_s: float = WRITE_PAUSE_S) -> None:
        self.store = store
        self.pause_s = pause_s
        self._items: list[tuple[Any, ...]] = []
        self._wake = asyncio.Event()

    def submit(self, make_write: Any) -> asyncio.Future[None]:
        """Enqueue ``make_write`` (a no-argument coroutine function)."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._items.append(("call", make_write, done))
        self._wake.set()
        return done

    def steps(self, mark: str, job_id: str, names: Sequence[str]) -> None:
        """Enqueue a state mark of steps: queued, skipped, cancelled, waiting or unwaiting."""
        if names:
            self._items.append(("steps", mark, job_id, list(names)))
            self._wake.set()

    async def flush(self) -> None:
        await self.submit(_nothing)

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            items, self._items = self._items, []
            for item in _coalesce(items):
                await self._apply(item)
            await asyncio.sleep(self.pause_s)

    async def _apply(self, item: tuple[Any, ...]) -> None:
        try:
            if item[0] == "steps":
                _, mark, job_id, names = item
                if mark == "queued":
                    await self.store.mark_queued(job_id, names)
                elif mark in ("waiting", "unwaiting"):
                    await self.store.set_waiting(job_id, names, mark == "waiting")
                else:
                    await self.store.mark_not_started(job_id, names, mark)
            else:
                await item[1]()
        except Exception as error:
            log.exception("planner state write failed")
            if item[0] == "call" and not item[2].done():
                item[2].set_exception(error)
                item[2].exception()  # retrieved: nobody has to await a background write
            return
        if item[0] == "call" and not item[2].done():
            item[2].set_result(None)


def _coalesce(items: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    merged: list[tuple[Any, ...]] = []
    for item in items:
        last = merged[-1] if merged else None
        if item[0] == "steps" and last is not None and last[0] == "steps" and last[1:3] == item[1:3]:
            last[3].extend(item[3])
        else:
            merged.append(item if item[0] != "steps" else ("steps", item[1], item[2], list(item[3])))
    return merged


async def _nothing() -> None:
    return None


@dataclass
class ActiveJob:
    job_id: str
    core: PlannerCore
    devices: dict[str, str]
    attempts: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, Any] | None = None
    unrouted: set[str] = field(default_factory=set)
    """Steps the broker returned (no queue for their device yet): re-published by the tick."""
    waiting: set[str] = field(default_factory=set)
    """Steps shown as waiting for a worker of their device."""


class Planner:
    def __init__(self, settings: Settings, plugin_dirs: Sequence[str | Path] = (), *, planner_id: str | None = None) -> None:
        self.settings = settings
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.planner_id = planner_id or f"planner-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = Store(settings)
        self.broker = Broker(settings, name=self.planner_id)
        self.active: dict[str, ActiveJob] = {}
        self._notices: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._jobs: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._catalog = catalog_for(None, self.plugin_dirs)
        self._reconciled_at = time.time()
        self._lease_scan_at = 0.0
        self._pending_events: dict[str, list[Event]] = defaultdict(list)
        self.writes = StateWriter(self.store)

    # lifecycle ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Serve until ``stop`` is set, then drain: stop consuming, finish what was delivered."""
        async with self.store, self.broker:
            await self.store.ensure_indexes()
            await self.resume()
            names = self.broker.names
            jobs_channel = await self.broker.channel(prefetch=4)
            notices_channel = await self.broker.channel(prefetch=self.settings.planner_prefetch)
            dead_channel = await self.broker.channel(prefetch=50)
            await self.broker.consume(notices_channel, names.notices_queue, self._notices.put)
            await self.broker.consume(jobs_channel, names.jobs_queue, self._jobs.put)
            await self.broker.consume(dead_channel, names.dead_queue, self._on_dead_letter)
            writer = asyncio.create_task(self.writes.run(), name="planner-writes")
            loops = [
                asyncio.create_task(self._job_loop(), name="planner-jobs"),
                asyncio.create_task(self._notice_loop(), name="planner-notices"),
                asyncio.create_task(self._tick_loop(), name="planner-tick"),
                asyncio.create_task(self._event_loop(), name="planner-events"),
            ]
            log.info("planner %s ready (namespace %s, %d active jobs)", self.planner_id, self.settings.namespace, len(self.active))
            lost = asyncio.create_task(self.broker.lost.wait())
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([lost, stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            for loop in loops:
                if loop.done() and loop.exception() is not None:
                    raise loop.exception()  # type: ignore[misc]
            if lost.done() and not stopped.done():
                raise ConnectionError("lost the RabbitMQ connection")
            log.info("planner draining")
            await self.broker.stop_consuming()
            await self._drain()
            await self.writes.flush()
            await self._flush_step_events()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            for task in [*loops, lost, stopped]:
                task.cancel()
            await asyncio.gather(*loops, lost, stopped, return_exceptions=True)
        log.info("planner stopped")

    async def _drain(self) -> None:
        """Apply every notice and job message already delivered to us, then return."""
        while not self._notices.empty():
            await self._apply_notice_messages(self._take_batch(self._notices.get_nowait()))
        while not self._jobs.empty():
            await self._handle_job_message(self._jobs.get_nowait())

    # jobs ---------------------------------------------------------------------------------
    async def _job_loop(self) -> None:
        while True:
            message = await self._jobs.get()
            await self._handle_job_message(message)

    async def _handle_job_message(self, message: AbstractIncomingMessage) -> None:
        async with settle(message):
            try:
                job_message = parse_job_message(message.body, self.settings.max_message_bytes)
            except MessageError as problem:
                await self._record_rejection(message, problem.reason)
                raise Reject(problem.reason) from None
            if isinstance(job_message, JobCancel):
                await self.cancel(job_message.job_id)
            else:
                await self.submit(job_message)

    async def submit(self, submission: JobSubmission) -> None:
        job_id = submission.job_id
        if job_id in self.active:
            return
        existing = await self.store.job_state(job_id)
        if existing is not None:
            if existing["state"] not in FINAL_JOB_STATES:
                await self._resume_job(job_id)
            return
        result = await asyncio.to_thread(check_text, submission.document, submission.document_name, self._catalog)
        problems = [issue.format(submission.document_name) for issue in result.errors]
        document = result.document
        values: dict[str, Any] = {}
        if document is not None:
            values, issues = bind_parameters(document, submission.parameters, TypeRegistry(document.types))
            problems += [i.format(submission.document_name) for i in issues if has_errors([i])]
            for name in document.artifact_inputs:
                if name not in submission.artifacts:
                    problems.append(f"{submission.document_name}:1: artifact_inputs.{name}: artifact input {name!r} was not provided "
                                    "(submit --artifact NAME=PATH stores it before submitting)")
        if document is None or problems:
            await self.store.insert_rejected_job(job_id, submission.document_name, problems)
            await self._job_event(job_id, "failed", {"problems": problems, "reason": "invalid document"})
            return
        document = with_artifact_steps(document)
        await self.store.insert_job(job_id, document, values, name=submission.document_name,
                                    fail_fast=submission.fail_fast, submitted_at=submission.submitted_at)
        job = self._new_active(job_id, document, submission.fail_fast)
        ready = job.core.start()
        started_at = time.time()

        async def store_steps() -> None:
            await self.store.mark_queued(job_id, ready)
            await self.store.set_job_state(job_id, ["pending"], "running", started_at=started_at, planner=self.planner_id)
            await self._job_event(job_id, "running", {"steps": len(document.steps)})

        self.writes.submit(store_steps)
        await self._dispatch(job, ready)

    def _new_active(self, job_id: str, document: JobDocument, fail_fast: bool) -> ActiveJob:
        core = PlannerCore({name: step.dependencies for name, step in document.steps.items()}, fail_fast=fail_fast)
        devices = {name: document.tasks[step.task].device for name, step in document.steps.items()}
        job = ActiveJob(job_id, core, devices)
        self.active[job_id] = job
        return job

    async def cancel(self, job_id: str) -> None:
        job = self.active.get(job_id)
        if job is None:
            await self.store.set_job_state(job_id, ["pending"], "cancelled", finished_at=time.time())
            return
        cancelled = job.core.cancel()
        await self.store.mark_not_started(job_id, cancelled, "cancelled")
        await self._step_events(job_id, [Event(type="step.cancelled", job_id=job_id, step=s, state="cancelled") for s in cancelled])
        if job.core.finished:
            await self._finish_job(job)

    # restart ------------------------------------------------------------------------------
    async def resume(self) -> None:
        """Rebuild every unfinished job from MongoDB (a restarted planner)."""
        for job_id in await self.store.active_job_ids():
            try:
                await self._resume_job(job_id)
            except Exception:
                log.exception("cannot resume job %s", job_id)

    async def _resume_job(self, job_id: str) -> None:
        record = await self.store.load_job(job_id)
        if record is None:
            return
        records = await self.store.step_records(job_id)  # steps without a document are pending
        job = self._new_active(job_id, record.document, record.fail_fast)
        job.first_error = record.error
        stored = {name: core_state(r.state) for name, r in records.items()}
        for name, r in records.items():
            job.attempts[name] = r.attempt
            if r.state == "failed" and job.first_error is None and r.error:
                job.first_error = {"step": name, "type": r.error.get("type", "Error"), "message": r.error.get("message", "")}
        to_queue = job.core.restore(stored)
        republish, first = [], []
        for name in to_queue:
            state = records[name].state if name in records else "pending"
            if state == "running":
                job.core.running(name)  # its worker holds a lease; expiry re-queues it
            elif state in ("queued", "waiting"):
                republish.append(name)
            else:
                first.append(name)
        ended = [n for n, s in job.core.states().items()
                 if s in (StepState.SKIPPED, StepState.CANCELLED) and (n not in records or records[n].state not in ("skipped", "cancelled"))]
        for state in (StepState.SKIPPED, StepState.CANCELLED):
            await self.store.mark_not_started(job_id, [n for n in ended if job.core.state(n) is state], state.value)
        await self.store.mark_queued(job_id, first)
        await self.store.set_job_state(job_id, ["pending"], "running", started_at=time.time())
        await self.store.set_job_state(job_id, ["running"], "running", planner=self.planner_id)
        log.info("resumed job %s: %d to publish, %d re-published, %d running elsewhere",
                 job_id, len(first), len(republish), sum(1 for n in to_queue if n in records and records[n].state == "running"))
        await self._dispatch(job, first + republish)
        if job.core.finished:
            await self._finish_job(job)

    # notices ------------------------------------------------------------------------------
    def _take_batch(self, first: AbstractIncomingMessage) -> list[AbstractIncomingMessage]:
        batch = [first]
        while len(batch) < NOTICE_BATCH and not self._notices.empty():
            batch.append(self._notices.get_nowait())
        return batch

    async def _notice_loop(self) -> None:
        while True:
            first = await self._notices.get()
            await self._apply_notice_messages(self._take_batch(first))

    async def _apply_notice_messages(self, batch: list[AbstractIncomingMessage]) -> None:
        notices: list[StepNotice] = []
        good: list[AbstractIncomingMessage] = []
        for message in batch:
            try:
                notices.extend(parse_notices(message.body, self.settings.max_message_bytes))
                good.append(message)
            except MessageError as problem:
                await self._record_rejection(message, problem.reason)
                async with settle(message):
                    raise Reject(problem.reason)
        if notices:
            await self.apply_notices(notices)
        if good:
            await max(good, key=lambda m: m.delivery_tag or 0).ack(multiple=True)

    async def apply_notices(self, notices: Sequence[StepNotice]) -> None:
        """Feed outcomes to the cores; persist and publish what they release, per job."""
        ready: dict[str, list[str]] = defaultdict(list)
        skipped: dict[str, list[str]] = defaultdict(list)
        events: dict[str, list[Event]] = defaultdict(list)
        touched: dict[str, ActiveJob] = {}
        for notice in notices:
            job = self.active.get(notice.job_id)
            if job is None or notice.step not in job.devices or job.core.state(notice.step) in FINISHED_STEP_STATES:
                continue
            touched[job.job_id] = job
            job.waiting.discard(notice.step)
            events[job.job_id].append(Event(type=f"step.{notice.outcome}", job_id=job.job_id, step=notice.step, state=notice.outcome,
                                            attempt=notice.attempt, worker_id=notice.worker_id, detail={"duration_s": notice.duration_s}))
            if notice.outcome == "succeeded":
                ready[job.job_id] += job.core.succeeded(notice.step)
            else:
                if job.first_error is None:
                    error = notice.error
                    job.first_error = {"step": notice.step, "type": error.type if error else "Error", "message": error.message if error else ""}
                skipped[job.job_id] += job.core.failed(notice.step)
        for job_id, names in ready.items():
            self.writes.steps("queued", job_id, names)  # enqueued first: the writer keeps order
        await asyncio.gather(*(self._dispatch(touched[j], names) for j, names in ready.items()))
        for job_id, names in skipped.items():
            self.writes.steps("skipped", job_id, names)
            events[job_id] += [Event(type="step.skipped", job_id=job_id, step=n, state="skipped") for n in names]
        for job_id, job_events in events.items():
            await self._step_events(job_id, job_events)
        for job in touched.values():
            if job.core.finished:
                await self._finish_job(job)

    async def _finish_job(self, job: ActiveJob) -> None:
        """Finish after every earlier state write of the job (skipped steps, queued marks)."""
        state = job.core.job_state.value
        self.active.pop(job.job_id, None)
        finished_at, error = time.time(), job.first_error

        async def finish() -> None:
            await self.store.set_job_state(job.job_id, ["pending", "running"], state, finished_at=finished_at, error=error)
            await self._job_event(job.job_id, state, {"error": error} if error else {})
            log.info("job %s %s", job.job_id, state)

        self.writes.submit(finish)

    # dispatch -----------------------------------------------------------------------------
    async def _dispatch(self, job: ActiveJob, names: Sequence[str]) -> None:
        """Publish steps (already marked queued in MongoDB) to their device queues."""
        names = [n for n in names if job.core.state(n) is StepState.QUEUED]
        if not names:
            return
        for name in names:
            job.attempts[name] = job.attempts.get(name) or 1
        chunks = list(_batches(job, names))
        outgoing = [self._step_message(job, chunk) for chunk in chunks]
        routed = await self.broker.publish_many(outgoing)
        queued = [n for chunk, ok in zip(chunks, routed) if ok for n in chunk]
        returned = [n for chunk, ok in zip(chunks, routed) if not ok for n in chunk]
        job.unrouted.difference_update(queued)
        await self._step_events(job.job_id, [Event(type="step.queued", job_id=job.job_id, step=n, state="queued", attempt=job.attempts[n]) for n in queued])
        if returned:
            job.unrouted.update(returned)
            await self._mark_waiting(job, returned, reason="no queue exists for this device: no worker of this type has ever started")

    def _step_message(self, job: ActiveJob, chunk: list[str]) -> Outgoing:
        device = job.devices[chunk[0]]
        if len(chunk) == 1:
            name = chunk[0]
            attempt = job.attempts[name]
            body = encode(StepDispatch(job_id=job.job_id, step=name, attempt=attempt, device=device))
            return Outgoing(self.broker.names.steps_exchange, device, body, "step.dispatch", message_id=f"{job.job_id}:{name}:{attempt}")
        steps = [StepRef(step=n, attempt=job.attempts[n]) for n in chunk]
        body = encode(StepBatch(job_id=job.job_id, device=device, steps=steps))
        return Outgoing(self.broker.names.steps_exchange, device, body, "step.batch",
                        message_id=f"{job.job_id}:{chunk[0]}:{steps[0].attempt}+{len(chunk)}")

    async def _mark_waiting(self, job: ActiveJob, names: Sequence[str], *, reason: str) -> None:
        new = [n for n in names if n not in job.waiting and job.core.state(n) is StepState.QUEUED]
        if not new:
            return
        job.waiting.update(new)
        self.writes.steps("waiting", job.job_id, new)
        by_device: dict[str, list[str]] = defaultdict(list)
        for name in new:
            by_device[job.devices[name]].append(name)
        for device, steps in by_device.items():
            log.warning("job %s: %d step(s) waiting for a worker of type %s (%s)", job.job_id, len(steps), device, reason)
            await self.store.record_events([{"type": "step.waiting", "job_id": job.job_id, "device": device, "steps": steps[:100],
                                             "count": len(steps), "reason": f"waiting for a worker of type {device}: {reason}", "at": time.time()}])
        await self._step_events(job.job_id, [Event(type="step.waiting", job_id=job.job_id, step=n, state="waiting",
                                                   detail={"device": job.devices[n], "reason": f"waiting for a worker of type {job.devices[n]}"}) for n in new])

    # housekeeping -------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.tick_s)
            try:
                await self.tick()
            except Exception:
                log.exception("planner housekeeping failed")

    async def tick(self) -> None:
        await self._check_devices()
        now = time.time()
        if now - self._lease_scan_at >= min(self.settings.lease_s / 2, 5.0):
            self._lease_scan_at = now
            await self._requeue_expired(now)
            await self._reconcile()

    async def _check_devices(self) -> None:
        outstanding: dict[str, list[tuple[ActiveJob, str]]] = defaultdict(list)
        for job in list(self.active.values()):
            for name, state in job.core.states().items():
                if state is StepState.QUEUED:
                    outstanding[job.devices[name]].append((job, name))
        for device, items in outstanding.items():
            consumers = await self.broker.queue_consumers(self.broker.names.steps_queue(device))
            jobs = {id(j): j for j, _ in items}.values()
            if consumers is not None:  # the queue exists now: returned steps can be published
                for job in jobs:
                    again = [n for j, n in items if j is job and n in job.unrouted]
                    if again:
                        await self._dispatch(job, again)
            if not consumers:
                reason = "no queue exists for this device" if consumers is None else "its queue has no consumer"
                for job in jobs:
                    await self._mark_waiting(job, [n for j, n in items if j is job], reason=reason)
                continue
            for job in jobs:
                back = [n for j, n in items if j is job and n in job.waiting and n not in job.unrouted]
                if back:
                    job.waiting.difference_update(back)
                    self.writes.steps("unwaiting", job.job_id, back)

    async def _requeue_expired(self, now: float) -> None:
        if not self.active:
            return
        for doc in await self.store.expired_leases(list(self.active), now):
            job = self.active.get(doc["job"])
            if job is None or job.core.state(doc["step"]) in FINISHED_STEP_STATES:
                continue
            attempt = await self.store.requeue(doc["job"], doc["step"], int(doc["attempt"]), reason=f"lease of worker {doc.get('worker')} expired")
            if attempt is None:
                continue
            log.warning("job %s step %s: lease of %s expired; re-queued as attempt %d", job.job_id, doc["step"], doc.get("worker"), attempt)
            job.core.requeue(doc["step"])
            job.attempts[doc["step"]] = attempt
            await self._dispatch(job, [doc["step"]])

    async def _reconcile(self) -> None:
        """Apply finished steps whose completion notice never arrived (a worker died after
        its final write and before publishing the notice)."""
        since, self._reconciled_at = self._reconciled_at - max(self.settings.lease_s, 10.0), time.time()
        if not self.active:
            return
        missing = []
        for doc in await self.store.finished_since(list(self.active), since):
            job = self.active.get(doc["job"])
            if job is not None and job.core.state(doc["step"]) not in FINISHED_STEP_STATES:
                error = doc.get("error") or None
                missing.append(StepNotice(job_id=doc["job"], step=doc["step"], attempt=max(1, int(doc.get("attempt", 1))),
                                          outcome=doc["state"], worker_id=str(doc.get("worker") or "unknown"),
                                          error=StepErrorInfo(type=str(error.get("type", "Error")), message=str(error.get("message", "")))
                                          if error else None))
        if missing:
            log.warning("applying %d completion(s) found in MongoDB without a notice", len(missing))
            await self.apply_notices(missing)

    # dead letters -------------------------------------------------------------------------
    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        async with settle(message):
            kind = str((message.headers or {}).get(HEADER_KIND, ""))
            reason = _death_reason(message)
            dispatches: list[StepDispatch] = []
            if kind in ("step.dispatch", "step.batch"):
                try:
                    dispatches = parse_dispatches(message.body, self.settings.max_message_bytes)
                except MessageError:
                    dispatches = []
            if not dispatches:
                await self.store.record_events([{"type": "message.dead_lettered", "kind": kind or None, "reason": reason,
                                                 "body": message.body[:500].decode("utf-8", "replace"), "at": time.time()}])
                await self._publish_event(Event(type="message.dead_lettered", detail={"kind": kind, "reason": reason}), "message.dead_lettered")
                return
            error = {"type": "DeadLettered", "message": f"the step's message was dead-lettered ({reason}): "
                     "its workers crashed or refused it too many times"}
            for dispatch in dispatches:
                job = self.active.get(dispatch.job_id)
                if job is None or job.attempts.get(dispatch.step, dispatch.attempt) != dispatch.attempt:
                    continue
                if await self.store.fail_step(dispatch.job_id, dispatch.step, error):
                    await self.store.record_events([{"type": "step.dead_lettered", "job_id": dispatch.job_id, "step": dispatch.step,
                                                     "reason": reason, "at": time.time()}])
                    await self.apply_notices([StepNotice(job_id=dispatch.job_id, step=dispatch.step, attempt=dispatch.attempt,
                                                         outcome="failed", worker_id="dead-letter",
                                                         error=StepErrorInfo(type=error["type"], message=error["message"]))])

    async def _record_rejection(self, message: AbstractIncomingMessage, reason: str) -> None:
        detail = {"type": "message.rejected", "queue": message.routing_key, "reason": reason,
                  "body": message.body[:500].decode("utf-8", "replace"), "at": time.time()}
        await self.store.record_events([detail])
        await self._publish_event(Event(type="message.rejected", detail={"reason": reason}), "message.rejected")

    # events -------------------------------------------------------------------------------
    async def _job_event(self, job_id: str, state: str, detail: dict[str, Any]) -> None:
        """A job's state change, after every step event of the job still buffered."""
        event = Event(type=f"job.{state}", job_id=job_id, state=state, detail=detail)
        await self._flush_step_events(job_id)
        await self.store.record_events([event.model_dump()])
        await self._publish_event(event, job_event_key(job_id, state))

    async def _step_events(self, job_id: str, events: list[Event]) -> None:
        """Buffer step events; they go out per job every ``EVENT_FLUSH_S``, off the critical path."""
        if events:
            self._pending_events[job_id].extend(events)

    async def _event_loop(self) -> None:
        while True:
            await asyncio.sleep(EVENT_FLUSH_S)
            await self._flush_step_events()

    async def _flush_step_events(self, job_id: str | None = None) -> None:
        jobs = [job_id] if job_id is not None else list(self._pending_events)
        for job in jobs:
            events = self._pending_events.pop(job, None)
            if not events:
                continue
            try:
                await self._publish_event(EventBatch(job_id=job, events=events), step_event_key(job))
            except Exception as error:  # noqa: BLE001 - events inform; MongoDB has the state
                log.warning("publishing step events failed: %r", error)

    async def _publish_event(self, event: Event | EventBatch, key: str) -> None:
        await self.broker.publish(Outgoing(self.broker.names.events_exchange, key, encode(event), event.kind, persistent=False))


def _batches(job: ActiveJob, names: Sequence[str]) -> list[list[str]]:
    """Ready steps grouped per device into messages: one step each when few are ready (a
    chain), up to ``MAX_BATCH`` per message when many are (a fan-out), always leaving at
    least ``MIN_MESSAGES`` messages per device so that every worker gets a share."""
    by_device: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_device[job.devices[name]].append(name)
    chunks: list[list[str]] = []
    for steps in by_device.values():
        size = max(1, min(MAX_BATCH, len(steps) // MIN_MESSAGES))
        chunks.extend(steps[start:start + size] for start in range(0, len(steps), size))
    return chunks


def _death_reason(message: AbstractIncomingMessage) -> str:
    deaths = (message.headers or {}).get("x-death") or []
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        first = deaths[0]
        return f"{first.get('reason')!s} from {first.get('queue')!s} (count {first.get('count')!s})"
    return str((message.headers or {}).get("x-first-death-reason", "unknown"))
