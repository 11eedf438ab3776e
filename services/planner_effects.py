"""Carrying out the job book's effects: publishes now, writes through the ordered writer.

The order is the book's. Publishes go out at once (confirmed; their routing is reported
back to the book); every MongoDB write is queued on the :class:`OrderedWriter` and the job
events that announce a write (``job.running``, ``job.<terminal>``, ``job.rejected``) are
published only after that write is durable. Every event of a job carries its number
(``seq``); events wait in the :class:`~services.planner_events.EventOutbox` until the job's
stream reaches them and a durable reservation (``ReserveSeq``) covers their numbers, and go
out every ``EVENT_FLUSH_S`` (a job's at once when a job event is published), cut into one
message per run of one type (routing key ``job.<job id>.<type>``, docs/events.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from services.planner_events import EventOutbox, runs
from services.planner_ports import PlannerBroker, PlannerStore
from services.planner_writer import Mark, OrderedWriter, StepMark
from shared.constants import job_event_key, planner_event_key
from shared.messages import (
    Event,
    EventBatch,
    JobControl,
    StepBatch,
    StepDispatch,
    StepErrorInfo,
    StepNotice,
    StepRef,
    encode,
)
from shared.planner.book import JobBook
from shared.planner.effects import (
    ControlJob,
    Effect,
    Emit,
    FailStep,
    FinishJob,
    MarkDispatched,
    MarkWaiting,
    Publish,
    Record,
    RejectJob,
    Requeue,
    ReserveSeq,
    StartJob,
    StopSteps,
)
from shared.states import JobState, StepState
from shared.transport import Outgoing

log = logging.getLogger("theodolite.planner")
EVENT_FLUSH_S = 0.05
_STOP_MARKS = {StepState.SKIPPED: Mark.SKIPPED, StepState.CANCELLED: Mark.CANCELLED}


class Clock(Protocol):
    def __call__(self) -> float: ...


class EffectRunner:
    """Carries out effects for one planner; owns nothing (the planner owns store, broker,
    writer and book) but the events on their way out."""

    def __init__(self, book: JobBook, store: PlannerStore, broker: PlannerBroker, writer: OrderedWriter, planner_id: str,
                 clock: Clock = time.time) -> None:
        self.book = book
        self.store = store
        self.broker = broker
        self.writer = writer
        self.planner_id = planner_id
        self.clock = clock
        self.outbox = EventOutbox()
        self._flushing = asyncio.Lock()
        """One flush at a time: a job's events go out in number order."""
        self.on_job_finished: Callable[[JobState], object] | None = None
        """Told each job's terminal state once it is durable (the planner's metrics)."""

    async def run(self, effects: Sequence[Effect]) -> None:
        """Carry out ``effects`` in order; consecutive publishes go out together."""
        index = 0
        while index < len(effects):
            effect = effects[index]
            if isinstance(effect, Publish):
                end = index
                while end < len(effects) and isinstance(effects[end], Publish):
                    end += 1
                await self._publish([e for e in effects[index:end] if isinstance(e, Publish)])
                index = end
                continue
            await self._one(effect)
            index += 1

    async def _one(self, effect: Effect) -> None:
        match effect:
            case Emit(events=events):
                self.outbox.add(events)
            case ReserveSeq(job_id=job_id, start=start):
                self.outbox.begin(job_id, start)
                await self.writer.call(lambda: self._reserve(effect), f"event numbers of job {effect.job_id}")
            case MarkDispatched(job_id=job_id, steps=steps):
                await self.writer.mark(Mark.DISPATCHED, job_id, steps)
            case StopSteps(job_id=job_id, steps=steps, state=state):
                await self.writer.mark(_STOP_MARKS[state], job_id, steps)
            case MarkWaiting(job_id=job_id, steps=steps, waiting=waiting):
                await self.writer.mark(Mark.WAITING if waiting else Mark.UNWAITING, job_id, steps)
            case Record(document=document):
                await self.writer.call(lambda: self.store.record_events([document]), "an event record")
            case ControlJob():
                await self.writer.call(lambda: self._control(effect), f"the control word of job {effect.job_id}")
            case StartJob():
                await self.writer.call(lambda: self._start(effect), f"job {effect.job_id} running")
            case FinishJob():
                await self.writer.call(lambda: self._finish(effect), f"job {effect.job_id} {effect.state}")
            case RejectJob():
                await self.writer.call(lambda: self._reject(effect), f"job {effect.job_id} rejected")
            case FailStep():
                await self._fail_step(effect)
            case Requeue():
                await self._requeue(effect)
            case _:
                raise TypeError(f"unknown effect {effect!r}")

    # publishing ---------------------------------------------------------------------------
    async def _publish(self, publishes: list[Publish]) -> None:
        routed = await self.broker.publish_many([self._step_message(p) for p in publishes])
        now = self.clock()
        for publish, ok in zip(publishes, routed):
            await self.run(self.book.routed(publish.job_id, publish.names, ok, now))

    def _step_message(self, publish: Publish) -> Outgoing:
        names = self.broker.names
        if len(publish.steps) == 1:
            (step, attempt), = publish.steps
            body = encode(StepDispatch(job_id=publish.job_id, step=step, attempt=attempt, device=publish.device, claim=publish.claim,
                                       publisher=self.planner_id))
            return Outgoing(names.steps_exchange, publish.device, body, "step.dispatch", message_id=f"{publish.job_id}:{step}:{attempt}")
        refs = [StepRef(step=s, attempt=a) for s, a in publish.steps]
        batch = StepBatch(job_id=publish.job_id, device=publish.device, steps=refs, claim=publish.claim, publisher=self.planner_id)
        first, attempt = publish.steps[0]
        return Outgoing(names.steps_exchange, publish.device, encode(batch), "step.batch",
                        message_id=f"{publish.job_id}:{first}:{attempt}+{len(refs)}")

    # writes that report back --------------------------------------------------------------
    async def _fail_step(self, effect: FailStep) -> None:
        error = effect.error.model_dump(mode="json")
        done = await self.writer.call(lambda: self.store.fail_step(effect.job_id, effect.step, effect.attempt, error,
                                                                   publisher=effect.publisher),
                                      f"step {effect.step} of job {effect.job_id} failed")
        record = await done
        if record is None or not record.state.finished:
            return
        stored = record.error or {}
        info = StepErrorInfo(type=str(stored.get("type", "Error")), message=str(stored.get("message", "")),
                             kind=stored.get("kind", effect.error.kind)) if record.state is StepState.FAILED else None
        notice = StepNotice(job_id=effect.job_id, step=effect.step, attempt=max(1, record.attempt), outcome=record.state,
                            worker_id=record.worker or "planner", error=info)
        log.warning("job %s step %s: %s", effect.job_id, effect.step, effect.error.message)
        await self.run(self.book.notices([notice], self.clock()))

    async def _requeue(self, effect: Requeue) -> None:
        done = await self.writer.call(lambda: self.store.requeue(effect.job_id, effect.step, effect.attempt, reason=effect.reason),
                                      f"requeue of step {effect.step} of job {effect.job_id}")
        attempt = await done
        if attempt is None:
            return
        log.warning("job %s step %s: %s; re-queued as attempt %d", effect.job_id, effect.step, effect.reason, attempt)
        await self.run(self.book.requeued(effect.job_id, effect.step, attempt, self.clock()))

    # writes with events -------------------------------------------------------------------
    async def _control(self, effect: ControlJob) -> None:
        await self.store.set_job_control(effect.job_id, claim=effect.claim, stop=effect.stop, grace_s=effect.grace_s)
        control = JobControl(job_id=effect.job_id, claim=effect.claim, stop=effect.stop, grace_s=effect.grace_s)
        await self.broker.publish(Outgoing(self.broker.names.control_exchange, "", encode(control), control.kind, persistent=False))

    async def _start(self, effect: StartJob) -> None:
        await self.store.set_job_state(effect.job_id, [JobState.PENDING, JobState.RUNNING], JobState.RUNNING,
                                       started_at=effect.at, planner=self.planner_id)
        await self.job_event(effect.event)

    async def _finish(self, effect: FinishJob) -> None:
        changed = await self.store.set_job_state(effect.job_id, [JobState.PENDING, JobState.RUNNING], effect.state,
                                                 finished_at=effect.at, error=effect.error)
        if effect.job_id in self.book:
            await self.job_event(effect.event)
            log.info("job %s %s", effect.job_id, effect.state)
        elif changed:  # a cancel of a pending job no planner runs: it takes one number of its own
            seq = await self.store.next_event_seq(effect.job_id)
            await self.job_event(effect.event.model_copy(update={"seq": seq}), numbered_here=False)
            log.info("job %s %s", effect.job_id, effect.state)
        else:  # a cancel of a job that had finished, or that no planner knows
            log.info("job %s: not pending or running, so not %s", effect.job_id, effect.state)
        if (changed or effect.job_id in self.book) and self.on_job_finished is not None:
            self.on_job_finished(effect.state)
        self.book.forget(effect.job_id)
        self.outbox.close(effect.job_id)

    async def _reject(self, effect: RejectJob) -> None:
        await self.store.insert_rejected_job(effect.job_id, effect.name, effect.problems, at=effect.at)
        if self.on_job_finished is not None:
            self.on_job_finished(JobState.REJECTED)
        await self.job_event(effect.event, numbered_here=False)  # number 1, the job's only event
        log.info("job %s rejected: %s", effect.job_id, "; ".join(effect.problems)[:500])

    async def write_marks(self, item: StepMark) -> None:
        """The writer's step marks (see :class:`OrderedWriter`)."""
        match item.mark:
            case Mark.DISPATCHED:
                await self.store.mark_dispatched(item.job_id, item.names)
            case Mark.WAITING | Mark.UNWAITING:
                await self.store.set_waiting(item.job_id, item.names, item.mark is Mark.WAITING)
            case Mark.SKIPPED:
                await self.store.stop_steps(item.job_id, item.names, StepState.SKIPPED)
            case Mark.CANCELLED:
                await self.store.stop_steps(item.job_id, item.names, StepState.CANCELLED)

    # events -------------------------------------------------------------------------------
    async def _reserve(self, effect: ReserveSeq) -> None:
        """The reservation, written (fenced); its numbers may be published once it is durable."""
        if await self.store.reserve_event_seq(effect.job_id, effect.upto):
            self.outbox.reserved(effect.job_id, effect.upto)
        else:
            log.warning("job %s: event numbers up to %d not reserved (the job is gone, or another planner holds it); "
                        "its events are held back", effect.job_id, effect.upto)

    async def job_event(self, event: Event, *, numbered_here: bool = True) -> None:
        """A job-level event, once its write is durable: recorded, then published with the
        job's events before it (``numbered_here``: its number is the book's, so it waits its
        turn in the outbox; else it goes out at once)."""
        await self.store.record_events([event.model_dump(mode="json")])
        if numbered_here:
            self.outbox.add([event])
            await self.flush_events(str(event.job_id))
        else:
            await self.publish_event(event)

    async def flush_events(self, job_id: str | None = None) -> None:
        """Publish what the outbox lets out (of one job, or of all), one message per run."""
        async with self._flushing:
            events = self.outbox.take(job_id)
            if not events:
                return
            try:
                await self.broker.publish_many([self._event_message(run) for run in runs(events)])
            except Exception as error:  # noqa: BLE001 - events inform; MongoDB has the state
                log.warning("publishing %d event(s) failed: %r", len(events), error)

    def _event_message(self, events: list[Event]) -> Outgoing:
        first = events[0]
        message: Event | EventBatch = first if len(events) == 1 else EventBatch(job_id=first.job_id, events=events)
        return Outgoing(self.broker.names.events_exchange, self.event_key(first), encode(message), message.kind, persistent=False)

    def event_key(self, event: Event) -> str:
        if event.job_id is not None:
            return job_event_key(event.job_id, event.type)
        return planner_event_key(self.planner_id, event.type)

    async def publish_event(self, event: Event) -> None:
        """One event, at once (not about a job, or a job's only event)."""
        await self.broker.publish(Outgoing(self.broker.names.events_exchange, self.event_key(event), encode(event), event.kind,
                                           persistent=False))
