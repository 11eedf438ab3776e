"""The embedded runner never hangs: a task raising any BaseException, a raising progress
callback or a runner bug fails what it must and the job ends (issue 7, item 9).

Every test has a short timeout: without the fix these cases wait forever.
"""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from services import display
from shared.execution.local import LocalExecutor
from shared.planner.core import StepState
from shared.plugin_registry import PluginRegistry
from tests.unit.conftest import FIXTURE_PLUGINS, check, outputs, run_document

pytestmark = pytest.mark.timeout(30)

# a succeeded step, the failing one, and two steps after it that fail-fast skips
JOB = """
graph:
  ok: {tp_add: [1, 2]}
  bad: {%s, dependencies: [ok]}
  after: {tp_add: [$ok, 1], dependencies: [bad]}
  later: {tp_add: [$ok, 2], dependencies: [after]}
"""

BASE_EXCEPTIONS = [
    pytest.param("tp_exit: [3]", "SystemExit", "3", id="SystemExit"),
    pytest.param("tp_exit: [0]", "SystemExit", "0", id="SystemExit-0"),
    pytest.param("tp_interrupt: [stop]", "KeyboardInterrupt", "stop", id="KeyboardInterrupt"),
    pytest.param("tp_abort: [custom]", "TaskAbort", "custom", id="BaseException-subclass"),
    pytest.param("tp_generator_exit: [closed]", "GeneratorExit", "closed", id="GeneratorExit"),
    pytest.param("tp_exit_timed: [4]", "SystemExit", "4", id="SystemExit-under-timeout"),
]


def runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("theodolite-step-")]


def executor_for(text: str, registry: PluginRegistry, **options: Any) -> LocalExecutor:
    result = check(text)
    assert result.document is not None, result.issues
    return LocalExecutor(result.document, {}, registry, **options)


@pytest.mark.parametrize("concurrency", [1, 4])
@pytest.mark.parametrize(("call", "error_type", "message"), BASE_EXCEPTIONS)
def test_a_base_exception_fails_its_step_and_ends_the_job(call: str, error_type: str, message: str,
                                                          concurrency: int) -> None:
    before = set(runner_threads())
    result = run_document(JOB % call, concurrency=concurrency)
    assert result.status == "failed"
    assert result.error is not None
    assert result.error.model_dump() == {"step": "bad", "type": error_type, "message": message}
    states = {name: report.status for name, report in result.steps.items()}
    assert states == {"ok": "succeeded", "bad": "failed", "after": "skipped", "later": "skipped"}
    assert outputs(result, "ok") == {"sum": 3}
    assert error_type in (result.steps["bad"].traceback or "")
    assert set(runner_threads()) <= before, "run() returned with its runner threads still alive"


def test_keep_going_finishes_the_other_branches_after_a_system_exit() -> None:
    doc = "graph:\n  bad: {tp_exit: [5]}\n  child: {tp_add: [1], dependencies: [bad]}\n  other: {tp_add: [2, 2]}\n"
    result = run_document(doc, fail_fast=False, concurrency=1)
    assert result.status == "failed"
    assert [result.steps[s].status for s in ("bad", "child", "other")] == ["failed", "skipped", "succeeded"]
    assert outputs(result, "other") == {"sum": 4}


def test_system_exit_and_keyboard_interrupt_are_not_retried() -> None:
    token = uuid.uuid4().hex
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        executor = executor_for(f"graph:\n  once: {{tp_exit_retried: [{token}]}}\n", registry)
        result = executor.run()
    assert result.error is not None
    assert (result.error.type, result.error.message) == ("SystemExit", "exit call 1")
    assert executor.job.records["once"].attempts == 1


def test_ordinary_exceptions_are_still_retried() -> None:
    result = run_document(f"graph:\n  f: {{tp_flaky: [{uuid.uuid4().hex}]}}\n")
    assert outputs(result, "f") == {"value": "ok after 3 calls"}


def test_an_unprintable_exception_still_fails_its_step() -> None:
    result = run_document("graph:\n  bad: {tp_unprintable: []}\n  after: {tp_add: [1], dependencies: [bad]}\n")
    assert result.status == "failed"
    assert result.error is not None and (result.error.step, result.error.type) == ("bad", "Unprintable")
    assert [result.steps[s].status for s in ("bad", "after")] == ["failed", "skipped"]


# progress / event callbacks ----------------------------------------------------------------
CHAIN = "graph:\n  a: {tp_add: [1]}\n  b: {tp_add: [$a, 1]}\n  c: {tp_add: [$b, 1]}\n  d: {tp_add: [1, 1]}\n"


@pytest.mark.parametrize("raised", [RuntimeError("display broke"), SystemExit(2), KeyboardInterrupt()],
                         ids=["RuntimeError", "SystemExit", "KeyboardInterrupt"])
@pytest.mark.parametrize("when", [StepState.QUEUED, StepState.RUNNING, StepState.SUCCEEDED], ids=lambda state: state.value)
@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_raising_callback_neither_kills_a_thread_nor_changes_the_result(
        raised: BaseException, when: StepState, concurrency: int, caplog: pytest.LogCaptureFixture) -> None:
    seen: list[tuple[str, StepState]] = []

    def on_change(name: str, state: StepState) -> None:
        seen.append((name, state))
        if state is when:
            raise raised

    with PluginRegistry([FIXTURE_PLUGINS]) as registry, caplog.at_level(logging.ERROR):
        executor = executor_for(CHAIN, registry, concurrency=concurrency, on_change=on_change)
        result = executor.run()
    assert result.status == "succeeded"
    assert result.error is None
    assert {name: report.outputs for name, report in result.steps.items()} == {
        "a": {"sum": 1}, "b": {"sum": 2}, "c": {"sum": 3}, "d": {"sum": 2}}
    for name in "abcd":  # every change is still announced, in order
        assert [state for step, state in seen if step == name] == [StepState.QUEUED, StepState.RUNNING, StepState.SUCCEEDED]
    failures = sum(1 for _, state in seen if state is when)
    assert executor.job.callback_errors == failures
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and "on_change" in r.getMessage()]
    assert len(logged) == 1, "a failing callback is logged once (with its traceback), not once per call"


def test_a_raising_callback_on_a_failing_job_keeps_the_right_states() -> None:
    def on_change(name: str, state: StepState) -> None:
        raise RuntimeError(f"callback failed on {name} {state.value}")

    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        executor = executor_for(JOB % "tp_boom: [kaput]", registry, on_change=on_change)
        result = executor.run()
    assert result.status == "failed"
    assert result.error is not None and result.error.model_dump() == {"step": "bad", "type": "RuntimeError", "message": "kaput"}
    assert [result.steps[s].status for s in ("ok", "bad", "after", "later")] == ["succeeded", "failed", "skipped", "skipped"]
    assert executor.job.callback_error is not None
    assert executor.job.callback_error.message == "callback failed on ok queued"


def test_the_progress_display_survives_a_failing_redraw(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(executor: LocalExecutor) -> str:
        raise RuntimeError("cannot draw")

    monkeypatch.setattr(display, "_detail", broken)
    monkeypatch.setattr(display, "REFRESH_S", 0.01)
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        executor = executor_for("graph:\n  a: {tp_slow: [0.1]}\n  b: {tp_add: [$a, 1]}\n", registry)
        result = asyncio.run(display.run_with_progress(executor, show=True))
    assert result.status == "succeeded"
    assert outputs(result, "b") == {"sum": 1.1}


# defence in depth: a bug in the runner itself ------------------------------------------------
def test_a_runner_bug_fails_the_step_it_was_on_and_ends_the_job(monkeypatch: pytest.MonkeyPatch) -> None:
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        executor = executor_for(CHAIN, registry, concurrency=2)
        real = executor.job.core.succeeded

        def buggy(step: str) -> list[str]:
            if step == "b":
                raise LookupError("planner bug")
            return real(step)

        monkeypatch.setattr(executor.job.core, "succeeded", buggy)
        result = executor.run()
    assert result.status == "failed"
    assert result.error is not None and (result.error.step, result.error.type) == ("b", "LookupError")
    assert result.steps["a"].status == "succeeded"
    assert result.steps["b"].status == "failed"
    assert result.steps["c"].status in ("skipped", "cancelled")


def test_run_returns_when_every_runner_thread_dies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalExecutor, "_work", lambda self: None)  # threads exit at once
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        started = time.perf_counter()
        result = executor_for(CHAIN, registry, concurrency=2).run()
    assert time.perf_counter() - started < 10
    assert result.status == "failed"
    assert result.error is not None and (result.error.step, result.error.type) == ("(runner)", "RuntimeError")
    assert {report.status for report in result.steps.values()} == {"cancelled"}


# the CLI ----------------------------------------------------------------------------------
CLI_DOC = """tasks:
  add: {plugin: tp_tasks.tp_add, inputs: [{a: number}, {b: number}], outputs: {sum: number}}
  exit: {plugin: tp_tasks.tp_exit, inputs: [{code: any}]}
graph:
  one: {add: [1, 2]}
  quit: {exit: [3], dependencies: [one]}
  after: {add: [$one, 1], dependencies: [quit]}
"""


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``theodolite run`` in a child process: a hang fails on the subprocess timeout (a hung
    ``asyncio.run`` in this process would outlive pytest-timeout)."""
    doc = tmp_path / "exits.yaml"
    doc.write_text(CLI_DOC)
    script = Path(sys.executable).with_name("theodolite")
    command = [str(script), "run", str(doc), *args, "--plugins", str(FIXTURE_PLUGINS)]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=20, check=False)


def test_cli_run_with_a_system_exit_task_exits_1_with_the_error(tmp_path: Path) -> None:
    proc = run_cli(tmp_path, "--json", "--no-progress")
    assert proc.returncode == 1, proc.stderr
    payload = json.loads(proc.stdout)
    assert payload["status"] == "failed"
    assert payload["error"] == {"step": "quit", "type": "SystemExit", "message": "3"}
    assert {name: step["status"] for name, step in payload["steps"].items()} == {
        "one": "succeeded", "quit": "failed", "after": "skipped"}


@pytest.mark.parametrize("progress", ["--progress", "--no-progress"])
def test_cli_run_with_a_system_exit_task_prints_the_table(tmp_path: Path, progress: str) -> None:
    proc = run_cli(tmp_path, progress)
    assert proc.returncode == 1, proc.stderr
    assert "SystemExit" in proc.stdout and "quit" in proc.stdout
