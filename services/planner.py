"""The planner service: a thin shell around the job book (``shared/planner/book.py``).

It consumes messages, feeds them to the book as inputs and carries out the effects the book
returns, in the book's order (``services/planner_effects.py``). Every MongoDB write but one
goes through one ordered writer (``services/planner_writer.py``), retried until it succeeds;
the exception is a new job's document, which is written (and awaited) before any of its
steps is published, because workers read it.

Loops, all on one event loop (the book is only touched here):

* **jobs**: each submission is validated off the event loop with a time budget
  (``services/planner_intake.py``), several at once; a valid one is stored and accepted, an
  invalid one recorded as rejected (``job.rejected``); the message is acked once that is
  durable. A cancel cancels. A submission of a job the store already has is restored.
* **notices**: workers' reports are drained in batches, fed to the book together, and acked
  together after the effects are carried out (the outcomes are in MongoDB already); their
  progress (a step started, a timeout warning) first, which the book numbers into the job's
  events (``step.running``).
* **dead letters**: a dead-lettered step message fails its step (``FailStep``); anything else
  is recorded.
* **housekeeping** (every ``tick_s``): the book says what to look at (``TickPlan``): consumer
  counts of device queues, expired leases, finished steps whose report never came.

On start, a planner restores every unfinished job: it first tells workers to claim the
job's steps before running them (``JobControl``), waits ``claim_after_s`` (so that a step
started just before the restart has claimed itself), then rebuilds the job from MongoDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from aio_pika.abc import AbstractIncomingMessage

from services.planner_effects import EVENT_FLUSH_S, EffectRunner
from services.planner_intake import Accepted, Intake, plan_of
from services.planner_lease import await_lease, keep_lease
from services.planner_publish import PatientBroker
from services.planner_writer import OrderedWriter
from shared import codec
from shared.constants import HEADER_KIND
from shared.distributed_errors import MessageError
from shared.messages import (
    DEFAULT_CANCEL_GRACE_S,
    Event,
    JobCancel,
    JobResume,
    JobSubmission,
    StepErrorInfo,
    StepNotice,
    StepProgress,
    parse_dispatches,
    parse_job_message,
    parse_reports,
)
from shared.observability.health import LeaseRole, MongoWatch, Readiness
from shared.observability.http import metrics_server
from shared.observability.metrics import PlannerMetrics, PlannerView
from shared.observability.reasons import DeadLetterReason, RejectReason
from shared.outages import Streak, backoff_s, short, transient
from shared.planner.book import JobBook, StoredStep
from shared.planner.effects import Publish
from shared.planner.resume_plan import plan_resume
from shared.settings import Settings
from shared.states import ErrorKind, JobState, StepState
from shared.store import Store
from shared.store.lease import Fence, LeaseLost
from shared.transport import Broker
from shared.transport.settle import HandBack, Reject, ack_batch, settle

log = logging.getLogger("theodolite.planner")
NOTICE_BATCH = 2000
JOB_PREFETCH = 8
RESTORE_MARGIN_S = 0.5
PATIENT_MAX_S = 10.0
RETRY_POLL_S = 0.25
"""How often the retry timer looks for retries scheduled since it went to sleep."""
"""Longest pause between tries of a job message's handling during an outage."""
_JOB_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
T = TypeVar("T")


class Planner:
    def __init__(self, settings: Settings, plugin_dirs: Sequence[str | Path] = (), *, planner_id: str | None = None) -> None:
        self.settings = settings
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self.planner_id = planner_id or f"planner-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.store = Store(settings)
        self.broker = Broker(settings, name=self.planner_id)
        self.book = JobBook(lease_s=settings.lease_s)
        self.effects: EffectRunner | None = None
        self._notices: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._validating: set[str] = set()
        self._cancel_after: dict[str, float] = {}
        """Cancels of jobs still being validated, with their grace periods."""
        self._jobs_in_flight: set[asyncio.Task[None]] = set()
        self.lease = LeaseRole.STANDBY
        self.metrics = PlannerMetrics(self._metrics_view)
        self._mongo = MongoWatch(lambda: self.store.db.command("ping"))
        self._http = metrics_server(settings.metrics_port, settings.metrics_host, self.metrics.registry, self.readiness,
                                    name=self.planner_id)

    # observability ------------------------------------------------------------------------
    def readiness(self) -> Readiness:
        """``/readyz``: holding the lease, connected to RabbitMQ and MongoDB and consuming; or
        standing by with MongoDB reachable (see ``shared/observability/health.py``)."""
        if self.lease is LeaseRole.STANDBY:
            return Readiness(mongodb=self._mongo.reachable, rabbitmq=None, consuming=None, lease=self.lease)
        return Readiness(mongodb=self._mongo.reachable, rabbitmq=self.broker.connected.is_set(),
                         consuming=self.broker.consuming and self.effects is not None, lease=self.lease)

    def _metrics_view(self) -> PlannerView:
        """The planner's gauges, read at each scrape (on the event loop, like everything here)."""
        return PlannerView(active_jobs=len(self.book), writer_backlog=self.effects.writer.pending if self.effects else 0,
                           lease_held=self.lease is LeaseRole.HELD, ready=self.book.ready.by_device(time.time()))

    # lifecycle ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        """Stand by until this planner holds the lease (``services/planner_lease.py``), then
        serve until ``stop`` is set and drain: stop consuming, finish what was delivered, give
        the lease up. A planner that loses its lease while serving (MongoDB unreachable for
        longer than the lease, or taken over) stops acting at once and stands by again with
        nothing in memory; its unacknowledged messages go back to their queues."""
        intake = Intake(self.plugin_dirs, self.settings.validation_timeout_s)
        name = self.settings.namespace
        try:
            async with self._http, self.store, self._mongo:
                await self.store.ensure_indexes()
                while True:
                    fence = await await_lease(self.store, name, self.planner_id, self.settings.lease_s, stop)
                    if fence is None or await self._term(stop, intake, fence):
                        break
                    log.warning("planner %s lost the lease; standing by again", self.planner_id)
                    self._forget_everything()
        finally:
            intake.close()
        log.info("planner stopped")

    async def _term(self, stop: asyncio.Event, intake: Intake, fence: Fence) -> bool:
        """Serve while holding the lease; True when stopped cleanly, False when it was lost."""
        name = self.settings.namespace
        self.store.fence = fence
        self.lease = LeaseRole.HELD
        self.broker = Broker(self.settings, name=self.planner_id)  # a fresh connection per term
        try:
            async with self.broker:
                serving = asyncio.create_task(self._serve(stop, intake), name="planner-serve")
                keeping = asyncio.create_task(keep_lease(self.store, name, self.planner_id, fence), name="planner-lease")
                await asyncio.wait([serving, keeping], return_when=asyncio.FIRST_COMPLETED)
                if keeping.done():  # lost: stop acting now; closing the connection returns unacked messages
                    serving.cancel()
                    await asyncio.gather(serving, return_exceptions=True)
                    if not isinstance(keeping.exception(), LeaseLost):
                        keeping.result()
                    log.warning("%s", keeping.exception())
                    return False
                keeping.cancel()
                await asyncio.gather(keeping, return_exceptions=True)
                serving.result()
        finally:
            self.store.fence = None
            self.lease = LeaseRole.STANDBY
        await self.store.release_lease(name, self.planner_id, fence)
        return True

    def _forget_everything(self) -> None:
        """After a lost lease: the next holder restores every job from MongoDB, and so will we."""
        for task in self._jobs_in_flight:
            task.cancel()
        self._jobs_in_flight.clear()
        self._validating.clear()
        self._cancel_after.clear()
        self._notices = asyncio.Queue()
        self.book = JobBook(lease_s=self.settings.lease_s)
        self.effects = None
        self._reconcile_from = None

    _stopping: asyncio.Event | None = None
    """The ``stop`` of the running ``_serve``: outages are waited out until it is set."""
    _reconcile_from: float | None = None
    """Start of a scan for unreported finished steps that failed (an outage): done again."""
    _lease_grace_until = 0.0
    """No expired lease is re-queued before this: after MongoDB was away (or this planner
    started), live workers get a lease period to renew the leases they could not renew."""

    async def _serve(self, stop: asyncio.Event, intake: Intake) -> None:
        """Consume and carry out until ``stop``, then drain. Outages do not end it: the broker
        reconnects by itself (and subscribes again, :meth:`_subscribe`), publishes wait for it
        and are retried (:class:`PatientBroker`), MongoDB reads and writes are retried."""
        self._stopping = stop
        self._lease_grace_until = time.time() + self.settings.lease_s
        patient = PatientBroker(self.broker, stop, stopping_timeout_s=self.settings.drain_timeout_s)
        runner = EffectRunner(self.book, self.store, patient, OrderedWriter(lambda m: runner.write_marks(m),
                                                                            backlog=self.settings.write_backlog), self.planner_id)
        runner.on_job_finished = self.metrics.job_finished
        self.effects = runner
        writer = asyncio.create_task(runner.writer.run(), name="planner-writes")
        loops: list[asyncio.Task[None]] = []
        try:
            await self.restore(await self._patiently(self.store.active_job_ids, "reading the unfinished jobs"))
            await self.broker.subscribe(lambda: self._subscribe(intake))
            loops = [
                asyncio.create_task(self._notice_loop(), name="planner-notices"),
                asyncio.create_task(self._tick_loop(), name="planner-tick"),
                asyncio.create_task(self._retry_loop(), name="planner-retries"),
                asyncio.create_task(self._event_loop(), name="planner-events"),
                writer,
            ]
            log.info("planner %s ready (namespace %s, %d active jobs)", self.planner_id, self.settings.namespace, len(self.book))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait([stopped, *loops], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for loop in loops:
                if loop.done() and not loop.cancelled() and loop.exception() is not None:
                    raise loop.exception()  # type: ignore[misc]
            log.info("planner draining")
            await self.broker.stop_consuming()
            await self._drain()
            await runner.writer.flush()
            await runner.flush_events()
        finally:
            await self.broker.stop_consuming()  # also when cancelled (the lease lost): no consumer comes back
            for task in [*loops, writer]:
                task.cancel()
            await asyncio.gather(*loops, writer, return_exceptions=True)

    async def _subscribe(self, intake: Intake) -> None:
        """The planner's channels and consumers on the current connection (again after every
        reconnect). Deliveries of a lost connection still being handled are finished; their
        acks are skipped and RabbitMQ's copies are recognised (applied notices, known jobs)."""
        names = self.broker.names
        jobs_channel = await self.broker.channel(prefetch=JOB_PREFETCH)
        notices_channel = await self.broker.channel(prefetch=self.settings.planner_prefetch)
        dead_channel = await self.broker.channel(prefetch=50)
        await self.broker.consume(notices_channel, names.notices_queue, self._notices.put)
        await self.broker.consume(jobs_channel, names.jobs_queue, lambda m: self._spawn_job(m, intake))
        await self.broker.consume(dead_channel, names.dead_queue, self._on_dead_letter)

    async def _patiently(self, call: Callable[[], Awaitable[T]], what: str) -> T:
        """``call()`` until it succeeds: an outage of MongoDB or RabbitMQ is waited out with
        backoff while the planner serves (one log line when it starts, one when it ends). Once
        the planner stops, :class:`HandBack` (the message goes back to its queue).

        A write refused by the fence (:class:`LeaseLost`: the lease was not renewed in time,
        e.g. a starved process) is waited out too: either the renewal catches up and the call
        goes through, or the lease is lost, serving is cancelled and the unacked message goes
        back to its queue with the connection, for the next holder. Never a dead letter: the
        message did nothing wrong."""
        streak = Streak(log, what)
        while True:
            try:
                result = await call()
            except Exception as error:
                if not (transient(error) or isinstance(error, LeaseLost)):
                    raise
                if self._stopping is None or self._stopping.is_set():
                    raise HandBack(f"{what}: {short(error)}") from error
                delay = backoff_s(streak.failures + 1, max_s=PATIENT_MAX_S)
                streak.failed(error, delay)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            streak.succeeded()
            return result

    async def _drain(self) -> None:
        """Apply every notice and job message already delivered to us, then return."""
        while not self._notices.empty():
            await self._apply_notice_messages(self._take_batch(self._notices.get_nowait()))
        if self._jobs_in_flight:
            await asyncio.gather(*self._jobs_in_flight, return_exceptions=True)

    def _run(self) -> EffectRunner:
        if self.effects is None:
            raise RuntimeError("the planner is not serving")
        return self.effects

    # jobs ---------------------------------------------------------------------------------
    async def _spawn_job(self, message: AbstractIncomingMessage, intake: Intake) -> None:
        """Job messages are handled concurrently (bounded by the channel's prefetch)."""
        task = asyncio.create_task(self._handle_job_message(message, intake))
        self._jobs_in_flight.add(task)
        task.add_done_callback(self._jobs_in_flight.discard)

    async def _handle_job_message(self, message: AbstractIncomingMessage, intake: Intake) -> None:
        """A store outage while handling it is waited out (the message held, unacked), never
        a reason to dead-letter it; at shutdown it is handed back."""
        async with settle(message, on_reject=self.metrics.rejected):
            try:
                job_message = parse_job_message(message.body, self.settings.max_message_bytes)
            except MessageError as problem:
                await self._record_rejection(message, problem.reason)
                raise Reject(problem.reason, RejectReason.MALFORMED) from None
            if isinstance(job_message, JobCancel):
                await self._patiently(lambda: self.cancel(job_message.job_id, job_message.grace_s), f"cancelling job {job_message.job_id}")
            elif isinstance(job_message, JobResume):
                await self._patiently(lambda: self.resume(job_message), f"resuming job {job_message.job_id}")
            else:
                await self._patiently(lambda: self.submit(job_message, intake), f"handling the submission of job {job_message.job_id}")

    async def submit(self, submission: JobSubmission, intake: Intake) -> None:
        """Validate, store and start a job. The job counts as being validated from the first
        moment (before the store is asked whether it exists): a cancel handled meanwhile (job
        messages are handled concurrently) is kept for it, not lost as a cancel of no job."""
        job_id, runner = submission.job_id, self._run()
        if job_id in self.book or job_id in self._validating:
            return
        self._validating.add(job_id)
        try:
            await self._submit(submission, intake, runner)
        finally:
            self._validating.discard(job_id)
        if job_id in self._cancel_after:
            await self.cancel(job_id, self._cancel_after.pop(job_id))

    async def _submit(self, submission: JobSubmission, intake: Intake, runner: EffectRunner) -> None:
        job_id = submission.job_id
        existing = await self.store.job_state(job_id)
        if existing is not None:  # a redelivered submission
            if not JobState(existing["state"]).finished:
                await self.restore([job_id])
            return
        checked = await intake.check(submission)
        if isinstance(checked, Accepted):
            await self.store.insert_job(job_id, checked.document, checked.values, name=submission.document_name,
                                        fail_fast=submission.fail_fast, submitted_at=submission.submitted_at,
                                        labels=submission.labels, seed=submission.seed)
            await runner.run(self.book.accept(job_id, plan_of(checked.document, fail_fast=submission.fail_fast), time.time()))
        else:
            await runner.run(self.book.reject(job_id, submission.document_name, checked.problems, time.time()))
            await runner.writer.flush()  # acked once the rejection is durable

    async def cancel(self, job_id: str, grace_s: float = DEFAULT_CANCEL_GRACE_S) -> None:
        if job_id in self._validating:  # cancelled once it is accepted
            self._cancel_after[job_id] = grace_s
            return
        await self._run().run(self.book.cancel(job_id, time.time(), grace_s))

    async def resume(self, message: JobResume) -> None:
        """Start a finished job's next run (see :mod:`shared.store.resume`): its failed, skipped
        and cancelled steps (and ``from_steps`` with their descendants) run again, the others
        keep their outputs; then the job is restored like any unfinished one. A resume the job
        does not allow is logged and dropped (``theodolite resume`` checked it already)."""
        job_id = message.job_id
        if job_id in self.book or job_id in self._validating:
            log.warning("resume of job %s ignored: it is running", job_id)
            return
        record = await self.store.load_job(job_id)
        if record is None:
            log.warning("resume of job %s ignored: no such job", job_id)
            return
        steps = await self.store.step_records(job_id)
        dependencies = {name: step.dependencies for name, step in record.document.steps.items()}
        plan = plan_resume(record.state, dependencies, {name: r.state for name, r in steps.items()}, message.from_steps,
                           message.parameters, record.document.parameters)
        if not plan.ok:
            log.warning("resume of job %s refused: %s", job_id, "; ".join(plan.problems))
            return
        tree = None
        if message.parameters:
            values = {**record.parameters, **message.parameters}
            tree = codec.encode(values, threshold_bytes=self.settings.max_inline_outputs_bytes).tree
        run = await self.store.resume_job(job_id, plan.rerun, tree)
        if run is None:
            log.warning("resume of job %s refused: it is no longer finished", job_id)
            return
        log.info("job %s: run %d starts, %d step(s) run again", job_id, run, len(plan.rerun))
        await self.restore([job_id])

    async def _record_rejection(self, message: AbstractIncomingMessage, reason: str) -> None:
        """A job message that is not one: recorded; a submission whose id can be read is
        also recorded as a rejected job, so whoever waits for it hears back."""
        runner = self._run()
        await runner.writer.call(lambda: self.store.record_events([{
            "type": "message.rejected", "queue": message.routing_key, "reason": reason,
            "body": message.body[:500].decode("utf-8", "replace"), "at": time.time()}]), "a rejected message")
        await runner.publish_event(Event(type="message.rejected", detail={"reason": reason}))
        job_id = _readable_job_id(message.body)
        if job_id is not None and await self.store.job_state(job_id) is None:
            await runner.run(self.book.reject(job_id, "job message", [f"job message: {reason}"], time.time()))
            await runner.writer.flush()

    # restart ------------------------------------------------------------------------------
    async def restore(self, job_ids: Sequence[str]) -> None:
        """Rebuild unfinished jobs from MongoDB (a restarted planner, a redelivered submission)."""
        runner, records = self._run(), {}
        for job_id in job_ids:
            record = await self._patiently(lambda job_id=job_id: self.store.load_job(job_id), f"reading job {job_id}")  # type: ignore[misc]
            if record is None or job_id in self.book:
                continue
            records[job_id] = record
            await runner.run(JobBook.restoring(job_id, record.stop))
        if not records:
            return
        await runner.writer.flush()
        await asyncio.sleep(self.settings.claim_after_s + RESTORE_MARGIN_S)  # steps started before now have claimed
        for job_id, record in records.items():
            try:
                steps = await self._patiently(lambda job_id=job_id: self.store.step_records(job_id),  # type: ignore[misc]
                                              f"reading the steps of job {job_id}")
                stored = {name: StoredStep(r.state, r.attempt, r.error) for name, r in steps.items()}
                # Event numbers taken so far, read again now that our fenced control word is on the
                # job: a reservation of a planner that lost the lease can no longer land after this.
                fresh = await self._patiently(lambda job_id=job_id: self.store.job_state(job_id),  # type: ignore[misc]
                                              f"reading job {job_id}")
                event_seq = max(record.event_seq_reserved, int((fresh or {}).get("event_seq_reserved") or 0))
                effects = self.book.restore(job_id, plan_of(record.document, fail_fast=record.fail_fast), stored, time.time(),
                                            stop=record.stop, first_error=record.error, event_seq=event_seq)
                log.info("restored job %s: %d step(s) stored, %d to publish", job_id, len(stored),
                         sum(len(e.steps) for e in effects if isinstance(e, Publish)))
                await runner.run(effects)
            except Exception:
                log.exception("cannot restore job %s", job_id)

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
        progress: list[StepProgress] = []
        good: list[AbstractIncomingMessage] = []
        for message in batch:
            try:
                found, said = parse_reports(message.body, self.settings.max_message_bytes)
                notices.extend(found)
                progress.extend(said)
                good.append(message)
            except MessageError as problem:
                try:
                    await self._record_rejection(message, problem.reason)
                except Exception as error:  # noqa: BLE001 - the record is for people; the message goes anyway
                    log.warning("recording a rejected notice failed: %s", short(error))
                async with settle(message, on_reject=self.metrics.rejected):
                    raise Reject(problem.reason, RejectReason.MALFORMED)
        if progress:  # before the notices: a step's progress was sent before (or with) its notice
            await self._run().run(self.book.progress(progress, time.time()))
        if notices:
            await self.apply_notices(notices)
        await ack_batch(good)  # per channel; those of a lost connection are skipped (they come again)

    async def apply_notices(self, notices: Sequence[StepNotice]) -> None:
        await self._run().run(self.book.notices(notices, time.time()))

    # housekeeping -------------------------------------------------------------------------
    async def _tick_loop(self) -> None:
        """``tick`` every ``tick_s``; during an outage, with backoff (one line when it starts
        failing, one when it works again)."""
        streak = Streak(log, "planner housekeeping")
        while True:
            pause = self.settings.tick_s if not streak.failures else max(self.settings.tick_s, backoff_s(streak.failures))
            await asyncio.sleep(pause)
            try:
                await self.tick()
            except Exception as error:
                if transient(error):
                    streak.failed(error)
                    self._lease_grace_until = time.time() + self.settings.lease_s
                else:
                    log.exception("planner housekeeping failed")
                continue
            streak.succeeded()

    async def _retry_loop(self) -> None:
        """Publish each waiting retry when it is due (the planner's timers: a step waiting for
        its next attempt holds no worker slot and no broker delivery). Wakes at the earliest
        due time, and at least every ``RETRY_POLL_S`` to see retries scheduled meanwhile."""
        streak = Streak(log, "publishing due retries")
        while True:
            due_at = self.book.next_due()
            pause = RETRY_POLL_S if due_at is None else min(RETRY_POLL_S, max(0.0, due_at - time.time()))
            if streak.failures:
                pause = max(pause, backoff_s(streak.failures))
            await asyncio.sleep(pause)
            try:
                await self._run().run(self.book.due(time.time()))
            except Exception as error:
                if transient(error):
                    streak.failed(error)
                else:
                    log.exception("publishing due retries failed")
                continue
            streak.succeeded()

    async def tick(self) -> None:
        runner, now = self._run(), time.time()
        plan = self.book.tick(now)
        if plan.reconcile_since is not None:  # kept until a scan succeeds: an outage loses no window
            self._reconcile_from = min(plan.reconcile_since, self._reconcile_from or plan.reconcile_since)
        if plan.devices and self.broker.connected.is_set():  # no consumer counts while reconnecting
            consumers = {d: await self.broker.queue_consumers(self.broker.names.steps_queue(d)) for d in sorted(plan.devices)}
            await runner.run(self.book.presence(consumers, time.time()))
        if plan.scan_leases and time.time() >= self._lease_grace_until:
            began = time.monotonic()
            expired = await self.store.expired_leases(self.book.job_ids(), now)
            if time.monotonic() - began > self.settings.lease_s / 3:  # the read waited out an outage: so did the renewals
                self._lease_grace_until, expired = time.time() + self.settings.lease_s, []
            for doc in expired:
                await runner.run(self.book.lease_expired(doc["job"], doc["step"], int(doc["attempt"]), doc.get("worker"), time.time()))
        if self._reconcile_from is not None:
            job_ids = self.book.job_ids()
            docs = await self.store.finished_since(job_ids, self._reconcile_from) if job_ids else []
            self._reconcile_from = None
            missing = [_notice_of(doc) for doc in docs]
            if missing:
                await runner.run(self.book.notices(missing, time.time()))

    async def _event_loop(self) -> None:
        while True:
            await asyncio.sleep(EVENT_FLUSH_S)
            await self._run().flush_events()

    # dead letters -------------------------------------------------------------------------
    async def _on_dead_letter(self, message: AbstractIncomingMessage) -> None:
        if not message.redelivered:  # counted once, not again when handed back
            self.metrics.dead_lettered(DeadLetterReason.of(_first_death(message)[0]))
        async with settle(message, on_reject=self.metrics.rejected):
            runner = self._run()
            kind = str((message.headers or {}).get(HEADER_KIND, ""))
            reason, error_kind = _death_reason(message)
            try:
                dispatches = parse_dispatches(message.body, self.settings.max_message_bytes) if kind.startswith("step.") else []
            except MessageError:
                dispatches = []
            if not dispatches:
                await runner.writer.call(lambda: self.store.record_events([{
                    "type": "message.dead_lettered", "kind": kind or None, "reason": reason,
                    "body": message.body[:500].decode("utf-8", "replace"), "at": time.time()}]), "a dead letter")
                await runner.publish_event(Event(type="message.dead_lettered", detail={"kind": kind, "reason": reason}))
                return
            for dispatch in dispatches:
                await runner.run(self.book.dead_letter(dispatch.job_id, dispatch.step, dispatch.attempt, reason, error_kind, time.time(),
                                                       publisher=dispatch.publisher))


def _notice_of(doc: dict[str, Any]) -> StepNotice:
    """A step MongoDB holds as finished (or a failed attempt it holds as queued for its retry),
    as the report that never came."""
    error = doc.get("error") if isinstance(doc.get("error"), dict) else None
    info = None
    if error:
        info = StepErrorInfo(type=str(error.get("type", "Error")), message=str(error.get("message", "")),
                             kind=ErrorKind(error.get("kind", ErrorKind.TASK)))
    if doc.get("state") == StepState.QUEUED and doc.get("retry_at") is not None:  # a failed attempt stored as its retry
        return StepNotice(job_id=str(doc["job"]), step=str(doc["step"]), attempt=max(1, int(doc.get("attempt") or 2) - 1),
                          outcome=StepState.FAILED, worker_id=str(doc.get("worker") or "unknown"), error=info,
                          retry_at=float(doc["retry_at"]))
    return StepNotice(job_id=str(doc["job"]), step=str(doc["step"]), attempt=max(1, int(doc.get("attempt") or 1)),
                      outcome=StepState(str(doc["state"])), worker_id=str(doc.get("worker") or "unknown"), error=info)


def _first_death(message: AbstractIncomingMessage) -> tuple[str, str]:
    """RabbitMQ's reason for dead-lettering a message (``delivery_limit``), and an account of it."""
    deaths = (message.headers or {}).get("x-death") or []
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        first = deaths[0]
        why = str(first.get("reason"))
        return why, f"{why} from {first.get('queue')!s} (count {first.get('count')!s})"
    why = str((message.headers or {}).get("x-first-death-reason", "unknown"))
    return why, why


def _death_reason(message: AbstractIncomingMessage) -> tuple[str, ErrorKind]:
    """Why RabbitMQ dead-lettered a message, and what that makes of its step's failure."""
    why, text = _first_death(message)
    return text, ErrorKind.REJECTED if why == "rejected" else ErrorKind.LOST


def _readable_job_id(body: bytes) -> str | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    job_id = value.get("job_id") if isinstance(value, dict) and value.get("kind", "job.submit") == "job.submit" else None
    return job_id if isinstance(job_id, str) and _JOB_ID.match(job_id) else None
