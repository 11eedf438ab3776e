"""What ``theodolite monitor`` knows about a cluster, built from its events alone (sans-I/O).

:class:`MonitorState` takes the events a monitor hears (:class:`~shared.events.Event`,
:class:`~shared.events.WorkerEvent`), the job snapshots it asked MongoDB for
(:class:`~services.job_views.JobStatus`, the view of ``theodolite status``) and the depths of
the device queues, and answers with :meth:`MonitorState.screen`: what to draw at a given time
(:mod:`services.monitor_view` draws it). It has no clock, socket or task: time comes in as
``now`` arguments and event times, and what it needs from outside comes out as requests
(:class:`LoadJob`, :class:`ConfirmEnd`) that the shell (:mod:`services.monitor_feed`) carries
out and feeds back.

The rules it keeps (docs/events.md):

* a job's events are numbered 1, 2, 3, ...: a number seen before is a repeat (dropped, and not
  printed again by ``--json``); a number that skips ahead is a **gap**: the job is marked
  "may have missed events" and its state is read again from MongoDB (:class:`LoadJob` with
  ``resync``). Steps that events touched after the request keep what the events said.
* a job first heard at a number above 1 (the monitor joined late) is read from MongoDB too,
  quietly: that is no gap. A job first heard at 1 is read for its step count and devices only.
* with ``--job``, the monitor is :attr:`MonitorState.done` once the job's terminal event was
  heard **and** MongoDB confirmed it was the job's last end (a resumed job ends more than
  once), or when the job was already finished when it was first read and no replay is coming.
* a worker is online until its ``worker.offline``; without one, ``SILENT_AFTER_BEATS``
  missed heartbeats make it *silent* (a killed worker only stops beating).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from services.monitor_screen import QueueDepth, Screen
from services.monitor_tracks import (
    READY_STATES,
    JobTrack,
    StepTrack,
    WorkerTrack,
    alarms,
    device_lines,
    job_line,
    ready_by_device,
    shown_jobs,
)
from shared.events import Event, WorkerEvent, WorkerEventType
from shared.states import JobState, StepState

if TYPE_CHECKING:
    from services.job_views import JobStatus

KEEP_FINISHED_JOBS = 20
"""Finished jobs kept (the newest); older ones are forgotten (``--job`` keeps its own)."""


# requests to the shell -------------------------------------------------------------------
@dataclass(frozen=True)
class LoadJob:
    """Read the job from MongoDB and hand it to :meth:`MonitorState.loaded`."""

    job_id: str
    resync: bool
    """Take its step states too (a gap, or joined late); else only its size and devices."""
    after_seq: int
    """The last number heard when asked: steps touched by later events keep their state."""


@dataclass(frozen=True)
class ConfirmEnd:
    """Ask MongoDB whether the terminal event at ``at`` is the job's last end; answer with
    :meth:`MonitorState.end_checked`."""

    job_id: str
    at: float


Request = LoadJob | ConfirmEnd


@dataclass(frozen=True)
class Gap:
    job_id: str
    after: int
    got: int

    def describe(self) -> str:
        missed = f"event {self.after + 1}" if self.got == self.after + 2 else f"events {self.after + 1}..{self.got - 1}"
        return (f"job {self.job_id}: {missed} missed (heard {self.after}, then {self.got}); "
                f"its state is read again from MongoDB")


@dataclass(frozen=True)
class Applied:
    """What one event did: ``fresh`` (first time heard: ``--json`` prints it), what to ask."""

    fresh: bool
    requests: tuple[Request, ...] = ()
    gap: Gap | None = None


class MonitorState:
    """Jobs, steps and workers as the events tell them (see the module docstring)."""

    def __init__(self, watch: str | None = None) -> None:
        self.watching = watch
        self._jobs: dict[str, JobTrack] = {}
        self._workers: dict[str, WorkerTrack] = {}
        self._queues: dict[str, QueueDepth | None] = {}
        self._events = 0
        self._rejected = 0

    # inputs -----------------------------------------------------------------------------
    def begin(self, job_ids: Iterable[str], replay: bool) -> list[Request]:
        """The jobs to read at once (the ``--job`` job, or every job still running): for their
        size and devices when their events will be replayed (``replay``), else for their state
        too (a job that waits for a device may publish nothing for a long time)."""
        requests: list[Request] = []
        for job_id in job_ids:
            if self.watching is not None and job_id != self.watching:
                continue
            job = self._job(job_id)
            job.loading, job.resyncing = True, not replay
            requests.append(LoadJob(job_id, resync=not replay, after_seq=0))
        return requests

    def apply(self, event: Event | WorkerEvent) -> Applied:
        if isinstance(event, WorkerEvent):
            return Applied(fresh=self._worker_event(event))
        if event.job_id is None:
            self._events += 1
            self._rejected += event.type == "message.rejected"
            return Applied(fresh=self.watching is None)
        if self.watching is not None and event.job_id != self.watching:
            return Applied(fresh=False)
        return self._job_event(event, event.job_id)

    def loaded(self, request: LoadJob, status: JobStatus | None, now: float) -> None:
        """MongoDB's answer to ``request`` (None: no such job yet)."""
        job = self._jobs.get(request.job_id)
        if job is None:
            return
        job.loading = False
        if request.resync:
            job.resyncing = False
            job.missed = False
        if status is None:
            return
        job.read = True
        job.name = status.name
        job.total = status.steps_total
        job.started_at = job.started_at or (status.started_at.timestamp() if status.started_at else None)
        for name, view in status.steps.items():
            if view.device is not None:
                job.devices[name] = view.device
            step = job.step(name)
            if not request.resync or step.touched_seq > request.after_seq:
                continue
            step.state, step.worker, step.warned = view.state, view.worker, False
            step.running_since = view.started_at.timestamp() if view.state is StepState.RUNNING and view.started_at else None
            step.ready_since = (step.ready_since or now) if view.state in READY_STATES else None
        if not request.resync or job.state_seq > request.after_seq:
            return  # a job event heard since the request says more than the snapshot
        job.state = status.state
        job.finished_at = status.finished_at.timestamp() if status.finished_at else None
        job.error = f"{status.error.step}: {status.error.type}: {status.error.message}" if status.error else None
        if status.state.finished and job.last_seq is None:
            job.ended = True  # finished before the monitor looked, and no replay is coming

    def end_checked(self, request: ConfirmEnd, last_end: bool) -> None:
        """MongoDB's answer to ``request``: whether its terminal event was the job's last end."""
        job = self._jobs.get(request.job_id)
        if job is not None and last_end and job.state is not None and job.state.finished:
            job.ended = True

    def queues(self, depths: Mapping[str, QueueDepth | None]) -> None:
        """The device queues as the broker reports them (None: the queue does not exist)."""
        self._queues = dict(depths)

    # questions --------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        """With ``--job``: the job has ended (see the module docstring)."""
        job = None if self.watching is None else self._jobs.get(self.watching)
        return job is not None and job.ended

    def running(self, job_id: str) -> dict[str, StepTrack]:
        """The steps of a job last heard running (``step.running``, nothing after it). A
        worker stores a step only once it finished, so only the events tell this."""
        job = self._jobs.get(job_id)
        return {} if job is None else {name: step for name, step in job.steps.items() if step.state is StepState.RUNNING}

    def devices(self) -> set[str]:
        """Every device the monitor heard of: its workers', its jobs' steps'."""
        found = {w.event.device for w in self._workers.values()}
        for job in self._jobs.values():
            if job.state is None or not job.state.finished:
                found.update(job.devices.values())
        return found

    def screen(self, now: float) -> Screen:
        workers = [w for w in self._workers.values() if w.shown(now)]
        ready = ready_by_device(self._jobs.values())
        return Screen(
            watching=self.watching,
            jobs=tuple(job_line(job, now) for job in shown_jobs(self._jobs.values(), self.watching)),
            devices=tuple(device_lines(workers, ready, self._queues, now)),
            workers=tuple(w.line(now) for w in sorted(workers, key=lambda w: (w.event.device, w.event.worker_id))),
            alarms=tuple(alarms(workers, ready, self._queues, now)),
            events=self._events, rejected_messages=self._rejected,
        )

    # job events -------------------------------------------------------------------------
    def _job(self, job_id: str) -> JobTrack:
        job = self._jobs.get(job_id)
        if job is None:
            job = self._jobs[job_id] = JobTrack(job_id)
            self._forget_old_jobs()
        return job

    def _job_event(self, event: Event, job_id: str) -> Applied:
        job = self._job(job_id)
        seq = event.seq or 0
        requests: list[Request] = []
        gap = None
        if job.last_seq is not None and seq <= job.last_seq:
            return Applied(fresh=False)  # a repeat (a re-sent publish), or late: MongoDB holds the truth
        if job.last_seq is None:
            job.joined_seq = seq if seq > 1 else None
            if seq > 1 and not job.resyncing:
                requests.append(self._load(job, resync=True, after_seq=seq - 1))
            elif not job.loading and not job.read:
                requests.append(self._load(job, resync=False, after_seq=0))
        elif seq > job.last_seq + 1:
            gap = Gap(job.job_id, job.last_seq, seq)
            job.gaps += 1
            job.missed = True
            requests.append(self._load(job, resync=True, after_seq=job.last_seq))
        job.last_seq = seq
        self._events += 1
        if event.type.startswith("job."):
            requests += self._job_change(job, event)
        elif event.step is not None:
            self._step_change(job, job.step(event.step), event, seq)
        return Applied(fresh=True, requests=tuple(requests), gap=gap)

    def _load(self, job: JobTrack, *, resync: bool, after_seq: int) -> LoadJob:
        job.loading = True
        job.resyncing = job.resyncing or resync
        return LoadJob(job.job_id, resync, after_seq)

    def _job_change(self, job: JobTrack, event: Event) -> list[Request]:
        state = _job_state(event.state)
        if state is None:
            return []
        job.state, job.state_seq = state, event.seq or 0
        if state is JobState.RUNNING:
            job.ended, job.finished_at, job.error = False, None, None
            steps = event.detail.get("steps")
            job.total = steps if isinstance(steps, int) else job.total
            job.started_at = job.started_at if event.detail.get("restored") else event.at
            return []
        if not state.finished:
            return []
        job.finished_at = event.at
        error = event.detail.get("error")
        if isinstance(error, Mapping):
            job.error = f"{error.get('step')}: {error.get('type')}: {error.get('message')}"
        elif state is JobState.REJECTED:
            job.error = "; ".join(str(p) for p in event.detail.get("problems") or [])[:500] or "rejected"
            job.total = job.total or 0
        return [ConfirmEnd(job.job_id, event.at)] if job.job_id == self.watching else []

    def _step_change(self, job: JobTrack, step: StepTrack, event: Event, seq: int) -> None:
        step.touched_seq = seq
        if event.type == "step.timeout_warning":
            step.warned = True
            return
        if event.type == "step.metric":
            name, value, at = event.detail.get("name"), event.detail.get("value"), event.detail.get("step")
            if isinstance(name, str) and isinstance(value, int | float):
                step.metrics[name] = (float(value), at if isinstance(at, int) else None)
            return
        state = _step_state(event.state)
        if state is None:
            return
        device = event.detail.get("device")
        if isinstance(device, str) and event.step is not None:
            job.devices[event.step] = device
        if state in READY_STATES:
            retry_at = event.detail.get("retry_at") if event.type == "step.retrying" else None
            if isinstance(retry_at, int | float):
                step.ready_since = float(retry_at)
            elif step.state not in READY_STATES or step.ready_since is None:
                step.ready_since = event.at
            step.worker, step.running_since, step.warned = None, None, False
        elif state is StepState.RUNNING:
            step.worker, step.running_since, step.ready_since = event.worker_id, event.at, None
            step.metrics.clear()  # a new attempt logs its own
        else:
            step.ready_since, step.running_since = None, None
            step.worker = event.worker_id or step.worker
        step.state = state

    def _forget_old_jobs(self) -> None:
        finished = [j for j in self._jobs.values() if j.state is not None and j.state.finished and j.job_id != self.watching]
        for job in sorted(finished, key=lambda j: j.finished_at or 0.0)[:max(0, len(finished) - KEEP_FINISHED_JOBS)]:
            del self._jobs[job.job_id]

    # workers ----------------------------------------------------------------------------
    def _worker_event(self, event: WorkerEvent) -> bool:
        known = self._workers.get(event.worker_id)
        if known is not None and event.seq <= known.event.seq:
            return False
        self._events += 1
        self._workers[event.worker_id] = WorkerTrack(event, offline=event.type is WorkerEventType.OFFLINE)
        return True


def _job_state(value: str | None) -> JobState | None:
    try:
        return JobState(value) if value is not None else None
    except ValueError:
        return None


def _step_state(value: str | None) -> StepState | None:
    try:
        return StepState(value) if value is not None else None
    except ValueError:
        return None
