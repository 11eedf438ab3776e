"""The planner's outbox of numbered events: a job's events leave in number order, without a
hole, and only under a durable reservation; messages are runs of one job and one type."""

from __future__ import annotations

from services.planner_events import EventOutbox, runs
from shared.events import MAX_BATCH_EVENTS
from shared.messages import Event


def _event(seq: int | None, kind: str = "step.queued", job_id: str | None = "j") -> Event:
    return Event(type=kind, job_id=job_id, seq=seq, step=f"s{seq}")


def test_events_wait_for_the_hole_before_them_and_for_their_reservation() -> None:
    outbox = EventOutbox()
    outbox.begin("j", 1)
    outbox.add([_event(2), _event(3)])  # step events came before job.running (1), whose write is not durable yet
    assert outbox.take() == [] and outbox.waiting("j") == 2
    outbox.add([_event(1, "job.running")])
    assert outbox.take() == [], "no durable reservation yet"
    outbox.reserved("j", 2)
    assert [e.seq for e in outbox.take()] == [1, 2]
    outbox.reserved("j", 1000)
    assert [e.seq for e in outbox.take("j")] == [3] and len(outbox) == 0


def test_a_restored_job_starts_where_its_planner_says_and_unnumbered_events_go_at_once() -> None:
    outbox = EventOutbox()
    outbox.add([_event(1001), _event(None, "message.rejected", job_id=None)])
    assert [e.type for e in outbox.take()] == ["message.rejected"], "not before the job's start is known"
    outbox.begin("j", 1001)
    outbox.begin("j", 5)  # the first word counts
    outbox.reserved("j", 2000)
    assert [e.seq for e in outbox.take()] == [1001]


def test_a_closed_job_is_forgotten_once_its_events_are_out() -> None:
    outbox = EventOutbox()
    outbox.begin("j", 1)
    outbox.add([_event(1), _event(2, "job.succeeded")])
    outbox.close("j")
    assert outbox.waiting("j") == 2
    outbox.reserved("j", 1000)
    assert [e.seq for e in outbox.take()] == [1, 2]
    assert outbox._streams == {}  # nothing left of the job


def test_runs_cut_by_job_and_type_and_size_in_order() -> None:
    events = [_event(1, "job.running"), _event(2), _event(3), _event(4, "step.running"), _event(5), _event(1, job_id="k")]
    assert [[e.seq for e in run] for run in runs(events)] == [[1], [2, 3], [4], [5], [1]]
    many = [_event(i) for i in range(1, MAX_BATCH_EVENTS + 3)]
    assert [len(run) for run in runs(many)] == [MAX_BATCH_EVENTS, 2]
