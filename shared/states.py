"""The one definition of job and step states and of step error kinds.

The planner core, the job book, the store, the client, the events and the embedded runner
all use these enums; MongoDB and the messages hold their values (``StrEnum``: a member is
its string, so ``f"step.{state}"`` is ``"step.succeeded"``).
"""

from __future__ import annotations

from enum import StrEnum


class StepState(StrEnum):
    PENDING = "pending"
    """Not dispatched yet (in MongoDB: no step document, or one the planner created)."""
    QUEUED = "queued"
    """Dispatched to its device queue; not started."""
    WAITING = "waiting"
    """Stored only: queued, but no worker of the step's device consumes (or its queue does not
    exist). The planner core sees it as ``QUEUED``."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED_STEP_STATES

    @property
    def core(self) -> StepState:
        """The planner core's view of a stored state (``waiting`` is ``queued`` to the core)."""
        return StepState.QUEUED if self is StepState.WAITING else self


class JobState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    REJECTED = "rejected"
    """The submission never became a job: its document or parameters are invalid, or the
    validator gave up on it; the job record holds the problems."""

    @property
    def finished(self) -> bool:
        return self in FINISHED_JOB_STATES


class ErrorKind(StrEnum):
    """Why a step failed: only ``task`` is the task's own doing."""

    TASK = "task"
    """The task raised (after its own retries)."""
    TIMEOUT = "timeout"
    """The task ran past its ``timeout``."""
    LOST = "lost"
    """Its workers died or gave it back until the broker's delivery limit was reached."""
    INFRASTRUCTURE = "infrastructure"
    """MongoDB, GridFS or the codec failed around the task, more times than allowed."""
    REJECTED = "rejected"
    """A worker refused the step's message (malformed, or for another device)."""


FINISHED_STEP_STATES = frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED})
NOT_STARTED_STATES = (StepState.PENDING, StepState.QUEUED, StepState.WAITING)
STOP_STATES = frozenset({StepState.SKIPPED, StepState.CANCELLED})
"""What a dispatched step becomes when its job stops before the step started."""
ACTIVE_JOB_STATES = (JobState.PENDING, JobState.RUNNING)
FINISHED_JOB_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.REJECTED})
