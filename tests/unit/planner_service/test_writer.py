"""The planner's ordered writer: order kept, failures retried until they succeed, marks
coalesced, a full backlog makes the producer wait (no services: writes are coroutines)."""

from __future__ import annotations

import asyncio

import pytest

from services.planner_writer import Mark, OrderedWriter, StepMark, coalesce


class Recorder:
    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.done: list[str] = []

    async def marks(self, item: StepMark) -> None:
        self.done.append(f"{item.mark.value}:{item.job_id}:{','.join(item.names)}")

    def call(self, label: str):  # type: ignore[no-untyped-def]
        async def write() -> str:
            if self.failures:
                self.failures -= 1
                raise ConnectionError("MongoDB is away")
            self.done.append(label)
            return label
        return write


async def _running(writer: OrderedWriter) -> asyncio.Task[None]:
    return asyncio.create_task(writer.run())


async def test_a_failed_write_is_retried_until_it_succeeds_and_later_writes_wait_for_it() -> None:
    recorder = Recorder(failures=3)
    writer = OrderedWriter(recorder.marks, pause_s=0.0, max_backoff_s=0.05)
    task = await _running(writer)
    first = await writer.call(recorder.call("finish job"))
    await writer.mark(Mark.SKIPPED, "j", ["b"])
    assert await asyncio.wait_for(first, 5) == "finish job"
    await asyncio.wait_for(writer.flush(), 5)
    assert recorder.done == ["finish job", "skipped:j:b"]
    task.cancel()


async def test_consecutive_marks_of_one_job_and_kind_are_one_write() -> None:
    items = [StepMark(Mark.DISPATCHED, "j", ["a"]), StepMark(Mark.DISPATCHED, "j", ["b"]), StepMark(Mark.DISPATCHED, "k", ["c"]),
             StepMark(Mark.SKIPPED, "k", ["d"]), StepMark(Mark.DISPATCHED, "k", ["e"])]
    merged = coalesce(items)
    assert [(m.mark, m.job_id, m.names) for m in merged if isinstance(m, StepMark)] == [
        (Mark.DISPATCHED, "j", ["a", "b"]), (Mark.DISPATCHED, "k", ["c"]), (Mark.SKIPPED, "k", ["d"]), (Mark.DISPATCHED, "k", ["e"])]
    assert items[0].names == ["a"], "coalescing must not change what was queued"


async def test_a_full_backlog_makes_the_producer_wait_until_the_writer_catches_up() -> None:
    recorder = Recorder()
    writer = OrderedWriter(recorder.marks, backlog=10, pause_s=0.0)
    for index in range(10):
        await writer.mark(Mark.DISPATCHED, f"j{index}", ["s"])
    blocked = asyncio.create_task(writer.mark(Mark.DISPATCHED, "late", ["s"]))
    await asyncio.sleep(0.05)
    assert not blocked.done() and writer.pending == 10
    task = await _running(writer)
    await asyncio.wait_for(blocked, 5)
    await asyncio.wait_for(writer.flush(), 5)
    assert recorder.done[-1] == "dispatched:late:s" and len(recorder.done) == 11
    task.cancel()


async def test_stopping_the_writer_stops_retrying() -> None:
    recorder = Recorder(failures=10**6)
    writer = OrderedWriter(recorder.marks, pause_s=0.0, max_backoff_s=0.01)
    task = await _running(writer)
    pending = await writer.call(recorder.call("never"))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not pending.done() and recorder.done == []
