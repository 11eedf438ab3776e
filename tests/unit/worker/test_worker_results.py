"""Error dicts and their kinds, notices from outcomes and from stored documents, the writer."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

from services.worker_results import (
    Outcome,
    ResultWriter,
    error_dict,
    error_kind,
    outcome_notice,
    step_notice,
    stored_kind,
    stored_notice,
)
from shared.distributed_errors import StoreError
from shared.errors import StepTimeoutError
from shared.messages import StepDispatch
from shared.states import ErrorKind, StepState
from shared.store import Finish

DISPATCH = StepDispatch(job_id="j1", step="s", attempt=2, device="cpu")


def raised(error: BaseException) -> BaseException:
    try:
        raise error
    except BaseException as caught:  # noqa: BLE001 - a real traceback for the dict
        return caught


def test_a_timeout_is_kind_timeout() -> None:
    error = error_dict(raised(StepTimeoutError("s", 0.2)))
    assert error["kind"] == "timeout" and error["type"] == "StepTimeoutError"
    assert "exceeded its timeout of 0.2 s" in error["message"]
    assert "Traceback" in error["traceback"]
    assert error_kind(StepTimeoutError("s", 1)) is ErrorKind.TIMEOUT


@pytest.mark.parametrize("error", [RuntimeError("boom"), ValueError("x"), SystemExit(3), KeyboardInterrupt()],
                         ids=lambda e: type(e).__name__)
def test_anything_else_a_task_raises_is_kind_task(error: BaseException) -> None:
    stored = error_dict(raised(error))
    assert stored["kind"] == "task" == ErrorKind.TASK
    assert stored["type"] == type(error).__name__


def test_an_explicit_kind_wins_and_the_traceback_is_bounded() -> None:
    stored = error_dict(LookupError("job j1 is not in the store"), ErrorKind.REJECTED)
    assert stored == {"type": "LookupError", "message": "job j1 is not in the store",
                      "traceback": "LookupError: job j1 is not in the store\n", "kind": "rejected"}
    assert len(error_dict(raised(ValueError("x" * 20000)))["traceback"]) == 8000


def test_stored_kinds_tolerate_old_and_unknown_values() -> None:
    assert stored_kind("timeout") is ErrorKind.TIMEOUT
    assert stored_kind("lost") is ErrorKind.LOST
    assert stored_kind(None) is ErrorKind.TASK
    assert stored_kind("from the future") is ErrorKind.TASK


def test_notices_of_outcomes_carry_the_kind() -> None:
    failed = outcome_notice(DISPATCH, Outcome(error=error_dict(StepTimeoutError("s", 1)), duration_s=1.5), "w1")
    assert failed.outcome is StepState.FAILED and failed.error is not None
    assert (failed.error.type, failed.error.kind, failed.duration_s, failed.worker_id) == ("StepTimeoutError", ErrorKind.TIMEOUT, 1.5, "w1")
    succeeded = outcome_notice(DISPATCH, Outcome(), "w1")
    assert succeeded.outcome is StepState.SUCCEEDED and succeeded.error is None
    skipped = step_notice(DISPATCH, StepState.SKIPPED, "w1")
    assert (skipped.outcome, skipped.error, skipped.attempt) == (StepState.SKIPPED, None, 2)


@pytest.mark.parametrize("state", ["succeeded", "failed", "skipped", "cancelled"])
def test_a_step_finished_under_this_attempt_is_reported_again(state: str) -> None:
    doc: dict[str, Any] = {"state": state, "attempt": 2, "worker": "w0", "duration_s": 0.25}
    if state == "failed":
        doc["error"] = {"type": "RuntimeError", "message": "boom", "kind": "task"}
    notice = stored_notice(DISPATCH, doc, "w1")
    assert notice is not None
    assert (notice.outcome, notice.worker_id, notice.duration_s) == (StepState(state), "w0", 0.25)
    assert (notice.error is not None) == (state == "failed")


@pytest.mark.parametrize("doc", [
    None,
    {"state": "running", "attempt": 2},
    {"state": "queued", "attempt": 2},
    {"state": "succeeded", "attempt": 1},
    {"state": "cancelled", "attempt": 3},
    {"state": "exploded", "attempt": 2},
    {"state": "queued", "attempt": 3},  # re-queued after a lost lease: not a retry of this attempt
    {"state": "queued", "attempt": 4, "retry_at": 9.0},  # a later attempt's retry
])
def test_nothing_to_report_for_steps_not_finished_under_this_attempt(doc: dict[str, Any] | None) -> None:
    assert stored_notice(DISPATCH, doc, "w1") is None


class WriterStore:
    def __init__(self, error: BaseException | None = None) -> None:
        self.error = error
        self.batches: list[list[Finish]] = []

    async def finish_many(self, finishes: list[Finish]) -> list[bool]:
        self.batches.append(list(finishes))
        await asyncio.sleep(0.01)
        if self.error is not None:
            raise self.error
        return [f.step != "late" for f in finishes]


def finish(step: str) -> Finish:
    return Finish("j1", step, 1, "w1", succeeded=True)


async def test_the_writer_batches_what_finishes_together() -> None:
    store = WriterStore()
    writer = ResultWriter(store)  # type: ignore[arg-type]
    runner = asyncio.create_task(writer.run())
    try:
        results = await asyncio.gather(*(writer.write(finish(s)) for s in ("a", "b", "late", "c")))
    finally:
        runner.cancel()
    assert results == [True, True, False, True]
    assert sum(len(b) for b in store.batches) == 4 and len(store.batches) <= 2


async def test_a_failed_round_trip_fails_every_write_of_its_batch() -> None:
    store = WriterStore(StoreError("recording step results failed: refused"))  # not an outage: not retried
    writer = ResultWriter(store)  # type: ignore[arg-type]
    runner = asyncio.create_task(writer.run())
    try:
        results = await asyncio.gather(*(writer.write(finish(s)) for s in "abc"), return_exceptions=True)
        assert all(isinstance(r, StoreError) for r in results)
        store.error = None
        assert await writer.write(finish("d")) is True  # the writer keeps serving
    finally:
        runner.cancel()


async def test_an_outage_while_recording_is_waited_out_not_failed() -> None:
    """MongoDB restarting: the batch is written again with backoff until it goes through."""
    store = WriterStore(AutoReconnect("connection closed"))
    writer = ResultWriter(store)  # type: ignore[arg-type]
    runner = asyncio.create_task(writer.run())
    try:
        writing = asyncio.gather(*(writer.write(finish(s)) for s in "abc"))
        await asyncio.sleep(0.3)
        assert not writing.done() and len(store.batches) >= 1
        store.error = None
        assert await asyncio.wait_for(writing, 5) == [True, True, True]
    finally:
        runner.cancel()


def test_a_failed_attempt_stored_as_its_retry_is_reported_again_with_its_time() -> None:
    doc = {"state": "queued", "attempt": 3, "retry_at": 12.5, "worker": "w0", "duration_s": 0.5,
           "error": {"type": "Busy", "message": "later", "kind": "task"}}
    notice = stored_notice(DISPATCH, doc, "w1")
    assert notice is not None
    assert (notice.attempt, notice.outcome, notice.retry_at, notice.worker_id) == (2, StepState.FAILED, 12.5, "w0")
    assert notice.error is not None and notice.error.type == "Busy"


def test_the_planner_reads_a_stored_retry_as_the_report_that_never_came() -> None:
    from services.planner import _notice_of

    notice = _notice_of({"job": "j1", "step": "s", "state": "queued", "attempt": 3, "retry_at": 12.5, "worker": "w0",
                         "error": {"type": "Busy", "message": "later", "kind": "task"}})
    assert (notice.attempt, notice.outcome, notice.retry_at) == (2, StepState.FAILED, 12.5)
    finished = _notice_of({"job": "j1", "step": "s", "state": "failed", "attempt": 3, "worker": "w0"})
    assert (finished.attempt, finished.outcome, finished.retry_at) == (3, StepState.FAILED, None)
