"""A simulated cluster around the job book: a store, a broker and workers, all in memory.

The world carries out the book's effects the way the planner shell does, with the store's
compare-and-sets (``shared/store/steps.py``) and the worker's rules (claim when told or
redelivered, skip when the job is stopping, claim after a while), so that tests can drive
any interleaving of deliveries, reports, deaths, dead letters, lease expiries, cancels and
planner restarts, and check the invariants of issue 8 as they happen.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from shared.messages import Event, StepErrorInfo, StepNotice
from shared.planner.book import JobBook, JobPlan, StoredStep
from shared.planner.effects import (
    ControlJob,
    Effect,
    Emit,
    FailStep,
    FinishJob,
    MarkWaiting,
    Publish,
    Requeue,
    ReserveSeq,
    StartJob,
    StopSteps,
)
from shared.states import FINISHED_STEP_STATES, NOT_STARTED_STATES, ErrorKind, JobState, StepState

JOB = "job"


class Violation(AssertionError):
    pass


@dataclass
class Doc:
    state: StepState
    attempt: int = 0
    copy: int = 0
    """The planner generation whose message copy the claim was made through."""


@dataclass
class Message:
    step: str
    attempt: int
    claim: bool
    copy: int = 0
    redelivered: bool = False


@dataclass
class Run:
    """A worker running one step attempt."""

    step: str
    attempt: int
    worker: int
    claimed: bool
    message: Message


@dataclass
class World:
    plan: JobPlan
    book: JobBook = field(default_factory=JobBook)
    docs: dict[str, Doc] = field(default_factory=dict)
    job_state: JobState = JobState.PENDING
    control: tuple[bool, StepState | None] = (False, None)
    queues: dict[str, list[Message]] = field(default_factory=dict)
    queue_exists: dict[str, bool] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)
    notices: list[StepNotice] = field(default_factory=list)
    finishes: list[JobState] = field(default_factory=list)
    """Terminal states the store accepted (compare-and-set from pending/running)."""
    stopped_by_planner: set[str] = field(default_factory=set)
    cancelled: bool = False
    generation: int = 0
    """Which planner publishes (a restart is a new planner, so a new copy id)."""
    now: float = 1000.0
    _workers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    reserved: int = 0
    """The job document's ``event_seq_reserved``: what ``ReserveSeq`` effects wrote."""
    term_first: int = 1
    """The first event number of the current planner (a restart starts after ``reserved``)."""
    term_seqs: list[int] = field(default_factory=list)
    seqs: set[int] = field(default_factory=set)
    """Every event number given, by every planner."""
    ended: set[str] = field(default_factory=set)
    """Steps whose final event (succeeded, failed, skipped, cancelled) was emitted."""
    progress: list[tuple[str, int, str]] = field(default_factory=list)
    """Runs' "started" reports on their way to the planner: (step, attempt, worker)."""
    running_events: list[Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        for device in set(self.plan.devices.values()):
            self.queues.setdefault(device, [])
            self.queue_exists.setdefault(device, True)

    # the planner's side ---------------------------------------------------------------------
    def submit(self) -> None:
        self.job_state = JobState.PENDING
        self.apply(self.book.accept(JOB, self.plan, self._tick()))

    def cancel(self) -> None:
        self.cancelled |= not self.job_state.finished
        self.apply(self.book.cancel(JOB, self._tick()))

    def restart(self) -> None:
        """A new planner: a new book restored from what the store holds."""
        self.check_event_numbers()
        self.book = JobBook()
        self.generation += 1
        if self.job_state.finished:
            return
        self.term_first, self.term_seqs = self.reserved + 1, []
        self.apply(JobBook.restoring(JOB, self.control[1]))
        for run in self.runs:  # the claim broadcast, then the wait of claim_after_s
            self._claim_running(run)
        stored = {name: StoredStep(doc.state, doc.attempt) for name, doc in self.docs.items()}
        self.apply(self.book.restore(JOB, self.plan, stored, self._tick(), stop=self.control[1], event_seq=self.reserved))

    def tick(self, consumers: Mapping[str, int | None] | None = None) -> None:
        self.apply(self.book.due(self._tick()))
        plan = self.book.tick(self._tick())
        present = consumers or {d: (1 if self.queue_exists[d] else None) for d in self.queues}
        self.apply(self.book.presence({d: present.get(d, 1) for d in plan.devices}, self._tick()))
        if plan.reconcile_since is not None:
            self.apply(self.book.notices([self._notice(n, d) for n, d in self.docs.items() if d.state in FINISHED_STEP_STATES],
                                         self._tick()))

    def expire_lease(self, index: int) -> None:
        claimed = [(n, d) for n, d in self.docs.items() if d.state is StepState.RUNNING]
        if claimed:
            name, doc = claimed[index % len(claimed)]
            self.apply(self.book.lease_expired(JOB, name, doc.attempt, "w", self._tick()))

    def deliver_notice(self, index: int, *, duplicate: bool = False) -> None:
        if self.notices:
            notice = self.notices[index % len(self.notices)] if duplicate else self.notices.pop(index % len(self.notices))
            self.apply(self.book.notices([notice], self._tick()))

    def dead_letter(self, device: str, index: int, kind: ErrorKind = ErrorKind.LOST) -> None:
        queue = self.queues[device]
        if queue:
            message = queue.pop(index % len(queue))
            self.apply(self.book.dead_letter(JOB, message.step, message.attempt, "delivery_limit", kind, self._tick(),
                                             publisher=str(message.copy)))

    def apply(self, effects: Sequence[Effect]) -> None:
        for effect in effects:
            self._effect(effect)

    def _effect(self, effect: Effect) -> None:
        match effect:
            case Publish():
                self._check_publish(effect)
                device = effect.device
                if self.queue_exists[device]:
                    self.queues[device] += [Message(s, a, effect.claim, self.generation) for s, a in effect.steps]
                self.apply(self.book.routed(JOB, effect.names, self.queue_exists[device], self._tick()))
            case StartJob():
                self._check_events([effect.event])
                if self.job_state in (JobState.PENDING, JobState.RUNNING):
                    self.job_state = JobState.RUNNING
            case StopSteps(steps=steps, state=state):
                for name in steps:
                    doc = self.docs.get(name)
                    if any(run.step == name for run in self._current_runs()):
                        raise Violation(f"{name} marked {state} while a worker runs it")
                    if doc is None or doc.state in NOT_STARTED_STATES:
                        self.docs[name] = Doc(state, doc.attempt if doc else 0)
                        self.stopped_by_planner.add(name)
            case MarkWaiting(steps=steps, waiting=waiting):
                for name in steps:
                    doc = self.docs.get(name)
                    if waiting and (doc is None or doc.state in (StepState.PENDING, StepState.QUEUED)):
                        self.docs[name] = Doc(StepState.WAITING, doc.attempt if doc else 0)
                    elif not waiting and doc is not None and doc.state is StepState.WAITING:
                        doc.state = StepState.QUEUED
            case ControlJob(claim=claim, stop=stop):
                self.control = (claim, stop)
                if claim:
                    for run in self.runs:
                        self._claim_running(run)
            case FailStep(step=name, attempt=attempt, error=error, publisher=publisher):
                doc = self.docs.get(name)
                unstarted = doc is None or (doc.state in NOT_STARTED_STATES and doc.attempt <= attempt)
                held_by_it = (doc is not None and doc.state is StepState.RUNNING and doc.attempt == attempt
                              and str(doc.copy) == publisher)
                if unstarted or held_by_it:
                    if held_by_it and any(run.step == name for run in self.runs):
                        raise Violation(f"{name} failed by a dead letter while its claim's holder runs it")
                    self.docs[name] = Doc(StepState.FAILED, attempt)
                doc = self.docs[name]
                if doc.state in FINISHED_STEP_STATES:
                    self.apply(self.book.notices([self._notice(name, doc, error)], self._tick()))
            case Requeue(step=name, attempt=attempt):
                doc = self.docs.get(name)
                if doc is not None and doc.attempt == attempt and doc.state in (StepState.QUEUED, StepState.WAITING, StepState.RUNNING):
                    doc.state, doc.attempt = StepState.QUEUED, attempt + 1
                    self.apply(self.book.requeued(JOB, name, attempt + 1, self._tick()))
            case FinishJob(state=state):
                if effect.event.seq is not None:
                    self._check_events([effect.event])
                elif JOB in self.book or self.job_state in (JobState.PENDING, JobState.RUNNING):
                    raise Violation(f"{effect.event.type} without a number")  # else not published (a cancel of a finished job)
                if self._current_runs():
                    raise Violation(f"job finished {state} while {[r.step for r in self._current_runs()]} run")
                unfinished = [n for n in self.plan.dependencies if n not in self.docs or self.docs[n].state not in FINISHED_STEP_STATES]
                if unfinished:
                    raise Violation(f"job finished {state} with steps not finished in the store: {unfinished}")
                if self.job_state in (JobState.PENDING, JobState.RUNNING):
                    self.job_state = state
                    self.finishes.append(state)
                self.book.forget(JOB)
            case ReserveSeq(start=start, upto=upto):
                if start != self.term_first:
                    raise Violation(f"the planner numbers from {start}, expected {self.term_first}")
                self.reserved = max(self.reserved, upto)
            case Emit(events=events):
                self._check_events(events)
            case _:
                pass

    def _check_events(self, events: Sequence[Event]) -> None:
        """Every event of the job is numbered, within a durable reservation, never twice; no
        step is reported running after its final event."""
        for event in events:
            if event.seq is None:
                raise Violation(f"{event.type} of {event.step} without a number")
            if event.seq in self.seqs:
                raise Violation(f"event number {event.seq} given twice ({event.type} of {event.step})")
            if event.seq > self.reserved:
                raise Violation(f"event number {event.seq} above the reservation {self.reserved}")
            self.seqs.add(event.seq)
            self.term_seqs.append(event.seq)
            if event.type == "step.running":
                if event.step in self.ended:
                    raise Violation(f"{event.step} reported running after its final event")
                self.running_events.append(event)
            elif event.type in ("step.succeeded", "step.failed", "step.skipped", "step.cancelled"):
                self.ended.add(str(event.step))

    def check_event_numbers(self) -> None:
        """The current planner's numbers have no hole: its events make one stream."""
        expected = list(range(self.term_first, self.term_first + len(self.term_seqs)))
        if sorted(self.term_seqs) != expected:
            raise Violation(f"event numbers of this planner have holes: {sorted(self.term_seqs)}")

    def _check_publish(self, effect: Publish) -> None:
        job = self.book.job(JOB)
        stopping = job is not None and job.core.stop_state is not None
        for name, _attempt in effect.steps:
            doc = self.docs.get(name)
            if doc is not None and doc.state is StepState.SUCCEEDED:
                raise Violation(f"{name} dispatched again after it succeeded")
            requeued = doc is not None and doc.state is StepState.QUEUED and doc.attempt > 1
            if stopping and not requeued:
                raise Violation(f"{name} dispatched after the job began stopping (not a retry of a running step)")

    # the workers' side ----------------------------------------------------------------------
    def deliver(self, device: str, index: int) -> None:
        """A worker takes a message and decides as services/worker_control.py does."""
        queue = self.queues[device]
        if not queue:
            return
        message = queue.pop(index % len(queue))
        claim, stop = self.control
        name, attempt = message.step, message.attempt
        doc = self.docs.get(name)
        if stop is not None:
            if doc is None or (doc.state in NOT_STARTED_STATES and doc.attempt <= attempt):
                self.docs[name] = Doc(stop, attempt)
                self.notices.append(self._notice(name, self.docs[name]))
            else:
                self._finished_notice(name, attempt)
            return
        if message.claim or claim or message.redelivered:
            unstarted = doc is None or (doc.attempt <= attempt and doc.state in NOT_STARTED_STATES)
            take_over = (message.redelivered and doc is not None and doc.state is StepState.RUNNING and doc.attempt == attempt
                         and doc.copy == message.copy)
            if unstarted or take_over:
                self.docs[name] = Doc(StepState.RUNNING, attempt, message.copy)
                self._start(Run(name, attempt, next(self._workers), True, message))
            else:
                self._finished_notice(name, attempt)
            return
        self._start(Run(name, attempt, next(self._workers), False, message))

    def _current_runs(self) -> list[Run]:
        """Runs of the attempt the store holds as current: a run of an older attempt lost its
        lease (its worker looked dead and the step was re-queued) and no longer counts."""
        return [run for run in self.runs if run.step not in self.docs or run.attempt >= self.docs[run.step].attempt]

    def _start(self, run: Run) -> None:
        if any(r.step == run.step and r.attempt == run.attempt for r in self.runs):
            raise Violation(f"two workers run {run.step} attempt {run.attempt} at once")
        self.runs.append(run)
        self.progress.append((run.step, run.attempt, f"w{run.worker}"))

    def report_started(self, index: int) -> None:
        """A run's "started" report reaches the planner (maybe late: after the run ended, was
        lost, or was superseded by a newer attempt)."""
        if self.progress:
            step, attempt, worker = self.progress.pop(index % len(self.progress))
            self.apply(self.book.started(JOB, step, attempt, worker, self._tick()))

    def _claim_running(self, run: Run) -> None:
        if run.claimed:
            return
        doc = self.docs.get(run.step)
        if doc is None or (doc.state in NOT_STARTED_STATES and doc.attempt <= run.attempt):
            self.docs[run.step] = Doc(StepState.RUNNING, run.attempt, run.message.copy)
            run.claimed = True

    def claim_after(self, index: int) -> None:
        if self.runs:
            self._claim_running(self.runs[index % len(self.runs)])

    def finish(self, index: int, succeeded: bool, *, retry: bool = False) -> None:
        """A run ends; ``retry``: it failed and its task retries (at most twice per step)."""
        if not self.runs:
            return
        run = self.runs.pop(index % len(self.runs))
        doc = self.docs.get(run.step)
        state = StepState.SUCCEEDED if succeeded else StepState.FAILED
        unfinished = doc is None or (doc.state in (*NOT_STARTED_STATES, StepState.RUNNING) and doc.attempt <= run.attempt)
        if unfinished and retry and not succeeded and run.attempt < 3:
            self.docs[run.step] = Doc(StepState.QUEUED, run.attempt + 1)
            self.notices.append(StepNotice(job_id=JOB, step=run.step, attempt=run.attempt, outcome=StepState.FAILED, worker_id="w",
                                           error=StepErrorInfo(type="Flaky", message="try again"), retry_at=self.now + 3))
            return
        if unfinished:
            self.docs[run.step] = Doc(state, run.attempt)
            self.notices.append(self._notice(run.step, self.docs[run.step]))
            return
        assert doc is not None
        if doc.state in (StepState.SKIPPED, StepState.CANCELLED) and doc.attempt <= run.attempt:
            raise Violation(f"{run.step} ran to the end but the store had it {doc.state}: its result was discarded")
        self._finished_notice(run.step, run.attempt)

    def lose_worker(self, index: int) -> None:
        """A worker dies mid-step: its message comes back, redelivered."""
        if self.runs:
            run = self.runs.pop(index % len(self.runs))
            self.queues[self.plan.devices[run.step]].append(Message(run.step, run.attempt, run.message.claim, run.message.copy,
                                                                    redelivered=True))

    def vanish(self, index: int) -> None:
        """A worker dies holding a claimed step whose delivery it had acked early (a long
        step): only the step's lease can bring it back."""
        claimed = [run for run in self.runs if run.claimed]
        if claimed:
            self.runs.remove(claimed[index % len(claimed)])

    def deliver_all_notices(self, order: int) -> None:
        """Reports arriving together (one batch), in some order."""
        if self.notices:
            batch, self.notices = self.notices, []
            shift = order % len(batch)
            self.apply(self.book.notices(batch[shift:] + batch[:shift], self._tick()))

    def _finished_notice(self, name: str, attempt: int) -> None:
        doc = self.docs.get(name)
        if doc is not None and doc.attempt == attempt and doc.state in FINISHED_STEP_STATES:
            self.notices.append(self._notice(name, doc))

    # helpers --------------------------------------------------------------------------------
    def _notice(self, name: str, doc: Doc, error: StepErrorInfo | None = None) -> StepNotice:
        if doc.state is StepState.FAILED and error is None:
            error = StepErrorInfo(type="Boom", message="it failed")
        return StepNotice(job_id=JOB, step=name, attempt=max(1, doc.attempt), outcome=doc.state,  # type: ignore[arg-type]
                          worker_id="w", error=error if doc.state is StepState.FAILED else None)

    def _tick(self) -> float:
        self.now += 1.0
        return self.now

    def quiesce(self, rounds: int = 200) -> None:
        """Let everything settle: workers for every device, every message delivered and
        finished successfully, every report delivered, leases of lost steps expired."""
        for device in self.queues:
            self.queue_exists[device] = True
        for _ in range(rounds):
            if self.job_state.finished and not self.runs and not any(self.queues.values()):
                return
            self.tick()
            for device, queue in self.queues.items():
                while queue:
                    self.deliver(device, 0)
            while self.progress:
                self.report_started(0)
            while self.runs:
                self.finish(0, succeeded=True)
            while self.notices:
                self.deliver_notice(0)
            for index in range(len(self.docs)):
                self.expire_lease(index)
        raise Violation(f"the job never finished: {self.job_state}, book has it: {JOB in self.book}, docs {self.docs}")
