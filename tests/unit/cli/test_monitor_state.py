"""`theodolite monitor`'s model, fed hand-made event sequences: progress, running steps and
their workers, repeats and gaps, late joins, worker liveness, queue depths, the alarm for steps
no worker serves, and when a watched job is over (services/monitor_state.py)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from services.job_views import JobStatus, StepView
from services.monitor_screen import QueueDepth, WorkerStatus
from services.monitor_state import ConfirmEnd, LoadJob, MonitorState
from shared.events import Event, WorkerEvent
from shared.states import JobState, StepState

T = 1_700_000_000.0
JOB = "job-a"


class Events:
    """Numbers a job's events 1, 2, 3, ... as the planner does."""

    def __init__(self, job_id: str = JOB) -> None:
        self.job_id, self.seq = job_id, 0

    def __call__(self, type_: str, at: float, *, step: str | None = None, state: str | None = None,
                 worker: str | None = None, seq: int | None = None, detail: dict[str, Any] | None = None,
                 **fields: Any) -> Event:
        self.seq = seq if seq is not None else self.seq + 1
        return Event(type=type_, job_id=self.job_id, seq=self.seq, step=step, state=state or type_.split(".")[1],
                     worker_id=worker, detail={**fields, **(detail or {})}, at=at)


def beat(worker: str, at: float, *, seq: int, device: str = "cpu", busy: int = 0, slots: int = 2, held: int = 0,
         kind: str = "worker.heartbeat") -> WorkerEvent:
    return WorkerEvent(type=kind, worker_id=worker, device=device, seq=seq, slots=slots, busy=busy, held=held,
                       load=held / slots, completed=0, host="h", pid=1, heartbeat_s=5.0, at=at)


def load(requests: tuple[object, ...] | list[object]) -> LoadJob:
    (request,) = requests
    assert isinstance(request, LoadJob)
    return request


def status(state: JobState, steps: dict[str, tuple[StepState, str | None, str]], *, total: int | None = None,
           finished_at: float | None = None) -> JobStatus:
    """A `status` view: steps as (state, worker, device)."""
    def moment(value: float | None) -> datetime | None:
        return None if value is None else datetime.fromtimestamp(value, UTC)

    views = {name: StepView(task="plus", state=s, attempt=1, device=device, worker=worker,
                            started_at=moment(T + 1) if s is StepState.RUNNING else None, finished_at=None, duration_s=None,
                            retry_at=None, error=None, outputs={}, attempts=[])
             for name, (s, worker, device) in steps.items()}
    return JobStatus(job_id=JOB, name="job.yaml", state=state, steps_done=0, steps_total=total or len(steps), steps_failed=0,
                     failed_step=None, submitted_at=moment(T), started_at=moment(T), finished_at=moment(finished_at),
                     duration_s=None, labels={}, error=None, steps=views)


def test_progress_counts_and_running_steps_with_their_workers() -> None:
    state, e = MonitorState(), Events()
    first = state.apply(e("job.running", T, steps=4))
    assert first.fresh and first.requests == (LoadJob(JOB, resync=False, after_seq=0),)  # its size and devices
    for name in ("a", "b"):
        state.apply(e("step.queued", T, step=name))
    state.apply(e("step.running", T + 1, step="a", worker="cpu-w1"))
    state.apply(e("step.running", T + 2, step="b", worker="cpu-w2"))
    state.apply(e("step.succeeded", T + 3, step="a", worker="cpu-w1", duration_s=2.0))
    state.apply(e("step.queued", T + 3, step="c"))
    state.apply(e("step.metric", T + 3.2, step="b", state="running", name="loss", value=0.9, detail={"step": 2}))
    state.apply(e("step.metric", T + 3.5, step="b", state="running", name="loss", value=0.5, detail={"step": 3}))

    (job,) = state.screen(T + 4).jobs
    assert (job.state, job.total, job.done) == (JobState.RUNNING, 4, 1)
    assert job.counts == {StepState.SUCCEEDED: 1, StepState.RUNNING: 1, StepState.QUEUED: 1, StepState.PENDING: 1}
    assert [(r.step, r.worker, r.for_s, r.metrics) for r in job.running] == [("b", "cpu-w2", 2.0, (("loss", 0.5, 3),))]
    assert job.ran_on == (("cpu-w1", 1),)
    assert job.elapsed_s == 4.0 and not job.missed and job.gaps == 0

    state.apply(e("step.timeout_warning", T + 5, step="b", state="running", worker="cpu-w2", elapsed_s=8, timeout_s=10))
    assert state.screen(T + 5).jobs[0].running[0].warned


def test_repeats_are_dropped_and_not_fresh() -> None:
    state, e = MonitorState(), Events()
    running = e("job.running", T, steps=1)
    queued = e("step.queued", T, step="a")
    assert state.apply(running).fresh and state.apply(queued).fresh
    assert not state.apply(queued).fresh and not state.apply(running).fresh
    assert state.screen(T).events == 2


def test_a_gap_marks_the_job_and_reads_it_again_keeping_what_later_events_said() -> None:
    state, e = MonitorState(), Events()
    state.apply(e("job.running", T, steps=3))
    state.apply(e("step.queued", T, step="a"))
    applied = state.apply(e("step.running", T + 1, step="b", worker="cpu-w1", seq=6))  # 3, 4, 5 missed
    assert applied.fresh and applied.gap is not None
    assert applied.gap.describe().startswith(f"job {JOB}: events 3..5 missed (heard 2, then 6)")
    assert applied.requests == (LoadJob(JOB, resync=True, after_seq=2),)
    line = state.screen(T + 1).jobs[0]
    assert line.missed and line.gaps == 1

    # MongoDB's answer: read before step b started, after a succeeded and c was queued
    snapshot = status(JobState.RUNNING, {"a": (StepState.SUCCEEDED, "cpu-w1", "cpu"), "b": (StepState.QUEUED, None, "cpu"),
                                         "c": (StepState.QUEUED, None, "cpu")})
    state.loaded(load(applied.requests), snapshot, T + 2)
    line = state.screen(T + 2).jobs[0]
    assert not line.missed and line.gaps == 1
    assert line.counts == {StepState.SUCCEEDED: 1, StepState.RUNNING: 1, StepState.QUEUED: 1}
    assert [(r.step, r.worker) for r in line.running] == [("b", "cpu-w1")], "the event after the request wins"


def test_a_job_event_heard_after_the_request_is_not_undone_by_the_answer() -> None:
    state, e = MonitorState(), Events()
    state.apply(e("job.running", T, steps=1))
    request = load(state.apply(e("step.running", T, step="a", worker="w", seq=3)).requests)
    state.apply(e("step.succeeded", T + 1, step="a", worker="w"))
    state.apply(e("job.succeeded", T + 1))
    state.loaded(request, status(JobState.RUNNING, {"a": (StepState.RUNNING, "w", "cpu")}), T + 2)
    line = state.screen(T + 2).jobs[0]
    assert line.state is JobState.SUCCEEDED and line.counts == {StepState.SUCCEEDED: 1}


def test_joining_late_reads_the_job_quietly() -> None:
    state, e = MonitorState(), Events()
    applied = state.apply(e("step.queued", T, step="c", seq=7))
    assert applied.gap is None and applied.requests == (LoadJob(JOB, resync=True, after_seq=6),)
    state.loaded(load(applied.requests), status(JobState.RUNNING, {"a": (StepState.SUCCEEDED, "w", "cpu"),
                                                                 "b": (StepState.RUNNING, "w", "cpu"),
                                                                 "c": (StepState.PENDING, None, "cpu")}), T)
    line = state.screen(T).jobs[0]
    assert (line.state, line.total, line.done, line.joined_seq, line.missed, line.gaps) == (JobState.RUNNING, 3, 1, 7, False, 0)
    assert line.counts == {StepState.SUCCEEDED: 1, StepState.RUNNING: 1, StepState.QUEUED: 1}
    assert state.apply(e("step.running", T, step="c", worker="w")).gap is None


def test_a_job_heard_from_its_first_event_takes_only_its_size_and_devices_from_mongodb() -> None:
    state, e = MonitorState(), Events()
    request = load(state.apply(e("job.running", T, steps=2)).requests)
    state.apply(e("step.queued", T, step="a"))
    later = status(JobState.SUCCEEDED, {"a": (StepState.SUCCEEDED, "w", "gpu"), "b": (StepState.SUCCEEDED, "w", "cpu")})
    state.loaded(request, later, T + 1)
    line = state.screen(T + 1).jobs[0]
    assert line.state is JobState.RUNNING and line.counts == {StepState.QUEUED: 1, StepState.PENDING: 1}
    assert state.devices() == {"gpu", "cpu"}


def test_workers_age_go_silent_and_offline() -> None:
    state = MonitorState()
    assert state.apply(beat("cpu-w1", T, seq=1, kind="worker.online")).fresh
    assert state.apply(beat("cpu-w1", T + 5, seq=2, busy=1, held=3)).fresh
    assert not state.apply(beat("cpu-w1", T + 1, seq=1, kind="worker.online")).fresh, "an older number changes nothing"
    state.apply(beat("cpu-w2", T + 5, seq=4, busy=2, held=2))

    screen = state.screen(T + 6)
    assert [(w.worker_id, w.status, w.busy, w.last_seen_s) for w in screen.workers] == [
        ("cpu-w1", WorkerStatus.ONLINE, 1, 1.0), ("cpu-w2", WorkerStatus.ONLINE, 2, 1.0)]
    (cpu,) = screen.devices
    assert (cpu.online, cpu.busy, cpu.slots, cpu.held, cpu.last_beat_s) == (2, 3, 4, 5, 1.0)

    state.apply(beat("cpu-w2", T + 7, seq=5, kind="worker.offline"))
    screen = state.screen(T + 21)  # w1 quiet for 16 s: more than three 5 s heartbeats
    assert {w.worker_id: w.status for w in screen.workers} == {"cpu-w1": WorkerStatus.SILENT, "cpu-w2": WorkerStatus.OFFLINE}
    assert (screen.devices[0].online, screen.devices[0].silent, screen.devices[0].slots) == (0, 1, 0)
    assert state.screen(T + 400).workers == (), "long gone workers are no longer shown"


def test_queue_depth_and_the_oldest_ready_step_per_device() -> None:
    state, e = MonitorState(), Events()
    request = load(state.apply(e("job.running", T, steps=3)).requests)
    state.loaded(request, status(JobState.RUNNING, {n: (StepState.PENDING, None, "cpu") for n in "abc"}), T)
    state.apply(e("step.queued", T + 1, step="a"))
    state.apply(e("step.queued", T + 3, step="b"))
    state.apply(e("step.running", T + 4, step="a", worker="cpu-w1"))
    state.apply(e("step.failed", T + 5, step="c", worker="cpu-w1"))
    state.apply(e("step.retrying", T + 5, step="c", state="queued", worker="cpu-w1", retry_at=T + 7, delay_s=2))
    state.apply(beat("cpu-w1", T + 9, seq=1, busy=1))
    assert state.devices() == {"cpu"}
    state.queues({"cpu": QueueDepth(messages=1, consumers=1)})

    (cpu,) = state.screen(T + 10).devices
    assert (cpu.queue, cpu.ready, cpu.oldest_ready_s) == (QueueDepth(1, 1), 2, 7.0)  # b since T+3; c's retry due at T+7
    assert state.screen(T + 10).alarms == ()


def test_a_loud_line_for_steps_waiting_for_a_device_no_worker_serves() -> None:
    state, e = MonitorState(), Events()
    state.apply(e("job.running", T, steps=3))
    state.apply(e("step.waiting", T + 1, step="g0", device="gpu", reason="waiting for a worker of type gpu: no consumer"))
    state.apply(e("step.waiting", T + 1, step="g1", device="gpu", reason="waiting for a worker of type gpu: no consumer"))
    state.apply(beat("cpu-w1", T + 1, seq=1))
    (alarm,) = state.screen(T + 2).alarms
    assert (alarm.device, alarm.steps, alarm.jobs, alarm.reason) == ("gpu", ("g0", "g1"), (JOB,), "")
    assert state.screen(T + 2).devices[1].oldest_ready_s == 1.0

    state.queues({"gpu": None, "cpu": QueueDepth(0, 1)})
    assert state.screen(T + 2).alarms[0].reason == "its queue does not exist"
    state.apply(beat("gpu-w1", T + 3, seq=1, device="gpu"))
    assert state.screen(T + 4).alarms == (), "a gpu worker came"
    assert state.screen(T + 30).alarms[0].device == "gpu", "and went silent"


def test_queued_steps_alarm_only_once_the_broker_counts_no_consumer() -> None:
    state, e = MonitorState(), Events()
    request = load(state.apply(e("job.running", T, steps=1)).requests)
    state.loaded(request, status(JobState.RUNNING, {"t": (StepState.PENDING, None, "tpu")}), T)
    state.apply(e("step.queued", T, step="t"))
    assert state.screen(T).alarms == (), "workers may not have beaten yet"
    state.queues({"tpu": QueueDepth(messages=1, consumers=0)})
    (alarm,) = state.screen(T).alarms
    assert (alarm.device, alarm.steps, alarm.reason) == ("tpu", ("t",), "its queue has no consumer")
    state.queues({"tpu": QueueDepth(messages=1, consumers=1)})
    assert state.screen(T).alarms == ()


def test_a_watched_job_is_done_once_mongodb_confirms_its_last_end() -> None:
    state, e, other = MonitorState(watch=JOB), Events(), Events("job-b")
    assert state.begin([JOB, "job-b"], replay=True) == [LoadJob(JOB, resync=False, after_seq=0)]
    assert not state.apply(other("job.running", T, steps=1)).fresh, "other jobs are not followed"
    state.apply(e("job.running", T, steps=1))
    state.apply(e("step.failed", T + 1, step="a", worker="w", error={"type": "E", "message": "m", "kind": "task"}))
    ended = state.apply(e("job.failed", T + 1, error={"step": "a", "type": "E", "message": "m", "kind": "task"}))
    assert ended.requests == (ConfirmEnd(JOB, T + 1),) and not state.done
    state.end_checked(ConfirmEnd(JOB, T + 1), last_end=False)  # resumed since: more events to come
    assert not state.done
    state.apply(e("job.running", T + 9, restored=True))
    state.apply(e("step.succeeded", T + 10, step="a", worker="w"))
    again = state.apply(e("job.succeeded", T + 10)).requests[0]
    assert isinstance(again, ConfirmEnd)
    state.end_checked(again, last_end=True)
    assert state.done
    (line,) = state.screen(T + 11).jobs
    assert (line.job_id, line.state, line.done, line.elapsed_s) == (JOB, JobState.SUCCEEDED, 1, 10.0)


def test_a_watched_job_finished_before_the_monitor_started_without_replay() -> None:
    state = MonitorState(watch=JOB)
    (request,) = state.begin([JOB], replay=False)
    assert request == LoadJob(JOB, resync=True, after_seq=0)
    state.loaded(request, status(JobState.SUCCEEDED, {"a": (StepState.SUCCEEDED, "w", "cpu")},
                                 finished_at=T + 5), T + 60)
    assert state.done
    assert state.screen(T + 60).jobs[0].done == 1


def test_a_watched_job_not_recorded_yet_is_read_when_it_appears() -> None:
    state, e = MonitorState(watch=JOB), Events()
    (request,) = state.begin([JOB], replay=True)
    state.loaded(request, None, T)
    assert not state.done and state.screen(T).jobs[0].state is None
    assert state.apply(e("job.running", T, steps=2)).requests == (LoadJob(JOB, resync=False, after_seq=0),)


def test_planner_events_about_no_job_are_counted() -> None:
    state = MonitorState()
    applied = state.apply(Event(type="message.rejected", detail={"reason": "not json"}, at=T))
    assert applied.fresh and state.screen(T).rejected_messages == 1
