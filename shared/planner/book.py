"""The job book: every decision of the planner service, pure (no asyncio, no I/O, no clock).

It holds every active job (its :class:`PlannerCore`, attempts, unrouted and waiting steps,
first error, whether it is restored or stopping) and turns inputs into effects
(:mod:`shared.planner.effects`) that the service shell carries out in the order given.
Time comes in as ``now`` arguments; job ids come in with the inputs.

Inputs, and the effects each can produce:

* :meth:`accept` a validated, stored job -> ``StartJob``, ``Publish``, ``MarkDispatched``
  (``FinishJob`` for an empty graph).
* :meth:`reject` an invalid submission -> ``RejectJob``.
* :meth:`notices` workers' reports (also the outcomes the shell reads back from MongoDB:
  a missed report, a dead-lettered step) -> ``Publish`` and ``MarkDispatched`` for released
  steps, ``StopSteps`` for steps skipped by a failure, ``ControlJob`` when the job starts
  stopping, ``Emit``, ``FinishJob`` when nothing of the job can run or record any more.
* :meth:`routed` whether a ``Publish`` reached a queue -> ``Emit`` (``step.queued``), or
  ``MarkWaiting`` + ``Record`` + ``Emit`` (no queue for the device yet), or ``StopSteps``
  (the job is stopping: an unrouted step is simply not started).
* :meth:`dead_letter` a step message the broker gave up on -> ``FailStep`` + ``Record``.
* a report of a failed attempt that its task will retry (``retry_at``; MongoDB already holds
  the step queued as the next attempt) -> ``Emit`` (``step.retrying``); :meth:`due` the time
  -> ``Publish`` of the retries due (planner timers: a waiting retry holds no worker slot and no
  broker delivery).
* :meth:`lease_expired` -> ``Requeue``; :meth:`requeued` (the write matched) -> ``Publish``.
* :meth:`cancel` -> ``StopSteps`` (cancelled), ``ControlJob``, ``Emit``, ``FinishJob``; an
  unknown job -> ``FinishJob`` (the store's compare-and-set finishes it only if pending).
* :meth:`tick` the time -> a :class:`TickPlan` (what the shell should look at now);
  :meth:`presence` of consumers per device -> ``Publish`` (a queue appeared for unrouted
  steps), ``MarkWaiting`` either way, ``StopSteps`` (waiting steps of a stopping job).
* :meth:`restoring` then :meth:`restore` a job from stored state (a restarted planner) ->
  ``ControlJob`` (claim), then ``StartJob``, ``StopSteps``, ``Publish`` (claimed),
  ``FinishJob``.
* :meth:`started` / :meth:`timeout_warning` (or :meth:`progress`, both in a batch) a worker's
  word about a running attempt -> ``Emit`` (``step.running``, ``step.timeout_warning``).
* :meth:`forget` a job whose terminal state is durable.

Every input's events come out numbered per job (``Event.seq``), in effect order, with a
``ReserveSeq`` first when the job's numbers pass their reservation
(``shared/planner/numbering.py``).

Besides effects, the book keeps :attr:`JobBook.ready` (``shared/planner/readiness.py``): the
steps it published that have not started or finished, per device, for the planner's metrics.

One module on purpose, a little over our usual size: a reader follows a job through the
book alone, and every decision reads the same per-job record.

A job ends only when nothing of it can still run or record: under fail-fast or a cancel,
steps never dispatched are stopped at once, dispatched ones keep their own outcome (a
worker skips one it had not started and reports it), and ``FinishJob`` comes after every
dispatched step reported.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.messages import DEFAULT_CANCEL_GRACE_S, Event, Progress, StepErrorInfo, StepNotice, StepProgress
from shared.planner.core import PlannerCore
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
    StartJob,
    StopSteps,
)
from shared.planner.numbering import EventNumbers, numbering
from shared.planner.readiness import ReadyTracker
from shared.states import ErrorKind, JobState, StepState

MAX_BATCH = 64
MIN_MESSAGES = 32
NO_QUEUE = "no queue exists for this device: no worker of this type has ever started"
NO_CONSUMER = "its queue has no consumer"


@dataclass(frozen=True)
class JobPlan:
    """What the book needs of a validated document."""

    dependencies: Mapping[str, Sequence[str]]
    devices: Mapping[str, str]
    fail_fast: bool = True


@dataclass(frozen=True)
class StoredStep:
    """A step as MongoDB holds it (for :meth:`JobBook.restore`)."""

    state: StepState
    attempt: int = 0
    error: Mapping[str, Any] | None = None
    retry_at: float | None = None


@dataclass(frozen=True)
class TickPlan:
    """What the shell should look at on this tick."""

    devices: frozenset[str]
    """Devices with dispatched, unstarted steps: report their consumers (:meth:`JobBook.presence`)."""
    scan_leases: bool
    """Look for expired leases (:meth:`JobBook.lease_expired`)."""
    reconcile_since: float | None
    """Look for steps finished since then whose report never came (:meth:`JobBook.notices`)."""


@dataclass
class BookJob:
    job_id: str
    core: PlannerCore
    devices: Mapping[str, str]
    claim: bool = False
    """Restored: workers claim every step before running it."""
    attempts: dict[str, int] = field(default_factory=dict)
    first_error: dict[str, Any] | None = None
    unrouted: set[str] = field(default_factory=set)
    """Published, but the broker had no queue for their device: republished once one exists."""
    waiting: set[str] = field(default_factory=set)
    """Shown as waiting for a worker of their device."""
    retry_due: dict[str, float] = field(default_factory=dict)
    """Steps queued for a retry (MongoDB holds them as the next attempt), and when it is due."""
    stop_sent: StepState | None = None
    cancel_grace_s: float | None = None
    """A cancelled job's grace period for its running steps (the shortest asked for)."""
    finishing: bool = False
    numbers: EventNumbers = field(default_factory=EventNumbers)
    """Its event numbers (``Event.seq``) in this planner's term (``shared/planner/numbering.py``)."""
    """``FinishJob`` was given; the job stays until :meth:`JobBook.forget`."""


class JobBook:
    """Every active job of one planner, and every decision about them."""

    def __init__(self, *, lease_s: float = 30.0) -> None:
        self.lease_s = lease_s
        self._jobs: dict[str, BookJob] = {}
        self._lease_scan_at: float | None = None
        self._reconciled_at: float | None = None
        self.ready = ReadyTracker()
        """Steps published and not yet started or finished, per device (the planner's /metrics)."""

    # queries ------------------------------------------------------------------------------
    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __len__(self) -> int:
        return len(self._jobs)

    def job(self, job_id: str) -> BookJob | None:
        return self._jobs.get(job_id)

    def numbers(self, job_id: str) -> EventNumbers | None:
        job = self._jobs.get(job_id)
        return None if job is None else job.numbers

    def job_ids(self) -> list[str]:
        return list(self._jobs)

    # jobs ---------------------------------------------------------------------------------
    @numbering
    def accept(self, job_id: str, plan: JobPlan, now: float) -> list[Effect]:
        """A validated job, already stored: start it (a duplicate changes nothing)."""
        if job_id in self._jobs:
            return []
        job = self._add(job_id, plan)
        ready = job.core.start()
        effects: list[Effect] = [StartJob(job_id, now, len(plan.dependencies), _job_event(job_id, JobState.RUNNING, now, {"steps": len(plan.dependencies)}))]
        effects += self._dispatch(job, ready, now)
        effects += self._maybe_finish(job, now)
        return effects

    @numbering
    def reject(self, job_id: str, name: str, problems: Sequence[str], now: float) -> list[Effect]:
        event = _job_event(job_id, JobState.REJECTED, now, {"problems": list(problems), "reason": "invalid document"})
        return [RejectJob(job_id, name, tuple(problems), now, event)]

    @numbering
    def cancel(self, job_id: str, now: float, grace_s: float = DEFAULT_CANCEL_GRACE_S) -> list[Effect]:
        """Cancel the job: steps not dispatched end cancelled now; workers are told (with the
        grace period their running steps get). A second cancel with a shorter grace shortens it."""
        job = self._jobs.get(job_id)
        if job is None:  # not started here: finished only if the store has it pending
            return [FinishJob(job_id, JobState.CANCELLED, now, None, _job_event(job_id, JobState.CANCELLED, now, {}))]
        if job.finishing:
            return []
        shorter = job.cancel_grace_s is not None and grace_s < job.cancel_grace_s
        job.cancel_grace_s = grace_s if job.cancel_grace_s is None else min(grace_s, job.cancel_grace_s)
        cancelled = job.core.cancel()
        effects: list[Effect] = self._stopped(job, cancelled, StepState.CANCELLED, now)
        if shorter and job.stop_sent is StepState.CANCELLED:
            effects.append(ControlJob(job.job_id, claim=job.claim, stop=StepState.CANCELLED, grace_s=job.cancel_grace_s))
        effects += self._begin_stop(job, now)
        effects += self._maybe_finish(job, now)
        return effects

    def forget(self, job_id: str) -> None:
        """The job's terminal state is durable: it leaves memory."""
        self._jobs.pop(job_id, None)
        self.ready.forget(job_id)

    # restart ------------------------------------------------------------------------------
    @staticmethod
    def restoring(job_id: str, stop: StepState | None) -> list[Effect]:
        """Before a restarted planner reads a job's steps: tell workers to claim its steps
        (copies of its step messages may exist), keeping its stop word."""
        return [ControlJob(job_id, claim=True, stop=stop)]

    @numbering
    def restore(self, job_id: str, plan: JobPlan, stored: Mapping[str, StoredStep], now: float, *,
                stop: StepState | None = None, first_error: Mapping[str, Any] | None = None,
                event_seq: int = 0) -> list[Effect]:
        """Rebuild a job from what MongoDB holds: the decisions the live run would have made.
        ``event_seq``: the job's stored ``event_seq_reserved``; its events go on after it."""
        if job_id in self._jobs:
            return []
        job = self._add(job_id, plan, claim=True)
        job.numbers = EventNumbers.after(event_seq)
        job.first_error = dict(first_error) if first_error else None
        for name, step in stored.items():
            if name not in job.devices:
                continue
            job.attempts[name] = max(1, step.attempt)
            if step.state is StepState.FAILED and job.first_error is None:
                job.first_error = _first_error(name, step.error)
        restored = job.core.restore({n: s.state for n, s in stored.items() if n in job.devices},
                                    cancelled=stop is StepState.CANCELLED)
        effects: list[Effect] = [StartJob(job_id, now, len(plan.dependencies), _job_event(job_id, JobState.RUNNING, now, {"restored": True}))]
        stop_state = job.core.stop_state
        if restored.skipped:
            effects.append(StopSteps(job_id, tuple(restored.skipped), StepState.SKIPPED))
            effects.append(_emit(job_id, [_step_event(job_id, n, StepState.SKIPPED, now) for n in restored.skipped]))
        if restored.stopped and stop_state is not None:
            effects.append(StopSteps(job_id, tuple(restored.stopped), stop_state))
            effects.append(_emit(job_id, [_step_event(job_id, n, stop_state, now) for n in restored.stopped]))
        if stop_state is not None:
            job.stop_sent = stop_state
            effects.append(ControlJob(job_id, claim=True, stop=stop_state))
        later = {n: stored[n].retry_at for n in restored.publish if n in stored and (stored[n].retry_at or 0) > now}
        job.retry_due.update({n: at for n, at in later.items() if at is not None})
        effects += self._dispatch(job, [n for n in restored.publish if n not in later], now)
        effects += self._maybe_finish(job, now)
        return effects

    # reports ------------------------------------------------------------------------------
    @numbering
    def notices(self, notices: Iterable[StepNotice], now: float) -> list[Effect]:
        """Workers' reports (duplicates and late ones change nothing)."""
        touched: dict[str, BookJob] = {}
        ready: dict[str, list[str]] = defaultdict(list)
        stopped: dict[tuple[str, StepState], list[str]] = defaultdict(list)
        events: dict[str, list[Event]] = defaultdict(list)
        for notice in notices:
            job = self._jobs.get(notice.job_id)
            if job is None or job.finishing or notice.step not in job.devices or job.core.state(notice.step).finished:
                continue
            touched[job.job_id] = job
            job.waiting.discard(notice.step)
            job.unrouted.discard(notice.step)
            if notice.outcome == StepState.FAILED and notice.retry_at is not None:
                if notice.attempt < job.attempts.get(notice.step, 1):  # known already (a report found again in MongoDB)
                    continue
                self.ready.finished(job.job_id, notice.step)  # this attempt is over; the retry is ready when published
                events[job.job_id].append(self._retrying(job, notice, now))
                continue
            outcome = StepState(notice.outcome)
            self.ready.finished(job.job_id, notice.step)
            detail: dict[str, Any] = {"duration_s": notice.duration_s}
            if notice.error is not None:
                detail["error"] = notice.error.model_dump(mode="json")
            events[job.job_id].append(Event(type=f"step.{outcome}", job_id=job.job_id, step=notice.step, state=outcome,
                                            attempt=notice.attempt, worker_id=notice.worker_id, detail=detail, at=now))
            if outcome is StepState.SUCCEEDED:
                ready[job.job_id] += job.core.succeeded(notice.step)
            elif outcome is StepState.FAILED:
                if job.first_error is None:
                    job.first_error = _first_error(notice.step, notice.error.model_dump(mode="json") if notice.error else None)
                stopped[(job.job_id, StepState.SKIPPED)] += job.core.failed(notice.step)
            else:
                job.core.stopped(notice.step, outcome)
        effects: list[Effect] = []
        for job_id, job in touched.items():
            released = ready.get(job_id, [])
            stop = job.core.stop_state
            if stop is not None:  # released earlier in this batch than the failure, or retries: never sent
                effects += self._stop_queued(job, [*released, *job.retry_due], stop, now)
            else:
                effects += self._dispatch(job, released, now)
            for state in (StepState.SKIPPED, StepState.CANCELLED):
                effects += self._stopped(job, stopped.get((job_id, state), []), state, now, events=events[job_id])
            if events[job_id]:
                effects.append(_emit(job_id, events[job_id]))
            effects += self._begin_stop(job, now)
            effects += self._maybe_finish(job, now)
        return effects

    @numbering
    def routed(self, job_id: str, steps: Sequence[str], routed: bool, now: float) -> list[Effect]:
        """The broker confirmed a ``Publish``; ``routed`` is False when no queue took it."""
        job = self._jobs.get(job_id)
        if job is None or job.finishing:
            return []
        steps = [s for s in steps if job.core.states().get(s) is StepState.QUEUED]  # a confirm may name steps it never had
        if routed:
            job.unrouted.difference_update(steps)
            return [_emit(job_id, [_step_event(job_id, s, StepState.QUEUED, now, attempt=job.attempts.get(s, 1)) for s in steps])] if steps else []
        job.unrouted.update(steps)
        return self._mark_waiting(job, steps, NO_QUEUE, now) + self._maybe_finish(job, now)

    @numbering
    def dead_letter(self, job_id: str, step: str, attempt: int, reason: str, kind: ErrorKind, now: float, *,
                    publisher: str = "") -> list[Effect]:
        """A step message the broker dead-lettered: the step fails (recorded, even if it had
        no document), unless it finished, moved to a newer attempt, or runs under a claim made
        through another copy of its message (``publisher``) meanwhile."""
        job = self._jobs.get(job_id)
        record = Record({"type": "step.dead_lettered", "job_id": job_id, "step": step, "attempt": attempt, "reason": reason, "at": now})
        if (job is None or job.finishing or step not in job.devices or job.core.state(step).finished
                or attempt < job.attempts.get(step, attempt)):
            return [record]
        why = ("a worker refused its message" if kind is ErrorKind.REJECTED
               else "its workers crashed or gave it back too many times")
        error = StepErrorInfo(type="DeadLettered", message=f"the step's message was dead-lettered ({reason}): {why}", kind=kind)
        return [record, FailStep(job_id, step, attempt, error, publisher)]

    def next_due(self) -> float | None:
        """When the earliest waiting retry is due (None: no retry waits)."""
        return min((at for job in self._jobs.values() if not job.finishing for at in job.retry_due.values()), default=None)

    @numbering
    def due(self, now: float) -> list[Effect]:
        """Publish the retries whose time has come (the step is stored queued as that attempt)."""
        effects: list[Effect] = []
        for job in list(self._jobs.values()):
            ready = [name for name, at in job.retry_due.items() if at <= now]
            for name in ready:
                del job.retry_due[name]
            if ready and not job.finishing:
                effects += self._dispatch(job, ready, now)
        return effects

    @numbering
    def lease_expired(self, job_id: str, step: str, attempt: int, worker: str | None, now: float) -> list[Effect]:
        job = self._jobs.get(job_id)
        if job is None or job.finishing or step not in job.devices or job.core.state(step).finished:
            return []
        if attempt != job.attempts.get(step, attempt):
            return []
        return [Requeue(job_id, step, attempt, f"lease of worker {worker} expired")]

    @numbering
    def requeued(self, job_id: str, step: str, attempt: int, now: float) -> list[Effect]:
        """The step is queued again as ``attempt`` in MongoDB: publish it (a retry of a step
        that was running, so allowed in a stopping job too; its worker then skips it)."""
        job = self._jobs.get(job_id)
        if job is None or job.finishing or not job.core.requeue(step):
            return []
        job.attempts[step] = attempt
        job.waiting.discard(step)
        job.unrouted.discard(step)
        self.ready.finished(job_id, step)  # the lost attempt's publish: the new one is ready from now
        return self._dispatch(job, [step], now)

    # progress -----------------------------------------------------------------------------
    @numbering
    def started(self, job_id: str, step: str, attempt: int, worker_id: str, now: float) -> list[Effect]:
        """A worker started running an attempt of a step -> ``Emit`` (``step.running``). A
        report of an attempt that is over, or of a job or step the book does not hold, is
        dropped. Decides nothing: MongoDB has the step running only once it is claimed."""
        event = self._progress_event(job_id, step, attempt, worker_id, Progress.RUNNING, {}, now)
        return [_emit(job_id, [event])] if event is not None else []

    @numbering
    def timeout_warning(self, job_id: str, step: str, attempt: int, worker_id: str, elapsed_s: float, timeout_s: float,
                        now: float) -> list[Effect]:
        """A running attempt used 80 % of its timeout -> ``Emit`` (``step.timeout_warning``)."""
        detail = {"elapsed_s": round(elapsed_s, 3), "timeout_s": timeout_s}
        event = self._progress_event(job_id, step, attempt, worker_id, Progress.TIMEOUT_WARNING, detail, now)
        return [_emit(job_id, [event])] if event is not None else []

    @numbering
    def progress(self, reports: Iterable[StepProgress], now: float) -> list[Effect]:
        """Workers' progress reports, in order (:meth:`started`, :meth:`timeout_warning`),
        as one ``Emit`` per job."""
        events: dict[str, list[Event]] = defaultdict(list)
        for report in reports:
            detail: dict[str, Any] = {}
            if report.progress is Progress.TIMEOUT_WARNING:
                detail = {"elapsed_s": round(report.elapsed_s or 0.0, 3), "timeout_s": report.timeout_s}
            elif report.progress is Progress.METRIC:
                if report.metric is None:
                    continue
                detail = {"name": report.metric.name, "value": report.metric.value, "step": report.metric.step,
                          "logged_at": report.metric.at}
            event = self._progress_event(report.job_id, report.step, report.attempt, report.worker_id, report.progress, detail, now)
            if event is not None:
                events[report.job_id].append(event)
        return [_emit(job_id, job_events) for job_id, job_events in events.items()]

    def _progress_event(self, job_id: str, step: str, attempt: int, worker_id: str, progress: Progress,
                        detail: dict[str, Any], now: float) -> Event | None:
        job = self._jobs.get(job_id)
        if (job is None or job.finishing or step not in job.devices
                or job.core.state(step) not in (StepState.QUEUED, StepState.RUNNING) or attempt < job.attempts.get(step, attempt)):
            return None
        if progress is Progress.RUNNING:
            self.ready.started(job_id, step)
        return Event(type=f"step.{progress}", job_id=job_id, step=step, state=StepState.RUNNING, attempt=attempt,
                     worker_id=worker_id, detail=detail, at=now)

    # housekeeping -------------------------------------------------------------------------
    def tick(self, now: float) -> TickPlan:
        devices = frozenset(job.devices[name] for job in self._jobs.values() if not job.finishing
                            for name, state in job.core.states().items()
                            if state is StepState.QUEUED and name not in job.retry_due)
        scan = self._lease_scan_at is None or now - self._lease_scan_at >= min(self.lease_s / 2, 5.0)
        since = None
        if scan:
            since = (self._reconciled_at if self._reconciled_at is not None else now) - max(self.lease_s, 10.0)
            self._lease_scan_at = self._reconciled_at = now
        return TickPlan(devices, scan and bool(self._jobs), since if self._jobs else None)

    @numbering
    def presence(self, consumers: Mapping[str, int | None], now: float) -> list[Effect]:
        """Consumers per device queue (None: the queue does not exist)."""
        effects: list[Effect] = []
        for job in list(self._jobs.values()):
            if job.finishing:
                continue
            by_device: dict[str, list[str]] = defaultdict(list)
            for name, state in job.core.states().items():
                if state is StepState.QUEUED and job.devices[name] in consumers and name not in job.retry_due:
                    by_device[job.devices[name]].append(name)
            for device, names in by_device.items():
                count = consumers[device]
                if count is not None:
                    effects += self._dispatch(job, [n for n in names if n in job.unrouted], now)
                if not count:
                    effects += self._mark_waiting(job, names, NO_QUEUE if count is None else NO_CONSUMER, now)
                    continue
                back = [n for n in names if n in job.waiting and n not in job.unrouted]
                if back:
                    job.waiting.difference_update(back)
                    effects.append(MarkWaiting(job.job_id, tuple(back), False))
            effects += self._maybe_finish(job, now)
        return effects

    # internals ----------------------------------------------------------------------------
    def _add(self, job_id: str, plan: JobPlan, *, claim: bool = False) -> BookJob:
        job = BookJob(job_id, PlannerCore(plan.dependencies, fail_fast=plan.fail_fast), plan.devices, claim=claim)
        self._jobs[job_id] = job
        return job

    def _dispatch(self, job: BookJob, names: Sequence[str], now: float) -> list[Effect]:
        names = [n for n in names if job.core.state(n) is StepState.QUEUED]
        if not names:
            return []
        for name in names:
            job.attempts[name] = job.attempts.get(name) or 1
        publishes = [Publish(job.job_id, job.devices[chunk[0]], tuple((n, job.attempts[n]) for n in chunk), job.claim)
                     for chunk in _batches(job.devices, names)]
        for publish in publishes:
            self.ready.published(job.job_id, publish.names, publish.device, now)
        effects: list[Effect] = [*publishes, MarkDispatched(job.job_id, tuple(names))]
        return effects

    def _mark_waiting(self, job: BookJob, names: Sequence[str], reason: str, now: float) -> list[Effect]:
        stop = job.core.stop_state
        if stop is not None:  # not started and nobody can take it: it simply ends
            return self._stop_queued(job, names, stop, now)
        new = [n for n in names if n not in job.waiting and job.core.state(n) is StepState.QUEUED]
        if not new:
            return []
        job.waiting.update(new)
        effects: list[Effect] = [MarkWaiting(job.job_id, tuple(new), True)]
        by_device: dict[str, list[str]] = defaultdict(list)
        for name in new:
            by_device[job.devices[name]].append(name)
        for device, steps in by_device.items():
            effects.append(Record({"type": "step.waiting", "job_id": job.job_id, "device": device, "steps": steps[:100],
                                   "count": len(steps), "reason": f"waiting for a worker of type {device}: {reason}", "at": now}))
        effects.append(_emit(job.job_id, [_step_event(job.job_id, n, StepState.WAITING, now, detail={
            "device": job.devices[n], "reason": f"waiting for a worker of type {job.devices[n]}: {reason}"}) for n in new]))
        return effects

    def _begin_stop(self, job: BookJob, now: float) -> list[Effect]:
        """The first time a job is stopping: tell workers, and end the dispatched steps that
        no worker can hold (unrouted, or waiting for a device nobody serves)."""
        stop = job.core.stop_state
        if stop is None or job.stop_sent is stop:
            return []
        job.stop_sent = stop
        grace_s = job.cancel_grace_s if stop is StepState.CANCELLED else None
        effects: list[Effect] = [ControlJob(job.job_id, claim=job.claim, stop=stop, grace_s=grace_s)]
        idle = [n for n in job.unrouted | job.waiting | set(job.retry_due) if job.core.state(n) is StepState.QUEUED]
        return effects + self._stop_queued(job, sorted(idle), stop, now)

    def _stop_queued(self, job: BookJob, names: Iterable[str], stop: StepState, now: float) -> list[Effect]:
        ended = [n for n in names if job.core.state(n) is StepState.QUEUED and job.core.stopped(n, stop)]
        job.unrouted.difference_update(ended)
        job.waiting.difference_update(ended)
        for name in ended:
            job.retry_due.pop(name, None)
        return self._stopped(job, ended, stop, now)

    def _stopped(self, job: BookJob, names: Sequence[str], state: StepState, now: float,
                 events: list[Event] | None = None) -> list[Effect]:
        """Steps the core just ended unstarted: write them; their events (into ``events``
        when given, else as an effect of their own)."""
        if not names:
            return []
        for name in names:
            self.ready.finished(job.job_id, name)
        new_events = [_step_event(job.job_id, n, state, now) for n in names]
        if events is not None:
            events.extend(new_events)
            return [StopSteps(job.job_id, tuple(names), state)]
        return [StopSteps(job.job_id, tuple(names), state), _emit(job.job_id, new_events)]

    def _retrying(self, job: BookJob, notice: StepNotice, now: float) -> Event:
        """A failed attempt its task retries: due at ``retry_at`` as the next attempt, unless
        the job is stopping (then the core stops it, as any step not started)."""
        step, attempt = notice.step, notice.attempt + 1
        job.core.requeue(notice.step)
        job.attempts[step] = max(job.attempts.get(step, 1), attempt)
        job.retry_due[step] = float(notice.retry_at or now)
        detail: dict[str, Any] = {"retry_at": notice.retry_at, "delay_s": max(0.0, float(notice.retry_at or now) - now),
                                  "failed_attempt": notice.attempt}
        if notice.error is not None:
            detail["error"] = notice.error.model_dump(mode="json")
        return Event(type="step.retrying", job_id=job.job_id, step=step, state=StepState.QUEUED, attempt=attempt,
                     worker_id=notice.worker_id, detail=detail, at=now)

    def _maybe_finish(self, job: BookJob, now: float) -> list[Effect]:
        if not job.core.finished or job.finishing:
            return []
        job.finishing = True
        self.ready.forget(job.job_id)
        state = job.core.job_state
        detail = {"error": job.first_error} if job.first_error else {}
        return [FinishJob(job.job_id, state, now, job.first_error, _job_event(job.job_id, state, now, detail))]


def _batches(devices: Mapping[str, str], names: Sequence[str]) -> list[list[str]]:
    """Ready steps grouped per device into messages: one step each when few are ready (a
    chain), up to ``MAX_BATCH`` per message when many are (a fan-out), always leaving at
    least ``MIN_MESSAGES`` messages per device so that every worker gets a share."""
    by_device: dict[str, list[str]] = defaultdict(list)
    for name in names:
        by_device[devices[name]].append(name)
    chunks: list[list[str]] = []
    for steps in by_device.values():
        size = max(1, min(MAX_BATCH, len(steps) // MIN_MESSAGES))
        chunks.extend(steps[start:start + size] for start in range(0, len(steps), size))
    return chunks


def _first_error(step: str, error: Mapping[str, Any] | None) -> dict[str, Any]:
    error = error or {}
    return {"step": step, "type": str(error.get("type", "Error")), "message": str(error.get("message", "")),
            "kind": str(error.get("kind", ErrorKind.TASK))}


def _job_event(job_id: str, state: JobState, now: float, detail: dict[str, Any]) -> Event:
    return Event(type=f"job.{state}", job_id=job_id, state=state, detail=detail, at=now)


def _step_event(job_id: str, step: str, state: StepState, now: float, *, attempt: int | None = None,
                detail: dict[str, Any] | None = None) -> Event:
    return Event(type=f"step.{state}", job_id=job_id, step=step, state=state, attempt=attempt, detail=detail or {}, at=now)


def _emit(job_id: str, events: Sequence[Event]) -> Emit:
    return Emit(job_id, tuple(events))
