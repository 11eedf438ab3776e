"""What ``theodolite monitor`` draws: a :class:`Screen`, plain data.

:meth:`services.monitor_state.MonitorState.screen` builds it (through
:mod:`services.monitor_tracks`) at a given time; :mod:`services.monitor_view` turns it into
rich renderables. Times are ages in seconds at that moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.states import JobState, StepState


class WorkerStatus(StrEnum):
    ONLINE = "online"
    SILENT = "silent"
    """No heartbeat for ``SILENT_AFTER_BEATS`` periods, and no ``worker.offline``."""
    OFFLINE = "offline"


@dataclass(frozen=True)
class QueueDepth:
    """A device queue as the broker reports it (a passive declare)."""

    messages: int
    """Ready messages in the queue (not those workers hold)."""
    consumers: int


@dataclass(frozen=True)
class RunningLine:
    step: str
    worker: str | None
    for_s: float | None
    warned: bool
    """The step passed 80 % of its timeout (``step.timeout_warning``)."""
    metrics: tuple[tuple[str, float, int | None], ...] = ()
    """The last value of each metric its task logged in this attempt: (name, value, its step)."""


@dataclass(frozen=True)
class JobLine:
    job_id: str
    name: str | None
    state: JobState | None
    total: int | None
    done: int
    counts: dict[StepState, int]
    running: tuple[RunningLine, ...]
    ran_on: tuple[tuple[str, int], ...]
    """The workers that ran its finished steps, with how many each (most first)."""
    elapsed_s: float | None
    missed: bool
    """A gap was heard and MongoDB has not answered yet."""
    gaps: int
    joined_seq: int | None
    """The first number heard, when above 1 (the monitor joined late)."""
    error: str | None


@dataclass(frozen=True)
class DeviceLine:
    device: str
    online: int
    silent: int
    busy: int
    slots: int
    held: int
    last_beat_s: float | None
    queue: QueueDepth | None
    probed: bool
    """Whether ``queue`` comes from the broker (None then: the queue does not exist)."""
    ready: int
    oldest_ready_s: float | None


@dataclass(frozen=True)
class WorkerLine:
    worker_id: str
    device: str
    status: WorkerStatus
    busy: int
    slots: int
    held: int
    completed: int
    last_seen_s: float


@dataclass(frozen=True)
class Alarm:
    """Steps waiting for a device that no worker serves."""

    device: str
    steps: tuple[str, ...]
    jobs: tuple[str, ...]
    reason: str
    """What the broker says, once asked: its queue does not exist, or has no consumer."""


@dataclass(frozen=True)
class Screen:
    watching: str | None
    jobs: tuple[JobLine, ...]
    devices: tuple[DeviceLine, ...]
    workers: tuple[WorkerLine, ...]
    alarms: tuple[Alarm, ...]
    events: int
    rejected_messages: int
