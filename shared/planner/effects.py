"""What the job book asks its shell to do: typed effects, carried out in the order given.

Writes go through the shell's one ordered writer (retried until they succeed); publishes
are confirmed by the broker and their routing reported back (:meth:`JobBook.routed`).
Three effects are questions as much as orders: the shell reports what MongoDB answered
(:class:`FailStep` -> :meth:`JobBook.notices` with the stored outcome, :class:`Requeue` ->
:meth:`JobBook.requeued`, :class:`FinishJob` -> :meth:`JobBook.forget` once durable).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shared.messages import Event, StepErrorInfo
from shared.states import JobState, StepState


@dataclass(frozen=True)
class Publish:
    """One step message (one step, or a batch of one job's steps for one device)."""

    job_id: str
    device: str
    steps: tuple[tuple[str, int], ...]
    """(step, attempt) pairs."""
    claim: bool = False
    """Workers claim these steps before running them (the job was restored)."""

    @property
    def names(self) -> list[str]:
        return [step for step, _ in self.steps]


@dataclass(frozen=True)
class StartJob:
    """Write: the job is running (under this planner); then emit ``event`` (``job.running``)."""

    job_id: str
    at: float
    steps: int
    event: Event = field(hash=False)


@dataclass(frozen=True)
class MarkDispatched:
    """Write: a dispatch round (informational, for people)."""

    job_id: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class StopSteps:
    """Write: steps that had not started are skipped or cancelled (compare-and-set)."""

    job_id: str
    steps: tuple[str, ...]
    state: StepState


@dataclass(frozen=True)
class MarkWaiting:
    """Write: steps wait for a worker of their device (or no longer do)."""

    job_id: str
    steps: tuple[str, ...]
    waiting: bool


@dataclass(frozen=True)
class ControlJob:
    """Write the job's control word, then broadcast it to every worker (JobControl)."""

    job_id: str
    claim: bool
    stop: StepState | None
    grace_s: float | None = None
    """A cancel's grace period: running steps are stopped that long after the word."""


@dataclass(frozen=True)
class FailStep:
    """Write: fail a step the planner gave up on (dead-lettered); created if absent.

    The shell feeds the outcome MongoDB then holds back as a notice (a step that finished
    first keeps its result)."""

    job_id: str
    step: str
    attempt: int
    error: StepErrorInfo
    publisher: str = ""
    """Who published the dead-lettered copy: a running claim made through another copy is
    someone else's live run and is left alone."""


@dataclass(frozen=True)
class Requeue:
    """Write: a running step whose lease expired goes back to queued with a new attempt;
    the shell reports the new attempt (:meth:`JobBook.requeued`) when the write matched."""

    job_id: str
    step: str
    attempt: int
    reason: str


@dataclass(frozen=True)
class Emit:
    """Step events, for monitors (published in batches, off the critical path)."""

    job_id: str
    events: tuple[Event, ...]


@dataclass(frozen=True)
class ReserveSeq:
    """Write: the job's event numbers up to ``upto`` are this planner's
    (``event_seq_reserved`` on the job document, fenced). No event numbered above the last
    durable reservation is published before it, so a planner that takes over (and starts
    after the stored reservation) never reuses a number. ``start`` is this planner's first
    number for the job: where the stream it publishes begins."""

    job_id: str
    start: int
    upto: int


@dataclass(frozen=True)
class Record:
    """Write: an event document for people (``events`` collection), e.g. waiting steps."""

    document: dict[str, Any] = field(hash=False)


@dataclass(frozen=True)
class FinishJob:
    """Write: the job's terminal state, after every write of it before; then emit its job
    event; then :meth:`JobBook.forget` it."""

    job_id: str
    state: JobState
    at: float
    error: dict[str, Any] | None = field(hash=False)
    event: Event = field(hash=False)


@dataclass(frozen=True)
class RejectJob:
    """Write: a submission that never became a job, with its problems; then emit
    ``job.rejected``."""

    job_id: str
    name: str
    problems: tuple[str, ...]
    at: float
    event: Event = field(hash=False)


Effect = (Publish | StartJob | MarkDispatched | StopSteps | MarkWaiting | ControlJob | FailStep | Requeue | Emit | Record
          | FinishJob | RejectJob | ReserveSeq)
