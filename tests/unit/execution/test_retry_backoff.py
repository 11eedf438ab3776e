"""Retries with backoff in the embedded runner: the wait, its cap, ``retry_on``, ``x-retry``,
and that a step waiting for its retry holds no runner thread (shared/execution/local.py)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest

from shared.execution.retry_timers import RetryTimers
from shared.planner.core import StepState
from tests.unit.conftest import run_document
from tests.unit.fixtures.plugins.tp_tasks import retry_calls

pytestmark = pytest.mark.timeout(60)


def test_a_retry_waits_its_backoff_doubling_up_to_the_cap(tmp_path: Path) -> None:
    token = str(tmp_path / uuid.uuid4().hex)
    result = run_document(f"graph:\n  f: {{tp_fails_twice_timed: [{token}]}}\n")
    assert result.status == "succeeded" and result.steps["f"].outputs == {"calls": 3}
    assert result.steps["f"].attempts == 3
    first, second, third = retry_calls(token)
    # backoff_s=0.2 then 0.4 capped at max_backoff_s=0.3, each within ±25 %: never sooner; later only by scheduling
    assert 0.15 <= second - first <= 0.25 + 1.0, second - first
    assert 0.225 <= third - second <= 0.375 + 1.0, third - second


def test_a_step_waiting_for_its_retry_holds_no_runner_thread(tmp_path: Path) -> None:
    token = str(tmp_path / uuid.uuid4().hex)
    doc = f"graph:\n  flaky: {{tp_fails_twice_timed: [{token}]}}\n  other: {{tp_nap: [{token}-other, 0.1]}}\n"
    result = run_document(doc, concurrency=1)
    assert result.status == "succeeded"
    first, second, _ = retry_calls(token)
    (other_started,) = retry_calls(f"{token}-other")
    assert first < other_started < second, "the only runner thread should run 'other' while 'flaky' waits"


@pytest.mark.parametrize(("error", "calls", "status"), [("KeyError", 4, "failed"), ("ValueError", 1, "failed")])
def test_retry_on_limits_which_failures_are_retried(error: str, calls: int, status: str, tmp_path: Path) -> None:
    token = str(tmp_path / uuid.uuid4().hex)
    result = run_document(f"graph:\n  s: {{tp_retry_on_key_error: [{token}, {error}]}}\n")
    assert result.status == status and result.error is not None and result.error.type == error
    assert len(retry_calls(token)) == calls
    assert result.steps["s"].attempts == calls


def test_a_step_override_replaces_the_tasks_retries(tmp_path: Path) -> None:
    token = str(tmp_path / uuid.uuid4().hex)
    result = run_document(f"graph:\n  s:\n    tp_retry_on_key_error: [{token}, KeyError]\n    x-retry: {{retries: 1}}\n")
    assert result.status == "failed" and len(retry_calls(token)) == 2


def test_a_failure_elsewhere_ends_a_waiting_retry_at_once_under_fail_fast(tmp_path: Path) -> None:
    token = str(tmp_path / uuid.uuid4().hex)
    doc = (f"graph:\n  waits:\n    tp_retry_on_key_error: [{token}, KeyError]\n    x-retry: {{backoff_s: 30, max_backoff_s: 30}}\n"
           f"  late:\n    tp_boom: [kaput]\n    dependencies: [starter]\n  starter: {{tp_nap: [{token}-starter, 0.2]}}\n")
    started = time.monotonic()
    result = run_document(doc, concurrency=2)
    assert time.monotonic() - started < 10, "the job waited for a retry 30 s away"
    assert result.status == "failed" and result.error is not None and result.error.step == "late"
    assert result.steps["waits"].status == "skipped"
    assert len(retry_calls(token)) == 1


def test_a_waiting_retry_is_reported_as_queued_again(tmp_path: Path) -> None:
    from shared.execution.local import LocalExecutor
    from shared.plugin_registry import PluginRegistry
    from tests.unit.conftest import FIXTURE_PLUGINS, check

    token = str(tmp_path / uuid.uuid4().hex)
    checked = check(f"graph:\n  f: {{tp_fails_twice_timed: [{token}]}}\n")
    assert checked.document is not None
    changes: list[StepState] = []
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        executor = LocalExecutor(checked.document, {}, registry, on_change=lambda _, state: changes.append(state))
        assert executor.run().status == "succeeded"
    assert changes == [StepState.QUEUED, StepState.RUNNING, StepState.QUEUED, StepState.RUNNING, StepState.QUEUED,
                       StepState.RUNNING, StepState.SUCCEEDED]
    record = executor.job.records["f"]
    assert [error.type for error in record.failures] == ["_Busy", "_Busy"] and record.retry_at is None


def test_retry_timers_fire_in_due_order_and_cancel() -> None:
    fired: list[str] = []
    done = threading.Event()

    def due(name: str) -> None:
        fired.append(name)
        if len(fired) == 2:
            done.set()

    timers = RetryTimers(due)
    try:
        timers.schedule("late", 0.2)
        timers.schedule("early", 0.05)
        timers.schedule("dropped", 5)
        assert done.wait(3) and fired == ["early", "late"]
        assert timers.waiting == {"dropped"}
        assert timers.cancel_all() == ["dropped"] and timers.waiting == frozenset()
    finally:
        timers.close()
    timers.schedule("after-close", 0)
    time.sleep(0.1)
    assert fired == ["early", "late"]
