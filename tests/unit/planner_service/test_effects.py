"""The planner shell carries the book's effects out in order, against in-memory fakes of
MongoDB and RabbitMQ (``services/planner_ports.py``): job events after their writes, a job
forgotten only once its terminal state is durable, and the writes that report back."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

from services.planner_effects import EffectRunner
from services.planner_writer import OrderedWriter
from shared.constants import Names
from shared.messages import Event, EventBatch, StepNotice
from shared.planner.book import JobBook, JobPlan, StoredStep
from shared.states import ErrorKind, JobState, StepState
from shared.store import StepRecord
from shared.transport import Outgoing


class FakeStore:
    def __init__(self, *, fail_writes: int = 0) -> None:
        self.log: list[str] = []
        self.fail_writes = fail_writes
        self.steps: dict[str, StepRecord] = {}
        self.reserved: dict[str, int] = {}

    def _maybe_fail(self) -> None:
        if self.fail_writes:
            self.fail_writes -= 1
            raise ConnectionError("MongoDB is away")

    async def set_job_state(self, job_id: str, expected: Sequence[JobState], state: JobState, **fields: Any) -> bool:
        self._maybe_fail()
        self.log.append(f"job {state}")
        return True

    async def set_job_control(self, job_id: str, *, claim: bool, stop: StepState | None, grace_s: float | None = None) -> None:
        self.log.append(f"control claim={claim} stop={stop}")

    async def insert_rejected_job(self, job_id: str, name: str, problems: Sequence[str], *, at: float) -> None:
        self.log.append("rejected")

    async def record_events(self, events: Sequence[Mapping[str, Any]]) -> None:
        self.log += [f"record {e['type']}" for e in events]

    async def reserve_event_seq(self, job_id: str, upto: int) -> bool:
        self._maybe_fail()
        self.log.append(f"reserve {upto}")
        self.reserved[job_id] = max(self.reserved.get(job_id, 0), upto)
        return True

    async def next_event_seq(self, job_id: str) -> int | None:
        self.reserved[job_id] = self.reserved.get(job_id, 0) + 1
        return self.reserved[job_id]

    async def mark_dispatched(self, job_id: str, names: Sequence[str]) -> None:
        self.log.append(f"dispatched {','.join(names)}")

    async def set_waiting(self, job_id: str, names: Sequence[str], waiting: bool) -> None:
        self.log.append(f"waiting={waiting} {','.join(names)}")

    async def stop_steps(self, job_id: str, names: Sequence[str], state: StepState) -> None:
        self.log.append(f"{state} {','.join(names)}")

    async def fail_step(self, job_id: str, step: str, attempt: int, error: Mapping[str, Any], *,
                        publisher: str = "") -> StepRecord | None:
        self.log.append(f"fail {step}")
        record = self.steps.get(step) or StepRecord(step, StepState.FAILED, attempt, "cpu", None, dict(error))
        self.steps[step] = record
        return record

    async def requeue(self, job_id: str, step: str, attempt: int, *, reason: str) -> int | None:
        self.log.append(f"requeue {step}")
        return attempt + 1


class FakeBroker:
    def __init__(self, *, routable: bool = True) -> None:
        self.names = Names("test")
        self.routable = routable
        self.sent: list[Outgoing] = []
        self.log: list[str] | None = None

    async def publish(self, item: Outgoing) -> bool:
        self.sent.append(item)
        if self.log is not None:
            self.log.append(f"publish {item.kind} {item.routing_key}")
        return True

    async def publish_many(self, items: Sequence[Outgoing]) -> list[bool]:
        for item in items:
            await self.publish(item)
        return [self.routable] * len(items)


def _runner(store: FakeStore, broker: FakeBroker) -> tuple[EffectRunner, JobBook]:
    book = JobBook()
    broker.log = store.log
    writer = OrderedWriter(lambda mark: runner.write_marks(mark), pause_s=0.0, max_backoff_s=0.01)
    runner = EffectRunner(book, store, broker, writer, "planner-1", clock=lambda: 10.0)
    return runner, book


PLAN = JobPlan({"a": [], "b": ["a"]}, {"a": "cpu", "b": "cpu"})


async def test_a_job_event_follows_its_durable_write_and_a_failed_write_is_retried() -> None:
    store, broker = FakeStore(fail_writes=2), FakeBroker()
    runner, book = _runner(store, broker)
    task = asyncio.create_task(runner.writer.run())
    await runner.run(book.accept("j", PLAN, 1.0))
    await runner.writer.flush()
    assert store.log.index("publish step.dispatch cpu") < store.log.index("job running")  # publishing does not wait
    assert store.log.index("reserve 1000") < store.log.index("job running") < store.log.index("publish event job.j.job.running")
    await runner.run(book.notices([StepNotice(job_id="j", step="a", attempt=1, outcome=StepState.FAILED, worker_id="w")], 2.0))
    assert "j" in book  # the terminal write is queued, not yet durable
    await runner.writer.flush()
    assert store.log.index("skipped b") < store.log.index("job failed") < store.log.index("publish event job.j.job.failed")
    assert store.log.index("publish event job.j.step.failed") < store.log.index("publish event job.j.job.failed")
    assert "j" not in book
    task.cancel()


async def test_a_dead_letter_is_written_then_fed_back_as_the_stored_outcome() -> None:
    store, broker = FakeStore(), FakeBroker()
    runner, book = _runner(store, broker)
    task = asyncio.create_task(runner.writer.run())
    await runner.run(book.accept("j", PLAN, 1.0))
    await runner.run(book.dead_letter("j", "a", 1, "rejected from q (count 1)", ErrorKind.REJECTED, 2.0))
    await runner.writer.flush()
    assert "fail a" in store.log and "job failed" in store.log and "j" not in book
    task.cancel()


async def test_an_expired_lease_is_requeued_then_published_as_the_new_attempt() -> None:
    store, broker = FakeStore(), FakeBroker()
    runner, book = _runner(store, broker)
    task = asyncio.create_task(runner.writer.run())
    await runner.run(book.accept("j", PLAN, 1.0))
    await runner.run(book.lease_expired("j", "a", 1, "w1", 2.0))
    dispatches = [o for o in broker.sent if o.kind == "step.dispatch"]
    assert [o.message_id for o in dispatches] == ["j:a:1", "j:a:2"]
    task.cancel()


async def test_unroutable_steps_are_marked_waiting() -> None:
    store, broker = FakeStore(), FakeBroker(routable=False)
    runner, book = _runner(store, broker)
    task = asyncio.create_task(runner.writer.run())
    await runner.run(book.accept("j", PLAN, 1.0))
    await runner.writer.flush()
    assert "waiting=True a" in store.log and "record step.waiting" in store.log
    task.cancel()


def _published(broker: FakeBroker) -> list[tuple[str, Event]]:
    """(routing key, event) of every event published, in order."""
    out: list[tuple[str, Event]] = []
    for item in broker.sent:
        if item.kind == "event":
            out.append((item.routing_key, Event.model_validate_json(item.body)))
        elif item.kind == "event.batch":
            out += [(item.routing_key, e) for e in EventBatch.model_validate_json(item.body).events]
    return out


async def test_events_wait_for_their_reservation_and_a_planner_taking_over_never_reuses_a_number() -> None:
    store, broker = FakeStore(), FakeBroker()
    runner, book = _runner(store, broker)
    await runner.run(book.accept("j", PLAN, 1.0))  # the writer is not running: nothing is durable yet
    await runner.flush_events()
    assert _published(broker) == [], "step.queued (2) went out before its reservation and job.running (1)"
    task = asyncio.create_task(runner.writer.run())
    await runner.writer.flush()
    await runner.flush_events()
    first = _published(broker)
    assert [(key, e.seq) for key, e in first] == [("job.j.job.running", 1), ("job.j.step.queued", 2)]
    assert store.log.index("reserve 1000") < store.log.index("job running")
    task.cancel()

    broker2 = FakeBroker()  # a standby takes over: it restores the job from what MongoDB holds
    runner2, book2 = _runner(store, broker2)
    task2 = asyncio.create_task(runner2.writer.run())
    await runner2.run(book2.restore("j", PLAN, {"a": StoredStep(StepState.QUEUED, 1)}, 5.0, event_seq=store.reserved["j"]))
    await runner2.run(book2.notices([StepNotice(job_id="j", step="a", attempt=1, outcome=StepState.SUCCEEDED, worker_id="w")], 6.0))
    await runner2.writer.flush()
    await runner2.flush_events()
    second = [e.seq for _, e in _published(broker2)]
    assert second and second == list(range(1001, 1001 + len(second))), second
    assert store.reserved["j"] == 2000 and not {e.seq for _, e in first} & set(second)
    task2.cancel()


async def test_a_cancel_of_a_job_no_planner_runs_takes_one_number_from_the_store() -> None:
    store, broker = FakeStore(), FakeBroker()
    store.reserved["ghost"] = 1000  # a planner that died had numbered its events up to there
    runner, book = _runner(store, broker)
    task = asyncio.create_task(runner.writer.run())
    await runner.run(book.cancel("ghost", 1.0))
    await runner.writer.flush()
    assert [(key, e.seq) for key, e in _published(broker)] == [("job.ghost.job.cancelled", 1001)]
    task.cancel()
