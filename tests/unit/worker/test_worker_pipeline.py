"""The worker's per-delivery pipeline against an in-memory store and broker (no services).

Checks what each decision costs in MongoDB round trips and how the store's failures are
handled: never a failed step, always the delivery handed back after a backoff.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import AutoReconnect

import services.worker as worker_module
from services.worker import Worker
from shared.distributed_errors import StoreError
from shared.messages import JobControl, StepBatch, StepDispatch, StepRef, encode
from shared.settings import Settings
from shared.states import ErrorKind, JobState, StepState
from shared.store import JobRecord
from tests.unit.conftest import FIXTURE_PLUGINS, check
from tests.unit.worker.fakes import FakeBroker, FakeMessage, FakeStore, control_message

pytestmark = pytest.mark.timeout(30)
BACKOFF_S = 0.05
OWN_TASKS = '''
from plugins import task


@task
def wk_disk_full() -> None:
    raise OSError("disk full")
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Path:
    (tmp_path / "wk_tasks.py").write_text(OWN_TASKS)
    return tmp_path


@pytest.fixture
def make_worker(monkeypatch: pytest.MonkeyPatch, plugin_dir: Path) -> Iterator[Any]:
    monkeypatch.setattr(worker_module, "Store", FakeStore)
    monkeypatch.setattr(worker_module, "Broker", FakeBroker)
    monkeypatch.setattr(worker_module, "backoff_s", lambda delivery: BACKOFF_S)
    made: list[Worker] = []

    def make(**options: Any) -> Worker:
        settings = Settings(namespace="unit", concurrency=2, **{"claim_after_s": 60.0, **options})
        worker = Worker(settings, "cpu", plugin_dirs=[FIXTURE_PLUGINS, plugin_dir], worker_id="w1")
        made.append(worker)
        return worker

    yield make
    for worker in made:
        worker._executor.shutdown()
        worker.registry.close()


def store_of(worker: Worker) -> FakeStore:
    assert isinstance(worker.store, FakeStore)
    return worker.store


def broker_of(worker: Worker) -> FakeBroker:
    assert isinstance(worker.broker, FakeBroker)
    return worker.broker


def add_job(worker: Worker, text: str, job_id: str = "j1", *, claim: bool = False, stop: StepState | None = None,
            dirs: tuple[Path, ...] = ()) -> None:
    document = check(text, FIXTURE_PLUGINS, *dirs).document
    assert document is not None
    store_of(worker).jobs[job_id] = JobRecord(job_id, JobState.RUNNING, document, {}, list(document.steps), True, None,
                                              claim=claim, stop=stop)


def step_message(*steps: str, job_id: str = "j1", attempt: int = 1, claim: bool = False, redelivered: bool = False,
                 headers: dict[str, Any] | None = None) -> FakeMessage:
    if len(steps) == 1:
        body = encode(StepDispatch(job_id=job_id, step=steps[0], attempt=attempt, device="cpu", claim=claim))
    else:
        body = encode(StepBatch(job_id=job_id, device="cpu", steps=[StepRef(step=s, attempt=attempt) for s in steps], claim=claim))
    return FakeMessage(body, headers=headers or {}, redelivered=redelivered)


@asynccontextmanager
async def serving(worker: Worker) -> AsyncIterator[None]:
    writer = asyncio.create_task(worker._writer.run())
    try:
        yield
    finally:
        writer.cancel()
        if worker._background:
            await asyncio.gather(*worker._background, return_exceptions=True)


CHAIN = "graph:\n  a: {tp_add: [1, 2]}\n  b: {tp_add: [$a, 1]}\n"


async def test_the_fast_path_reads_the_job_once_and_writes_once_per_step(make_worker: Any) -> None:
    worker = make_worker()
    add_job(worker, CHAIN)
    async with serving(worker):
        first, second = step_message("a"), step_message("b")
        await worker.handle(first)
        await worker.handle(second)
    store = store_of(worker)
    assert store.calls == ["load_job", "finish_many", "finish_many"]  # b's input came from the cache
    assert first.settled == second.settled == [("ack", False)]
    assert store.outputs[("j1", "b")] == {"sum": 4}
    assert [(n.step, n.outcome) for n in broker_of(worker).notices()] == [("a", "succeeded"), ("b", "succeeded")]


@pytest.mark.parametrize(("message_claim", "redelivered", "record_claim", "take_over"), [
    (True, False, False, False), (False, True, False, True), (False, False, True, False),
])
async def test_steps_are_claimed_first_when_a_copy_may_exist(make_worker: Any, message_claim: bool, redelivered: bool,
                                                             record_claim: bool, take_over: bool,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    worker = make_worker()
    add_job(worker, CHAIN, claim=record_claim)
    store = store_of(worker)
    seen: list[bool] = []
    real_claim = store.claim

    async def claim(*args: Any, take_over: bool, publisher: str = "") -> bool:
        seen.append(take_over)
        return await real_claim(*args, take_over=take_over, publisher=publisher)

    monkeypatch.setattr(store, "claim", claim)
    async with serving(worker):
        await worker.handle(step_message("a", claim=message_claim, redelivered=redelivered))
    assert seen == [take_over]
    assert store.steps[("j1", "a")]["state"] == "succeeded"


async def test_a_control_word_asks_for_claims_too(make_worker: Any) -> None:
    worker = make_worker()
    add_job(worker, CHAIN)
    async with serving(worker):
        await worker._on_control(control_message(encode(JobControl(job_id="j1", claim=True))))
        await worker.handle(step_message("a"))
    assert store_of(worker).calls == ["load_job", "claim", "finish_many"]


async def test_a_failed_claim_does_not_run_the_step_and_reports_what_is_stored(make_worker: Any) -> None:
    worker = make_worker()
    add_job(worker, CHAIN)
    store = store_of(worker)
    store.steps[("j1", "a")] = {"state": "succeeded", "attempt": 1, "worker": "w0", "duration_s": 0.5}
    message = step_message("a", redelivered=True)
    async with serving(worker):
        await worker.handle(message)
    assert "finish_many" not in store.calls
    assert message.settled == [("ack", False)]
    assert [(n.outcome, n.worker_id) for n in broker_of(worker).notices()] == [("succeeded", "w0")]


@pytest.mark.parametrize(("record_stop", "control_stop", "expected"), [
    (StepState.SKIPPED, None, StepState.SKIPPED),
    (None, StepState.CANCELLED, StepState.CANCELLED),
    (StepState.SKIPPED, StepState.CANCELLED, StepState.CANCELLED),
])
async def test_a_stopping_job_records_its_steps_stopped_instead_of_running_them(
        make_worker: Any, record_stop: StepState | None, control_stop: StepState | None, expected: StepState) -> None:
    worker = make_worker()
    add_job(worker, CHAIN, stop=record_stop)
    message = step_message("a", "b", claim=True)
    async with serving(worker):
        if control_stop is not None:
            await worker._on_control(control_message(encode(JobControl(job_id="j1", stop=control_stop))))
        await worker.handle(message)
    store = store_of(worker)
    assert "finish_many" not in store.calls and "claim" not in store.calls
    assert {store.steps[("j1", s)]["state"] for s in "ab"} == {expected.value}
    notices = broker_of(worker).notices()
    assert sorted((n.step, n.outcome, n.error) for n in notices) == [("a", expected, None), ("b", expected, None)]
    assert message.settled == [("ack", False)]


async def test_a_stopped_step_that_had_started_or_finished_is_reported_as_stored(make_worker: Any) -> None:
    worker = make_worker()
    add_job(worker, CHAIN, stop=StepState.SKIPPED)
    store = store_of(worker)
    store.steps[("j1", "a")] = {"state": "cancelled", "attempt": 1, "worker": "planner"}
    store.steps[("j1", "b")] = {"state": "running", "attempt": 1, "worker": "w9"}
    async with serving(worker):
        await worker.handle(step_message("a", "b"))
    assert [(n.step, n.outcome) for n in broker_of(worker).notices()] == [("a", "cancelled")]
    assert store.steps[("j1", "b")]["state"] == "running"  # a running step is not stopped


async def test_a_step_of_a_missing_job_is_dead_lettered_and_nothing_is_written(make_worker: Any) -> None:
    """A message no job here can serve is refused (dead-lettered: the planner records it);
    the worker writes no step for a job that does not exist."""
    worker = make_worker()
    message = step_message("a", job_id="gone")
    async with serving(worker):
        await worker.handle(message)
    assert message.settled == [("reject", False)]
    assert broker_of(worker).notices() == [] and ("gone", "a") not in store_of(worker).steps


@pytest.mark.parametrize(("task", "kind", "error_type"), [
    ("tp_slow: [1.0]", ErrorKind.TIMEOUT, "StepTimeoutError"),
    ("tp_boom: [oops]", ErrorKind.TASK, "RuntimeError"),
    ("wk_disk_full: []", ErrorKind.TASK, "OSError"),  # the task's own OSError is its failure
    ("tp_exit: [3]", ErrorKind.TASK, "SystemExit"),
])
async def test_task_failures_are_step_failures_with_their_kind(make_worker: Any, plugin_dir: Path, task: str,
                                                               kind: ErrorKind, error_type: str) -> None:
    worker = make_worker()
    add_job(worker, f"graph:\n  a: {{{task}}}\n", dirs=(plugin_dir,))
    message = step_message("a")
    async with serving(worker):
        await worker.handle(message)
    (notice,) = broker_of(worker).notices()
    assert notice.error is not None and (notice.error.kind, notice.error.type) == (kind, error_type)
    assert store_of(worker).steps[("j1", "a")]["error"]["kind"] == kind.value
    assert message.settled == [("ack", False)]


# finish_many is not here: an outage while recording a result is waited out in place
# (test_worker_results.py), the finished task is not handed back.
@pytest.mark.parametrize("failing", ["load_job", "claim", "stop_unstarted", "step_doc"])
async def test_store_failures_hand_the_delivery_back_after_a_backoff(make_worker: Any, failing: str,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker()
    stop = StepState.SKIPPED if failing == "stop_unstarted" else None
    add_job(worker, CHAIN, stop=stop)
    store = store_of(worker)
    if failing == "step_doc":  # a duplicate of a finished step: its notice is read back
        store.steps[("j1", "a")] = {"state": "succeeded", "attempt": 1, "worker": "w0"}
        worker._remember_finished(("j1", "a", 1))
    store.fail[failing] = lambda: AutoReconnect("connection reset")
    message = step_message("a", claim=True, headers={"x-delivery-count": 2})
    started = asyncio.get_running_loop().time()
    with caplog.at_level(logging.WARNING, "theodolite.worker"):
        async with serving(worker):
            await worker.handle(message)
    assert message.settled == [("nack", True)]
    assert message.at[0] - started >= BACKOFF_S * 0.9
    assert broker_of(worker).notices() == []
    assert store.steps.get(("j1", "a"), {}).get("state") in (None, "running", "succeeded")  # never failed
    (line,) = [r.getMessage() for r in caplog.records if "handing the delivery back" in r.getMessage()]
    assert "job j1" in line and "a" in line and "delivery 3" in line and "AutoReconnect: connection reset" in line
    # the worker keeps serving
    del store.fail[failing]
    async with serving(worker):
        await worker.handle(step_message("a", redelivered=True))
    assert [n.outcome for n in broker_of(worker).notices()] == [stop or StepState.SUCCEEDED]


async def test_finished_steps_of_a_handed_back_batch_keep_their_results(make_worker: Any) -> None:
    worker = make_worker()
    add_job(worker, "graph:\n  x: {tp_add: [1, 1]}\n  a: {tp_add: [1, 2]}\n  b: {tp_add: [$x, 1]}\n")
    store = store_of(worker)
    store.steps[("j1", "x")] = {"state": "succeeded", "attempt": 1, "worker": "w0"}
    store.outputs[("j1", "x")] = {"sum": 2}
    store.fail["upstream_outputs"] = lambda: StoreError("GridFS read failed")
    first = step_message("a", "b")
    async with serving(worker):
        await worker.handle(first)
        assert first.settled == [("nack", True)]
        assert store.steps[("j1", "a")]["state"] == "succeeded" and ("j1", "b") not in store.steps
        assert [n.step for n in broker_of(worker).notices()] == ["a"]  # reported at once
        del store.fail["upstream_outputs"]
        again = step_message("a", "b", redelivered=True)
        await worker.handle(again)
    assert again.settled == [("ack", False)]
    assert store.outputs[("j1", "b")] == {"sum": 3}
    assert [(n.step, n.outcome) for n in broker_of(worker).notices()] == [("a", "succeeded"), ("a", "succeeded"), ("b", "succeeded")]


async def test_draining_cuts_a_backoff_short(make_worker: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "backoff_s", lambda delivery: 30.0)
    worker = make_worker()
    store_of(worker).fail["load_job"] = lambda: OSError("connection refused")
    message = step_message("a")
    async with serving(worker):
        handling = asyncio.create_task(worker.handle(message))
        await asyncio.sleep(0.05)
        worker._stopping.set()
        await asyncio.wait_for(handling, 2)
    assert message.settled == [("nack", True)]


async def test_a_control_word_claims_the_jobs_running_steps_at_once(make_worker: Any) -> None:
    worker = make_worker()
    add_job(worker, "graph:\n  a: {tp_slow: [0.15]}\n")
    store = store_of(worker)
    async with serving(worker):
        handling = asyncio.create_task(worker.handle(step_message("a")))
        await asyncio.sleep(0.05)
        assert store.calls == ["load_job"]  # running unclaimed
        await worker._on_control(control_message(encode(JobControl(job_id="j1", claim=True))))
        await asyncio.sleep(0.01)
        assert store.calls == ["load_job", "claim"] and store.steps[("j1", "a")]["state"] == "running"
        await handling
    assert store.steps[("j1", "a")]["state"] == "succeeded"


async def test_a_background_claim_that_fails_leaves_the_step_running(make_worker: Any, caplog: pytest.LogCaptureFixture) -> None:
    worker = make_worker(claim_after_s=0.0)
    add_job(worker, "graph:\n  a: {tp_slow: [0.05]}\n")
    store_of(worker).fail["claim"] = lambda: AutoReconnect("not primary")
    message = step_message("a")
    with caplog.at_level(logging.WARNING, "theodolite.worker"):
        async with serving(worker):
            await worker.handle(message)
    assert message.settled == [("ack", False)]
    assert store_of(worker).steps[("j1", "a")]["state"] == "succeeded"
    assert any("claiming step a of job j1 failed" in r.getMessage() for r in caplog.records)


async def test_bad_control_messages_are_rejected_and_change_nothing(make_worker: Any) -> None:
    worker = make_worker()
    message = control_message(b'{"kind": "job.control", "job_id": "j1", "stop": "failed"}')
    await worker._on_control(message)
    assert message.settled == [("reject", False)]
    assert "j1" not in worker._control


async def test_a_delivery_past_its_ack_deadline_is_claimed_and_acked_early(make_worker: Any) -> None:
    worker = make_worker(ack_deadline_s=0.05)
    add_job(worker, "graph:\n  a: {tp_slow: [0.15]}\n")
    message = step_message("a")
    async with serving(worker):
        await worker.handle(message)
    assert message.settled == [("ack", False)]
    assert store_of(worker).calls == ["load_job", "claim", "finish_many"]
    assert store_of(worker).steps[("j1", "a")]["state"] == "succeeded"
