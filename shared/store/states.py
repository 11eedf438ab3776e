"""Step and job states as stored; ``waiting`` is a queued step no worker of its device can take."""

from __future__ import annotations

from enum import Enum

from shared.planner.core import JobState, StepState


class StoredStepState(str, Enum):
    PENDING = "pending"
    QUEUED = "queued"
    WAITING = "waiting"
    """Queued, but no worker of the step's device is consuming (or its queue does not exist)."""
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


FINAL_STEP_STATES = frozenset({"succeeded", "failed", "skipped", "cancelled"})
NOT_STARTED_STATES = ("pending", "queued", "waiting")
ACTIVE_JOB_STATES = (JobState.PENDING.value, JobState.RUNNING.value)
FINAL_JOB_STATES = frozenset({JobState.SUCCEEDED.value, JobState.FAILED.value, JobState.CANCELLED.value})


def core_state(stored: str) -> StepState:
    """The planner core's view of a stored state (``waiting`` is ``queued`` to the core)."""
    return StepState.QUEUED if stored == StoredStepState.WAITING.value else StepState(stored)
