"""The embedded runner: concurrency, retries, timeouts, failure handling."""

from __future__ import annotations

import asyncio
import threading
import time

from shared.execution.local import LocalExecutor
from shared.planner.core import StepState
from shared.plugin_registry import PluginRegistry
from tests.unit.conftest import FIXTURE_PLUGINS, check, outputs, run_document

SLEEPS = """
tasks:
  sleep: {plugin: plugins.basic.tasks.sleep_for, inputs: [{seconds: number}], outputs: {slept_s: number}}
graph:
""" + "".join(f"  s{i}: {{sleep: [0.5]}}\n" for i in range(4))


def test_independent_steps_run_concurrently() -> None:
    started = time.perf_counter()
    result = run_document(SLEEPS, concurrency=4)
    elapsed = time.perf_counter() - started
    assert result.status == "succeeded"
    assert elapsed < 1.5, f"4 x 0.5 s independent sleeps took {elapsed:.2f} s (2 s when sequential)"


def test_concurrency_one_runs_steps_one_at_a_time() -> None:
    started = time.perf_counter()
    run_document(SLEEPS, concurrency=1)
    assert time.perf_counter() - started >= 2.0


def test_plugin_code_runs_off_the_event_loop_thread() -> None:
    doc = "graph:\n  s: {tp_echo: [1]}\n"
    result = check(doc)
    seen: list[str] = []

    async def main() -> None:
        loop_thread = threading.current_thread().name
        with PluginRegistry([FIXTURE_PLUGINS]) as registry:
            executor = LocalExecutor(result.document, {}, registry, on_change=lambda n, s: seen.append(threading.current_thread().name))
            ticks = 0
            job = asyncio.create_task(executor.run_async())
            while not job.done():
                ticks += 1
                await asyncio.sleep(0)
            assert (await job).status == "succeeded"
        assert loop_thread not in seen

    asyncio.run(main())


def test_retries_rerun_a_failing_task() -> None:
    import uuid

    result = run_document(f"graph:\n  f: {{tp_flaky: [{uuid.uuid4().hex}]}}\n")
    assert result.status == "succeeded"
    assert outputs(result, "f") == {"value": "ok after 3 calls"}


def test_timeout_fails_a_step_on_time() -> None:
    started = time.perf_counter()
    result = run_document("graph:\n  slow: {tp_slow: [2.0]}\n")
    assert result.status == "failed"
    assert result.error.type == "StepTimeoutError" and result.error.step == "slow"
    assert time.perf_counter() - started < 1.5


def test_failure_reports_the_error_and_skips_dependents() -> None:
    result = run_document("""
graph:
  ok: {tp_add: [1, 2]}
  bad: {tp_boom: [kaput], dependencies: [ok]}
  after: {tp_add: [$ok, 1], dependencies: [bad]}
""")
    assert result.status == "failed"
    assert result.error.model_dump() == {"step": "bad", "type": "RuntimeError", "message": "kaput"}
    assert [result.steps[s].status for s in ("ok", "bad", "after")] == ["succeeded", "failed", "skipped"]


def test_keep_going_finishes_independent_branches() -> None:
    doc = "graph:\n  bad: {tp_boom: []}\n  child: {tp_echo: [1], dependencies: [bad]}\n  other: {tp_slow: [0.05]}\n"
    result = run_document(doc, fail_fast=False, concurrency=1)
    assert result.steps["other"].status == "succeeded"
    assert result.steps["child"].status == "skipped"
    assert result.status == "failed"


def test_state_changes_are_announced_in_order() -> None:
    result = check("graph:\n  a: {tp_add: [1]}\n  b: {tp_add: [$a]}\n")
    changes: list[tuple[str, StepState]] = []
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        LocalExecutor(result.document, {}, registry, on_change=lambda n, s: changes.append((n, s))).run()
    assert changes == [
        ("a", StepState.QUEUED), ("a", StepState.RUNNING), ("a", StepState.SUCCEEDED),
        ("b", StepState.QUEUED), ("b", StepState.RUNNING), ("b", StepState.SUCCEEDED),
    ]


def test_long_chain_runs_in_order() -> None:
    body = "".join(f"  s{i}: {{tp_add: [$s{i - 1}, 1]}}\n" for i in range(1, 2000))
    result = run_document("graph:\n  s0: {tp_add: [0, 1]}\n" + body)
    assert outputs(result, "s1999") == {"sum": 2000}
