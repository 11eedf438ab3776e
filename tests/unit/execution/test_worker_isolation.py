"""A worker runs steps through the same execution layer: process isolation by default, the
thread mode on request, the timeout warning handed to the worker on its event loop, and the
error dicts it stores (kind ``timeout`` or ``task``)."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest

from services.worker_execution import StepExecutor
from shared.messages import StepDispatch
from shared.plugin_registry import PluginRegistry
from shared.settings import Settings
from shared.states import JobState
from shared.store import JobRecord
from tests.unit.conftest import FIXTURE_PLUGINS, check

pytestmark = pytest.mark.timeout(60)


def job_of(text: str) -> JobRecord:
    document = check(text).document
    assert document is not None
    return JobRecord("j1", JobState.RUNNING, document, {}, list(document.steps), True, None)


async def run_on_worker(text: str, step: str = "s", **settings: Any) -> tuple[Any, list[tuple[str, float, float]]]:
    warnings: list[tuple[str, float, float]] = []

    def hook(dispatch: StepDispatch, elapsed_s: float, timeout_s: float) -> None:
        asyncio.get_running_loop()  # raises off the event loop (the warning would be lost)
        warnings.append((dispatch.step, elapsed_s, timeout_s))

    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        executor = StepExecutor(Settings(namespace="unit", concurrency=1, **settings), None, registry,  # type: ignore[arg-type]
                                concurrency=1, device="cpu", on_timeout_warning=hook)
        try:
            dispatch = StepDispatch(job_id="j1", step=step, attempt=1, device="cpu")
            outcome = await executor.execute(dispatch, job_of(text))
            await asyncio.sleep(0)  # the warning is delivered on the loop
        finally:
            executor.shutdown()
    return outcome, warnings


async def test_a_timed_out_step_warns_the_worker_then_fails_with_kind_timeout() -> None:
    outcome, warnings = await run_on_worker("graph:\n  s: {iso_sleep: [30]}\n")
    assert outcome.error is not None
    assert {k: outcome.error[k] for k in ("type", "kind")} == {"type": "StepTimeoutError", "kind": "timeout"}
    assert [(step, timeout_s) for step, _, timeout_s in warnings] == [("s", 1.0)]
    assert 0.8 <= warnings[0][1] < 1.0
    assert outcome.duration_s < 3.0


@pytest.mark.parametrize(("call", "error_type", "message"), [
    ("iso_segfault: []", "TaskCrashError", "crashed: signal 11 (SIGSEGV)"),
    ("iso_exit: [2]", "TaskCrashError", "crashed: exit code 2"),
])
async def test_a_crash_is_stored_as_a_task_error_with_its_reason(call: str, error_type: str, message: str) -> None:
    outcome, _ = await run_on_worker(f"graph:\n  s: {{{call}}}\n")
    assert outcome.error is not None
    assert {k: outcome.error[k] for k in ("type", "message", "kind")} == {"type": error_type, "message": message, "kind": "task"}


@pytest.mark.parametrize(("isolation", "same_process"), [("process", False), ("thread", True)])
async def test_outputs_are_encoded_for_storage_in_either_mode(isolation: str, same_process: bool) -> None:
    outcome, _ = await run_on_worker("graph:\n  s: {iso_pid: []}\n", isolation=isolation)
    assert outcome.error is None and outcome.outputs is not None
    assert (outcome.values["pid"] == os.getpid()) is same_process
    assert outcome.outputs.tree == {"~": "dict", "m": {"pid": outcome.values["pid"]}}


async def test_the_worker_default_memory_limit_applies() -> None:
    outcome, _ = await run_on_worker("graph:\n  s: {iso_allocate_unlimited: [300]}\n", memory_mb=100)
    assert outcome.error is not None
    assert outcome.error["type"] == "MemoryLimitError" and outcome.error["message"].startswith("memory limit 100 MB")
    assert outcome.error["kind"] == "task"
