"""Killable step execution: tasks in child processes (issue item 1).

A task that segfaults, exits, runs past its timeout or allocates past its memory limit fails
only its step, with the reason, and the pool serves the next task; thread isolation still
works; values cross the process boundary exactly; no child outlives its runner.
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from shared.distributed_errors import CodecError
from shared.document.model import JobDocument
from shared.execution import wire
from shared.execution.invoke import resolve_arguments
from shared.execution.isolation import StepRun, TaskRunner
from shared.execution.local import LocalExecutor
from shared.execution.options import ExecutionOptions, Isolation
from shared.plugin_registry import PluginRegistry
from shared.states import ErrorKind
from tests.unit.conftest import FIXTURE_PLUGINS, check

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[3]


def document(text: str) -> JobDocument:
    result = check(text)
    assert result.document is not None, [issue.format("doc.yaml") for issue in result.issues]
    return result.document


def run_step(runner: TaskRunner, call: str, arguments: Any = None, **options: Any) -> StepRun:
    """Run the one step ``s: {call}`` (its arguments resolved from the document, or ``arguments``)."""
    doc = document(f"graph:\n  s: {{{call}}}\n")
    step = doc.steps["s"]
    resolve = (lambda: resolve_arguments(step, {}, {})) if arguments is None else (lambda: arguments)
    return runner.run("s", doc.tasks[step.task], resolve, **options)


def pid_of(runner: TaskRunner) -> int:
    run = run_step(runner, "iso_pid: []")
    assert run.failure is None, run.failure
    assert run.values is not None
    return int(run.values["pid"])


def gone(pid: int, within_s: float = 10.0) -> bool:
    """Whether process ``pid`` has exited (and been reaped) within ``within_s``."""
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z" and time.monotonic() > deadline - within_s / 2:
            return True  # exited; its parent (the fork server) reaps it
        time.sleep(0.05)
    return False


@pytest.fixture
def registry() -> Any:
    with PluginRegistry([FIXTURE_PLUGINS]) as made:
        yield made


@pytest.fixture
def runner(registry: PluginRegistry) -> Any:
    with TaskRunner(registry, ExecutionOptions(), slots=1) as made:
        yield made


# failures cost one step --------------------------------------------------------------------------
FAILURES = [
    pytest.param("iso_segfault: []", "TaskCrashError", "crashed: signal 11 (SIGSEGV)", id="segfault"),
    pytest.param("iso_exit: [3]", "TaskCrashError", "crashed: exit code 3", id="os._exit"),
    pytest.param("iso_allocate: [400]", "MemoryLimitError", "memory limit 200 MB", id="memory-limit"),
]


@pytest.mark.parametrize(("call", "error_type", "reason"), FAILURES)
def test_a_dying_or_over_limit_child_fails_only_its_step_and_is_replaced(
        runner: TaskRunner, call: str, error_type: str, reason: str) -> None:
    before = pid_of(runner)
    run = run_step(runner, call)
    assert run.failure is not None
    assert (run.failure.type, run.failure.kind) == (error_type, ErrorKind.TASK)
    assert run.failure.message.startswith(reason)
    assert run.failure.retryable and run.failure.interrupted
    assert gone(before), "the failed child was not replaced"
    after = pid_of(runner)  # the pool serves the next task, in a fresh child
    assert after not in (before, os.getpid())


def test_a_step_past_its_timeout_is_warned_at_80_percent_and_killed_at_100(runner: TaskRunner) -> None:
    before = pid_of(runner)
    warnings: list[tuple[float, float]] = []
    started = time.monotonic()
    run = run_step(runner, "iso_sleep: [30]", on_warning=lambda elapsed_s, timeout_s: warnings.append((elapsed_s, timeout_s)))
    elapsed = time.monotonic() - started
    assert run.failure is not None
    assert (run.failure.type, run.failure.kind) == ("StepTimeoutError", ErrorKind.TIMEOUT)
    assert run.failure.message == "step 's' exceeded its timeout of 1 s"
    assert 1.0 <= elapsed < 3.0, f"killed after {elapsed:.2f} s, the timeout is 1 s"
    assert len(warnings) == 1 and warnings[0][1] == 1.0
    assert 0.8 <= warnings[0][0] < 1.0
    assert gone(before), "the timed-out child still runs"
    assert pid_of(runner) != before


def test_the_runner_default_memory_limit_applies_to_tasks_without_one(registry: PluginRegistry) -> None:
    with TaskRunner(registry, ExecutionOptions(memory_mb=100), slots=1) as limited:
        run = run_step(limited, "iso_allocate_unlimited: [300]")
        assert run.failure is not None and run.failure.type == "MemoryLimitError"
        assert run.failure.message.startswith("memory limit 100 MB: ")
        assert "MemoryError" in run.failure.traceback
        small = run_step(limited, "iso_allocate_unlimited: [20]")  # within the limit, in a fresh child
        assert small.failure is None and small.values == {"nbytes": 20 * 1024 * 1024}
    with TaskRunner(registry, ExecutionOptions(), slots=1) as unlimited:
        run = run_step(unlimited, "iso_allocate_unlimited: [300]")
        assert run.failure is None and run.values == {"nbytes": 300 * 1024 * 1024}


def test_a_job_with_every_kind_of_failure_runs_its_other_steps(caplog: pytest.LogCaptureFixture) -> None:
    doc = document("""
graph:
  crash: {iso_segfault: []}
  quit: {iso_exit: [1]}
  slow: {iso_sleep: [30]}
  big: {iso_allocate: [400]}
  exits: {tp_exit: [3]}
  ok: {tp_add: [1, 2]}
  after: {tp_add: [$ok, 1]}
""")
    with PluginRegistry([FIXTURE_PLUGINS]) as registry, caplog.at_level(logging.WARNING, "theodolite.runner"):
        executor = LocalExecutor(document=doc, parameters={}, registry=registry, concurrency=2, fail_fast=False)
        result = executor.run()
    assert result.status == "failed"
    errors = {name: (record.error.type, record.error.message) for name, record in executor.job.records.items() if record.error}
    assert errors == {
        "crash": ("TaskCrashError", "crashed: signal 11 (SIGSEGV)"),
        "quit": ("TaskCrashError", "crashed: exit code 1"),
        "slow": ("StepTimeoutError", "step 'slow' exceeded its timeout of 1 s"),
        "big": ("MemoryLimitError", errors["big"][1]),
        "exits": ("SystemExit", "3"),
    }
    assert errors["big"][1].startswith("memory limit 200 MB: ")
    assert result.steps["after"].outputs == {"sum": 4}
    assert any("has run" in r.getMessage() and "'slow'" in r.getMessage() for r in caplog.records), "no timeout warning logged"


def test_a_crash_is_retryable_and_the_retry_runs_in_a_fresh_child(runner: TaskRunner, tmp_path: Path) -> None:
    before = pid_of(runner)
    crashed = run_step(runner, f"iso_crash_once: [{tmp_path / 'marker'}]")
    assert crashed.failure is not None and crashed.failure.type == "TaskCrashError"
    policy = document(f"graph:\n  s: {{iso_crash_once: [{tmp_path / 'marker'}]}}\n").retry_policy("s")
    assert policy.retries == 1 and policy.backoff_s == 0.05
    delay_s = crashed.failure.retry_delay_s(policy, 1)
    assert delay_s is not None and 0.0375 <= delay_s <= 0.0625
    assert crashed.failure.retry_delay_s(policy, 2) is None, "the last attempt is not retried"
    retried = run_step(runner, f"iso_crash_once: [{tmp_path / 'marker'}]")
    assert retried.failure is None, retried.failure
    assert retried.values is not None and retried.values["pid"] not in (os.getpid(), before)


def test_system_exit_in_a_child_fails_its_step_unretried_and_keeps_the_child(runner: TaskRunner) -> None:
    before = pid_of(runner)
    run = run_step(runner, "tp_exit_retried: [token]")
    assert run.failure is not None and (run.failure.type, run.failure.message) == ("SystemExit", "exit call 1")
    assert not run.failure.retryable
    assert run.failure.retry_delay_s(document("graph:\n  s: {tp_exit_retried: [token]}\n").retry_policy("s"), 1) is None
    assert pid_of(runner) == before


def test_a_plugin_that_fails_to_import_fails_its_step(tmp_path: Path) -> None:
    (tmp_path / "iso_broken.py").write_text("from plugins import task\nraise ImportError('no such thing')\n\n@task\ndef b() -> None: ...\n")
    with PluginRegistry([tmp_path]) as registry, TaskRunner(registry, slots=1) as runner:
        doc = document("tasks:\n  b: {plugin: iso_broken.b}\ngraph:\n  s: {b: []}\n")
        run = runner.run("s", doc.tasks["b"], lambda: ([], {}))
    assert run.failure is not None and run.failure.type == "PluginLoadError"
    assert "no such thing" in run.failure.message and not run.failure.retryable


# thread isolation ----------------------------------------------------------------------------------
def test_thread_isolation_runs_tasks_in_this_process(registry: PluginRegistry) -> None:
    with TaskRunner(registry, ExecutionOptions(), slots=1) as runner:
        in_thread = run_step(runner, "iso_thread_pid: []")  # @task(isolation="thread")
        assert in_thread.values == {"pid": os.getpid()} and in_thread.isolation is Isolation.THREAD
        assert pid_of(runner) != os.getpid()
    with TaskRunner(registry, ExecutionOptions(isolation=Isolation.THREAD), slots=1) as runner:
        assert pid_of(runner) == os.getpid()
        assert runner._pool is None, "no child process is started for thread-isolated tasks"


def test_thread_tasks_may_return_objects_that_process_tasks_cannot_take(runner: TaskRunner) -> None:
    obj = run_step(runner, "iso_object: []")
    assert obj.failure is None and obj.values == {"value": Path("/tmp")}
    refused = run_step(runner, "iso_echo: [1]", arguments=([Path("/tmp")], {}))
    assert refused.failure is not None and refused.failure.type == "CodecError"
    assert refused.failure.message.startswith("args[0]: cannot store a pathlib.PosixPath")
    assert "isolation='thread'" in refused.failure.message


def test_the_embedded_runner_honours_thread_isolation_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEODOLITE_ISOLATION", "thread")
    doc = document("graph:\n  p: {iso_pid: []}\n")
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        result = LocalExecutor(doc, {}, registry).run()
    assert result.steps["p"].outputs == {"pid": os.getpid()}


@pytest.mark.parametrize(("environ", "expected"), [
    ({}, ExecutionOptions(Isolation.PROCESS, None)),
    ({"THEODOLITE_ISOLATION": "Thread", "THEODOLITE_MEMORY_MB": "512"}, ExecutionOptions(Isolation.THREAD, 512)),
])
def test_execution_options_from_the_environment(environ: dict[str, str], expected: ExecutionOptions) -> None:
    assert ExecutionOptions.from_environ(environ) == expected


@pytest.mark.parametrize("environ", [{"THEODOLITE_ISOLATION": "fork"}, {"THEODOLITE_MEMORY_MB": "lots"}, {"THEODOLITE_MEMORY_MB": "0"}])
def test_bad_execution_options_name_their_variable(environ: dict[str, str]) -> None:
    with pytest.raises(ValueError, match=next(iter(environ))):
        ExecutionOptions.from_environ(environ)


# values cross exactly ----------------------------------------------------------------------------
def sample_value() -> dict[Any, Any]:
    rng = np.random.default_rng(0)
    structured = np.zeros(3, dtype=[("x", "<i4"), ("y", ">f8", (2,))])
    structured["x"] = [1, 2, 3]
    return {
        "big": rng.standard_normal((1024, 4096)),  # 32 MiB: a frame of its own
        "small": np.arange(12, dtype=np.int16).reshape(3, 4),
        "strided": np.arange(20.0)[::3],
        "fortran": np.asfortranarray(np.arange(6, dtype=np.uint8).reshape(2, 3)),
        "zero_d": np.array(7.5, dtype=np.float32),
        "bools": np.array([True, False]),
        "complex": np.array([1 + 2j, np.nan + 0j], dtype=np.complex64),
        "structured": structured,
        "dates": np.array(["2024-01-01", "NaT"], dtype="datetime64[ns]"),
        "scalars": [np.float64(0.1), np.int8(-3), np.bool_(True)],
        "nested": {"tuple": (1, (2.5, "x"), [None, b"\x00bytes"]), "set": {1, 2}, "frozen": frozenset({"a"})},
        "numbers": [2**80, -0.0, math.inf, math.nan, 3 + 4j, True, None],
        "bytes": bytearray(b"ba"),
        1: "an int key",
        ("t", 2): "a tuple key",
        "dotted.key": {"$dollar": 1},
    }


def assert_same(got: Any, want: Any, path: str = "value") -> None:
    assert type(got) is type(want), f"{path}: {type(got).__name__} != {type(want).__name__}"
    if isinstance(want, np.ndarray | np.generic):
        assert (got.dtype, got.shape) == (want.dtype, want.shape), path
        assert np.ascontiguousarray(got).tobytes() == np.ascontiguousarray(want).tobytes(), path
    elif isinstance(want, dict):
        assert list(got) == list(want), f"{path}: keys {list(got)} != {list(want)}"
        for key in want:
            assert_same(got[key], want[key], f"{path}[{key!r}]")
    elif isinstance(want, list | tuple):
        assert len(got) == len(want), path
        for index, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, f"{path}[{index}]")
    elif isinstance(want, float | complex):
        assert repr(got) == repr(want), path
    else:
        assert got == want, path


def test_arguments_and_outputs_cross_the_process_boundary_exactly(runner: TaskRunner) -> None:
    value = sample_value()
    run = run_step(runner, "iso_echo: [1]", arguments=([value], {}))
    assert run.failure is None, run.failure
    assert run.values is not None
    assert_same(run.values["value"], value)


def test_outputs_come_back_encoded_for_storage_with_large_arrays_as_blobs(runner: TaskRunner) -> None:
    value = sample_value()
    run = run_step(runner, "iso_echo: [1]", arguments=([value], {}), threshold_bytes=1024 * 1024, decode=False)
    assert run.failure is None and run.values is None and run.encoded is not None
    assert [blob.metadata["nbytes"] for blob in run.encoded.blobs] == [value["big"].nbytes]
    assert_same(wire.decode(run.encoded.tree, run.encoded.blobs)["value"], value)


def test_an_output_the_codec_cannot_carry_fails_with_its_path(runner: TaskRunner) -> None:
    run = run_step(runner, "iso_echo: [1]", arguments=([{"fine": 1, "bad": object()}], {}))
    assert run.failure is not None and run.failure.type == "CodecError"
    assert run.failure.message.startswith("args[0].bad: ")
    with pytest.raises(CodecError):
        wire.encode(object())


def test_children_inherit_the_environment_and_run_jax_on_the_cpu(runner: TaskRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jax")
    monkeypatch.setenv("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("THEODOLITE_ISO_PROBE", "seen")
    runner.close()  # children take the environment when they start
    with TaskRunner(runner.registry, slots=1) as fresh:
        assert run_step(fresh, "iso_env: [THEODOLITE_ISO_PROBE]").values == {"value": "seen"}
        run = run_step(fresh, "iso_jax: [4]")
    assert run.failure is None, run.failure
    assert run.values is not None
    assert run.values["value"]["preallocate"] == "false"
    assert_same(run.values["value"]["doubled"], np.array([0, 2, 4, 6], dtype=np.int32))


# no child left behind ------------------------------------------------------------------------------
def test_no_child_is_left_after_close(registry: PluginRegistry) -> None:
    runner = TaskRunner(registry, slots=2)
    started = threading.Event()

    def hold_a_slot() -> None:
        started.set()
        run_step(runner, "sleep_for: [30]")

    holder = threading.Thread(target=hold_a_slot, daemon=True)
    holder.start()
    started.wait()
    deadline = time.monotonic() + 10
    while not runner.pool.children() and time.monotonic() < deadline:  # the holder's child is busy first
        time.sleep(0.05)
    time.sleep(0.2)
    idle = pid_of(runner)
    deadline = time.monotonic() + 10
    while len(runner.pool.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    children = runner.pool.children()
    assert idle in children and len(children) == 2
    runner.close()  # the busy child is killed, the idle one exits
    holder.join(10)
    assert not holder.is_alive()
    assert all(gone(pid) for pid in children)


def test_the_embedded_runner_ends_its_children_when_run_returns() -> None:
    doc = document("graph:\n" + "".join(f"  p{i}: {{iso_pid: [{i}]}}\n" for i in range(4)))
    with PluginRegistry([FIXTURE_PLUGINS]) as registry:
        result = LocalExecutor(doc, {}, registry, concurrency=2).run()
    pids = {report.outputs["pid"] for report in result.steps.values()}
    assert os.getpid() not in pids and 1 <= len(pids) <= 2
    assert all(gone(pid) for pid in pids)


CHILD_OF_A_KILLED_PARENT = """
import sys, threading, time
from pathlib import Path
sys.path[:0] = [{root!r}]
from shared.document import check_text
from shared.execution.invoke import resolve_arguments
from shared.execution.isolation import TaskRunner
from shared.plugin_catalog import PluginCatalog
from shared.plugin_registry import PluginRegistry

registry = PluginRegistry([{plugins!r}])
runner = TaskRunner(registry, slots=1)
doc = check_text("graph:\\n  p: {{iso_pid: []}}\\n  s: {{sleep_for: [60]}}\\n", "d.yaml",
                 PluginCatalog(search_dirs=[Path({plugins!r})])).document
def run(name):
    step = doc.steps[name]
    return runner.run(name, doc.tasks[step.task], lambda: resolve_arguments(step, {{}}, {{}}))
pid = run("p").values["pid"]
threading.Thread(target=run, args=("s",), daemon=True).start()
time.sleep(0.5)
print(pid, flush=True)
time.sleep(60)
"""


def test_a_child_dies_with_its_killed_parent(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"  # no __main__ guard: children never re-run the parent's script
    script.write_text(textwrap.dedent(CHILD_OF_A_KILLED_PARENT.format(root=str(ROOT), plugins=str(FIXTURE_PLUGINS))))
    with subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True) as parent:
        try:
            assert parent.stdout is not None
            child = int(parent.stdout.readline())
            assert not gone(child, within_s=0.2), "the child should be sleeping in its task"
        finally:
            parent.kill()
            parent.wait(10)
    assert gone(child), "a task's child outlived its killed parent"


def test_children_are_never_forked_from_the_parent(runner: TaskRunner) -> None:
    pid_of(runner)
    assert runner.pool._context is not None
    assert runner.pool._context.get_start_method() in ("forkserver", "spawn")


# the decorator and the catalog ------------------------------------------------------------------
def test_the_decorator_and_the_static_catalog_agree_on_isolation_and_memory(registry: PluginRegistry) -> None:
    from shared.plugin_api import spec_of

    for coordinate, isolation, memory_mb in [("iso_tasks.iso_allocate", None, 200),
                                             ("iso_tasks.iso_thread_pid", Isolation.THREAD, None),
                                             ("iso_tasks.iso_pid", None, None)]:
        static = registry.describe(coordinate)  # read from source, nothing imported
        loaded = spec_of(registry.load(coordinate).function)
        assert loaded is not None
        assert (static.isolation, static.memory_mb) == (loaded.isolation, loaded.memory_mb) == (isolation, memory_mb)


def test_bad_isolation_and_memory_options_are_refused(tmp_path: Path) -> None:
    from shared.plugin_catalog import PluginCatalog

    (tmp_path / "iso_bad.py").write_text(
        "from plugins import task\n\n@task(isolation='fork')\ndef a() -> None: ...\n\n@task(memory_mb=0)\ndef b() -> None: ...\n")
    problems = PluginCatalog(search_dirs=[tmp_path]).scan_problems()
    assert len(problems) == 1 and "bad @task options" in problems[0].message and "iso_bad.a" in problems[0].message
    from plugins import task

    with pytest.raises(ValueError, match="isolation"):
        task(isolation="fork")(lambda: None)
    with pytest.raises(ValueError, match="memory_mb"):
        task(memory_mb=-1)(lambda: None)
