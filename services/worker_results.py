"""What a worker records and reports about a step: outcomes, error dicts, notices, the writer.

An error dict is what MongoDB stores under a failed step's ``error`` and what its notice
carries as :class:`~shared.messages.StepErrorInfo`: ``type``, ``message``, ``traceback`` and
``kind`` (an :class:`~shared.states.ErrorKind` value). Only a worker's own failures are
classified here (``task``, ``timeout``, ``rejected``, ``infrastructure``); ``lost`` is the
planner's word for a step whose message was dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from shared import codec
from shared.errors import StepTimeoutError
from shared.execution.invoke import error_message, format_traceback
from shared.messages import StepDispatch, StepErrorInfo, StepNotice
from shared.outages import Streak, backoff_s, transient
from shared.states import FINISHED_STEP_STATES, ErrorKind, StepState
from shared.store import Finish, Store

RESULT_BATCH = 256
BACKOFF_MAX_S = 10.0
log = logging.getLogger("theodolite.worker")
TRACEBACK_CHARS = 8000


@dataclass
class Outcome:
    """A step's result as this worker produced it (before it reached MongoDB)."""

    outputs: codec.Encoded | None = None
    error: dict[str, Any] | None = None
    duration_s: float = 0.0
    values: dict[str, Any] | None = None
    """The decoded outputs, kept for this worker's own downstream steps when small."""
    retry_delay_s: float | None = None
    """A failure the task retries: the next attempt is due this many seconds from now."""
    cancelled: bool = False
    """The task was stopped at the end of its job's cancel grace: the step ends ``cancelled``."""
    reports: Reports | None = None
    """What the task printed, logged and reported through its context."""


@dataclass
class Reports:
    """A step attempt's output capture, metrics and logged artifacts."""

    logs: str = ""
    logs_dropped: int = 0
    metrics: list[dict[str, Any]] = field(default_factory=list)
    artifacts: codec.Encoded | None = None


def error_kind(error: BaseException) -> ErrorKind:
    """The kind of a failure raised while running a task (its plugin import included)."""
    return ErrorKind.TIMEOUT if isinstance(error, StepTimeoutError) else ErrorKind.TASK


def error_dict(error: BaseException, kind: ErrorKind | None = None) -> dict[str, Any]:
    """The stored form of a step's failure; ``kind`` defaults to :func:`error_kind`."""
    return {
        "type": type(error).__name__,
        "message": error_message(error),
        "traceback": format_traceback(error)[-TRACEBACK_CHARS:],
        "kind": (kind or error_kind(error)).value,
    }


def stored_kind(value: object) -> ErrorKind:
    """An error dict's ``kind`` as the enum; documents written before kinds existed are ``task``."""
    try:
        return ErrorKind(str(value))
    except ValueError:
        return ErrorKind.TASK


def step_notice(dispatch: StepDispatch, outcome: StepState, worker_id: str, *,
                error: Mapping[str, Any] | None = None, duration_s: float = 0.0, retry_at: float | None = None) -> StepNotice:
    info = None
    if error:
        info = StepErrorInfo(type=str(error.get("type", "Error")), message=str(error.get("message", "")),
                             kind=stored_kind(error.get("kind", ErrorKind.TASK)))
    return StepNotice(job_id=dispatch.job_id, step=dispatch.step, attempt=dispatch.attempt, outcome=outcome,
                      worker_id=worker_id, error=info, duration_s=duration_s, retry_at=retry_at)


def outcome_notice(dispatch: StepDispatch, outcome: Outcome, worker_id: str, *, retry_at: float | None = None) -> StepNotice:
    """The notice of an outcome this worker has just recorded (``retry_at``: a failed attempt
    recorded as queued for its retry, due then)."""
    state = StepState.CANCELLED if outcome.cancelled else StepState.FAILED if outcome.error else StepState.SUCCEEDED
    return step_notice(dispatch, state, worker_id, error=outcome.error, duration_s=outcome.duration_s, retry_at=retry_at)


def stored_notice(dispatch: StepDispatch, doc: Mapping[str, Any] | None, worker_id: str) -> StepNotice | None:
    """The notice of a step as MongoDB holds it, if it finished under ``dispatch``'s attempt
    (succeeded, failed, skipped or cancelled, or failed and stored queued as its retry); None
    otherwise (not ours to report)."""
    if doc is None:
        return None
    if (int(doc.get("attempt", 0)) == dispatch.attempt + 1 and doc.get("state") == StepState.QUEUED
            and doc.get("retry_at") is not None):  # this attempt failed and is stored as its retry
        return step_notice(dispatch, StepState.FAILED, str(doc.get("worker") or worker_id), error=doc.get("error") or None,
                           duration_s=float(doc.get("duration_s") or 0.0), retry_at=float(doc["retry_at"]))
    if int(doc.get("attempt", 0)) != dispatch.attempt:
        return None
    try:
        state = StepState(str(doc.get("state")))
    except ValueError:
        return None
    if state not in FINISHED_STEP_STATES:
        return None
    error = doc.get("error") if state is StepState.FAILED else None
    return step_notice(dispatch, state, str(doc.get("worker") or worker_id), error=error or None,
                       duration_s=float(doc.get("duration_s") or 0.0))


class ResultWriter:
    """Writes step outcomes to MongoDB, many per round trip when they finish together.

    A lone outcome (a chain) is written at once; while a write is in flight, the next
    outcomes accumulate and go together in the following one. A round trip that fails for
    an outage (MongoDB restarting) is tried again with backoff until it succeeds: the task's
    work is done and is not thrown away (a write whose answer was lost and that is applied
    twice finds the step finished the second time: recorded once, reported from MongoDB).
    Any other failure fails every write of its batch with the store's exception (the caller
    hands its delivery back).
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: asyncio.Queue[tuple[Finish, asyncio.Future[bool]]] = asyncio.Queue()

    async def write(self, finish: Finish) -> bool:
        """Whether ``finish`` was recorded (False: the step finished first or moved on)."""
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((finish, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < RESULT_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                recorded = await self._write(batch)
            except Exception as error:  # noqa: BLE001 - each waiting step sees the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), ok in zip(batch, recorded):
                if not future.done():
                    future.set_result(ok)

    async def _write(self, batch: list[tuple[Finish, asyncio.Future[bool]]]) -> list[bool]:
        streak = Streak(log, f"recording {len(batch)} step result(s)")
        while True:
            try:
                recorded = await self.store.finish_many([finish for finish, _ in batch])
            except Exception as error:
                if not transient(error):
                    raise
                delay = backoff_s(streak.failures + 1, max_s=BACKOFF_MAX_S)
                streak.failed(error, delay)
                await asyncio.sleep(delay)
                continue
            streak.succeeded()
            return recorded
