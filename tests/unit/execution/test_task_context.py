"""The task context, the capture of a task's output and cancellation, in both isolation modes
(shared/task_context.py, shared/execution/{capture,child_reports,cancellation}.py)."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from shared.execution.cancellation import Cancellation
from shared.execution.capture import Capture, capturing
from shared.execution.isolation import Reporting, StepRun, TaskRunner
from shared.plugin_registry import PluginRegistry
from shared.task_context import ContextInfo, Metric, derive_seed
from tests.unit.conftest import FIXTURE_PLUGINS, check

pytestmark = pytest.mark.timeout(90)


@pytest.fixture(scope="module")
def runner():
    with PluginRegistry([FIXTURE_PLUGINS]) as registry, TaskRunner(registry, slots=2) as task_runner:
        yield task_runner


def run_step(runner: TaskRunner, call: str, reporting: Reporting | None = None, **options: Any) -> StepRun:
    result = check(f"graph:\n  s: {{{call}}}\n")
    assert result.document is not None, [i.message for i in result.issues]
    step = result.document.steps["s"]
    from shared.execution.invoke import resolve_arguments

    return runner.run("s", result.document.tasks[step.task], lambda: resolve_arguments(step, {}, {}),
                      reporting=reporting, **options)


def test_the_context_parameter_is_not_a_document_input() -> None:
    ok = check("graph:\n  s: {iso_context: [a]}\n")
    assert ok.document is not None and not ok.errors
    named = check("graph:\n  s: {iso_context: {label: a, scale: 2}}\n")
    assert named.document is not None
    asked = check("graph:\n  s: {iso_context: {label: a, ctx: 1}}\n")
    assert asked.document is None, "a document may not pass the context"


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_a_task_gets_its_context_and_its_reports_come_back(runner: TaskRunner, isolation: str) -> None:
    seen: list[Metric] = []
    info = ContextInfo(job_id="job-1", step="s", attempt=2, device="cpu", worker_id="w-1", seed=derive_seed(7, "s"))
    task = "iso_context" if isolation == "process" else "iso_context_thread"
    run = run_step(runner, f"{task}: [a]", Reporting(context=info, on_metric=seen.append))
    assert run.failure is None, run.failure
    if isolation == "process":
        assert run.values == {"job": "job-1", "step": "s", "attempt": 2, "seed": derive_seed(7, "s"), "cancelled": False}
        assert [(m.name, m.value, m.step) for m in run.metrics] == [("loss", 1.0, 0), ("loss", 0.5, 1), ("loss", 1 / 3, 2)]
        assert run.artifacts is not None and np.array_equal(run.artifacts["weights"], np.arange(4, dtype=np.float32))
        assert "hello from a" in run.logs and "WARNING iso: a warning from a" in run.logs
    else:
        assert run.values == {"seen": "w-1/cpu/a"}
        assert [(m.name, m.value) for m in run.metrics] == [("accuracy", 0.5)]
        assert run.logs == "thread a\n"
    assert seen == run.metrics, "every metric is passed on as it is logged"


def test_outputs_and_artifacts_are_encoded_for_storage_apart(runner: TaskRunner) -> None:
    run = run_step(runner, "iso_context: [b]", threshold_bytes=8, decode=False)
    assert run.failure is None and run.encoded is not None and run.encoded_artifacts is not None
    assert len(run.encoded_artifacts.blobs) == 1 and not run.encoded.blobs


def test_derived_seeds_are_stable_and_differ_between_steps() -> None:
    assert derive_seed(7, "s") == derive_seed(7, "s") == int.from_bytes(__import__("hashlib").sha256(b"7:s").digest()[:8], "big") >> 1
    assert derive_seed(7, "s") != derive_seed(7, "t") and derive_seed(7, "s") != derive_seed(8, "s")
    assert 0 <= derive_seed(2**70, "x") < 2**63


@pytest.mark.parametrize("isolation", ["process", "thread"])
def test_cancel_is_seen_at_once_and_the_grace_is_enforced(runner: TaskRunner, isolation: str) -> None:
    cancel = Cancellation()
    threading.Timer(0.3, cancel.request, args=(5.0,)).start()
    call = "iso_wait_for_cancel: [10]" if isolation == "process" else "tp_wait_for_cancel: [10]"
    started = time.monotonic()
    run = run_step(runner, call, Reporting(cancel=cancel))
    assert run.failure is None, run.failure
    waited = next(iter(run.values.values())) if run.values else None
    assert waited is not None and 0.2 <= waited <= 4, waited
    assert time.monotonic() - started < 8

    stubborn = Cancellation()
    threading.Timer(0.2, stubborn.request, args=(0.5,)).start()
    started = time.monotonic()
    call = "iso_ignore_cancel: [20]" if isolation == "process" else "tp_ignore_cancel: [20]"
    run = run_step(runner, call, Reporting(cancel=stubborn))
    assert run.failure is not None and run.failure.type == "StepCancelledError" and not run.failure.retryable
    assert time.monotonic() - started < 8, "the step outlived its grace period"


def test_a_killed_tasks_output_so_far_is_kept(runner: TaskRunner) -> None:
    chunks: list[str] = []
    cancel = Cancellation()
    threading.Timer(1.6, cancel.request, args=(0.0,)).start()
    run = run_step(runner, "iso_print_then_sleep: [20]", Reporting(cancel=cancel, on_logs=chunks.append))
    assert run.failure is not None and run.failure.type == "StepCancelledError"
    assert "before the sleep" in "".join(chunks), "output is sent while the task runs"
    assert "before the sleep" in run.logs


def test_a_capture_keeps_its_head_and_tail_within_the_cap() -> None:
    capture = Capture(cap_bytes=4096)
    for index in range(1000):
        capture.write(f"line {index:04d}\n")
    text = capture.text()
    assert text.startswith("line 0000\n") and text.endswith("line 0999\n")
    assert "bytes of output dropped" in text and capture.dropped_bytes > 0
    assert len(text.encode()) <= 4096 + 200


def test_captures_of_threads_side_by_side_stay_apart() -> None:
    texts: dict[str, str] = {}

    def work(name: str) -> None:
        with capturing() as capture:
            for _ in range(50):
                print(name)
                time.sleep(0.001)
        texts[name] = capture.text()

    threads = [threading.Thread(target=work, args=(name,)) for name in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert texts == {"left": "left\n" * 50, "right": "right\n" * 50}
