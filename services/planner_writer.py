"""The planner's one ordered writer: every MongoDB write of the planner, in order, retried.

Writes are queued as they are decided and carried out by one task, in order: a job's steps
are marked before the job is finished, and a job's terminal state is written after every
write of it before. Publishing does not wait for them (the writes a worker depends on,
the job document itself, are made before its steps are published), except when the
backlog is full: then :meth:`OrderedWriter.put` waits, so a MongoDB outage slows dispatch
instead of growing memory without bound.

A failed write is retried with exponential backoff and jitter (``tenacity``) until it
succeeds or the service stops; it is never dropped. Consecutive step marks of one kind for
one job are coalesced into one write, and rounds are at least ``pause_s`` apart so that a
fast chain costs a few writes a second, not one per hop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_exponential_jitter

log = logging.getLogger("theodolite.planner.writer")
PAUSE_S = 0.02


class Mark(Enum):
    """Step marks the writer coalesces per job."""

    DISPATCHED = "dispatched"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"
    WAITING = "waiting"
    UNWAITING = "unwaiting"


@dataclass
class StepMark:
    mark: Mark
    job_id: str
    names: list[str]


@dataclass
class Call:
    """Any other write: ``write`` (a no-argument coroutine function), then its future."""

    write: Callable[[], Awaitable[Any]]
    done: asyncio.Future[Any]
    what: str = "write"


Item = StepMark | Call
MarkWriter = Callable[[StepMark], Awaitable[None]]


@dataclass
class OrderedWriter:
    """Owns the queue of the planner's writes; :meth:`run` is its one consumer task."""

    write_marks: MarkWriter
    backlog: int = 10_000
    pause_s: float = PAUSE_S
    max_backoff_s: float = 10.0
    _queue: asyncio.Queue[Item] = field(init=False)

    def __post_init__(self) -> None:
        self._queue = asyncio.Queue(maxsize=self.backlog)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    async def mark(self, mark: Mark, job_id: str, names: list[str] | tuple[str, ...]) -> None:
        if names:
            await self._queue.put(StepMark(mark, job_id, list(names)))

    async def call(self, write: Callable[[], Awaitable[Any]], what: str = "write") -> asyncio.Future[Any]:
        """Queue ``write``; the returned future has its result once it is durable."""
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put(Call(write, done, what))
        return done

    async def flush(self) -> None:
        """Wait until everything queued so far is written."""
        done = await self.call(_nothing, "flush")
        await done

    async def run(self) -> None:
        while True:
            items = [await self._queue.get()]
            while not self._queue.empty():
                items.append(self._queue.get_nowait())
            for item in coalesce(items):
                await self._apply(item)
            await asyncio.sleep(self.pause_s)

    async def _apply(self, item: Item) -> None:
        what = item.what if isinstance(item, Call) else f"{item.mark.value} marks of job {item.job_id}"
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(Exception), wait=wait_exponential_jitter(multiplier=0.2, max=self.max_backoff_s, jitter=0.5),
            before_sleep=lambda state: _log_retry(what, state), reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                result = await (item.write() if isinstance(item, Call) else self.write_marks(item))
        if isinstance(item, Call) and not item.done.done():
            item.done.set_result(result)


def coalesce(items: list[Item]) -> list[Item]:
    """Merge consecutive marks of one kind for one job (order is otherwise kept)."""
    merged: list[Item] = []
    for item in items:
        last = merged[-1] if merged else None
        if isinstance(item, StepMark) and isinstance(last, StepMark) and (last.mark, last.job_id) == (item.mark, item.job_id):
            last.names.extend(item.names)
        else:
            merged.append(StepMark(item.mark, item.job_id, list(item.names)) if isinstance(item, StepMark) else item)
    return merged


def _log_retry(what: str, state: RetryCallState) -> None:
    error = state.outcome.exception() if state.outcome is not None else None
    wait = state.next_action.sleep if state.next_action is not None else 0.0
    log.warning("planner write (%s) failed (attempt %d: %r); retrying in %.1f s", what, state.attempt_number, error, wait)


async def _nothing() -> None:
    return None
