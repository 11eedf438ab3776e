"""The records :class:`~services.monitor_state.MonitorState` keeps per job, step and worker,
and how they become the lines of a :class:`~services.monitor_screen.Screen` (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from services.monitor_screen import (
    Alarm,
    DeviceLine,
    JobLine,
    QueueDepth,
    RunningLine,
    WorkerLine,
    WorkerStatus,
)
from shared.events import WorkerEvent
from shared.states import FINISHED_STEP_STATES, JobState, StepState

SILENT_AFTER_BEATS = 3
"""A worker not heard for this many heartbeat periods is shown as silent (probably gone)."""
FORGET_WORKER_S = 300.0
"""Workers offline or silent for longer are no longer shown."""
SHOWN_FINISHED_JOBS = 5
"""Without ``--job``: the active jobs are shown, and this many of the latest finished ones."""
READY_STATES = frozenset({StepState.QUEUED, StepState.WAITING})
"""Ready steps: dispatched, not started (``waiting``: and no worker of the device consumes)."""
RAN_STATES = frozenset({StepState.SUCCEEDED, StepState.FAILED})
"""Finished steps that a worker ran (skipped and cancelled ones may never have started)."""


@dataclass
class StepTrack:
    state: StepState = StepState.PENDING
    worker: str | None = None
    running_since: float | None = None
    ready_since: float | None = None
    """When it became ready (queued or waiting), or when a retry is due."""
    warned: bool = False
    """It passed 80 % of its timeout (``step.timeout_warning``)."""
    touched_seq: int = 0
    """The number of the last event about it."""
    metrics: dict[str, tuple[float, int | None]] = field(default_factory=dict)
    """Metric name -> its last (value, step) in the running attempt (``step.metric``)."""


@dataclass
class JobTrack:
    job_id: str
    state: JobState | None = None
    name: str | None = None
    total: int | None = None
    steps: dict[str, StepTrack] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)
    """Step -> the device its task asks for (from MongoDB, or ``step.waiting``)."""
    last_seq: int | None = None
    joined_seq: int | None = None
    gaps: int = 0
    missed: bool = False
    """A gap was heard and MongoDB has not answered yet."""
    loading: bool = False
    resyncing: bool = False
    read: bool = False
    """MongoDB answered a load with the job."""
    state_seq: int = 0
    """The number of the last job-level event heard."""
    started_at: float | None = None
    finished_at: float | None = None
    error: str | None = None
    ended: bool = False
    """The job's end is confirmed (or it was finished when first read)."""

    def step(self, name: str) -> StepTrack:
        return self.steps.setdefault(name, StepTrack())

    @property
    def finished(self) -> bool:
        return self.state is not None and self.state.finished


@dataclass
class WorkerTrack:
    event: WorkerEvent
    """The latest event of the worker (its numbers, load and time)."""
    offline: bool = False

    def status(self, now: float) -> WorkerStatus:
        if self.offline:
            return WorkerStatus.OFFLINE
        silent = now - self.event.at > SILENT_AFTER_BEATS * self.event.heartbeat_s
        return WorkerStatus.SILENT if silent else WorkerStatus.ONLINE

    def shown(self, now: float) -> bool:
        return self.status(now) is WorkerStatus.ONLINE or now - self.event.at <= FORGET_WORKER_S

    def line(self, now: float) -> WorkerLine:
        e = self.event
        return WorkerLine(e.worker_id, e.device, self.status(now), e.busy, e.slots, e.held, e.completed, max(0.0, now - e.at))


def shown_jobs(jobs: Iterable[JobTrack], watching: str | None) -> list[JobTrack]:
    """The watched job; else the active jobs, then the latest finished ones."""
    jobs = list(jobs)
    if watching is not None:
        return [j for j in jobs if j.job_id == watching]
    finished = sorted((j for j in jobs if j.finished), key=lambda j: j.finished_at or 0.0)
    return [j for j in jobs if not j.finished] + finished[-SHOWN_FINISHED_JOBS:]


def job_line(job: JobTrack, now: float) -> JobLine:
    counts = Counter(step.state for step in job.steps.values())
    if job.total is not None:
        counts[StepState.PENDING] = max(0, job.total - sum(n for s, n in counts.items() if s is not StepState.PENDING))
    running = sorted(((name, s) for name, s in job.steps.items() if s.state is StepState.RUNNING),
                     key=lambda item: (item[1].running_since or now, item[0]))
    end = job.finished_at if job.finished_at is not None else (None if job.finished else now)
    return JobLine(
        job_id=job.job_id, name=job.name, state=job.state, total=job.total,
        done=sum(n for s, n in counts.items() if s in FINISHED_STEP_STATES),
        counts={state: counts[state] for state in StepState if counts[state]},
        running=tuple(RunningLine(name, s.worker, None if s.running_since is None else max(0.0, now - s.running_since), s.warned,
                                  tuple((metric, value, at) for metric, (value, at) in s.metrics.items()))
                      for name, s in running),
        ran_on=tuple(Counter(s.worker for s in job.steps.values() if s.worker and s.state in RAN_STATES).most_common()),
        elapsed_s=None if job.started_at is None or end is None else max(0.0, end - job.started_at),
        missed=job.missed, gaps=job.gaps, joined_seq=job.joined_seq, error=job.error,
    )


ReadyStep = tuple[str, str, StepTrack]
"""(job, step, its track)."""


def ready_by_device(jobs: Iterable[JobTrack]) -> dict[str, list[ReadyStep]]:
    """Per device: the steps of unfinished jobs that are queued or waiting."""
    ready: dict[str, list[ReadyStep]] = {}
    for job in jobs:
        if job.finished:
            continue
        for name, step in job.steps.items():
            if step.state in READY_STATES and name in job.devices:
                ready.setdefault(job.devices[name], []).append((job.job_id, name, step))
    return ready


def device_lines(workers: Sequence[WorkerTrack], ready: Mapping[str, list[ReadyStep]],
                 queues: Mapping[str, QueueDepth | None], now: float) -> list[DeviceLine]:
    by_device: dict[str, list[WorkerTrack]] = {}
    for worker in workers:
        by_device.setdefault(worker.event.device, []).append(worker)
    lines = []
    for device in sorted(set(by_device) | set(ready) | set(queues)):
        mine = by_device.get(device, [])
        live = [w for w in mine if w.status(now) is WorkerStatus.ONLINE]
        since = [s.ready_since for _, _, s in ready.get(device, []) if s.ready_since is not None]
        heard = [w.event.at for w in mine if not w.offline]
        lines.append(DeviceLine(
            device=device, online=len(live), silent=sum(1 for w in mine if w.status(now) is WorkerStatus.SILENT),
            busy=sum(w.event.busy for w in live), slots=sum(w.event.slots for w in live), held=sum(w.event.held for w in live),
            last_beat_s=max(0.0, now - max(heard)) if heard else None,
            queue=queues.get(device), probed=device in queues,
            ready=len(ready.get(device, [])), oldest_ready_s=max(0.0, now - min(since)) if since else None,
        ))
    return lines


def alarms(workers: Sequence[WorkerTrack], ready: Mapping[str, list[ReadyStep]],
           queues: Mapping[str, QueueDepth | None], now: float) -> list[Alarm]:
    """Devices with ready steps that no worker serves: none heard online, and the broker
    (once asked) counts no consumer on their queue. Steps the planner marked ``waiting`` count
    at once; merely queued ones only once the broker has been asked (workers heard from a
    monitor that just started may not have beaten yet)."""
    served = {w.event.device for w in workers if w.status(now) is WorkerStatus.ONLINE}
    found = []
    for device, steps in sorted(ready.items()):
        probed, queue = device in queues, queues.get(device)
        if device in served or (queue is not None and queue.consumers > 0):
            continue
        waiting = [(j, n) for j, n, s in steps if s.state is StepState.WAITING]
        if not waiting and not probed:
            continue
        shown = waiting or [(j, n) for j, n, _ in steps]
        reason = "" if not probed else "its queue does not exist" if queue is None else "its queue has no consumer"
        found.append(Alarm(device, tuple(n for _, n in shown), tuple(sorted({j for j, _ in shown})), reason))
    return found
