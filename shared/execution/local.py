"""The embedded runner: a whole job in one process, driven by the planner core.

Worker threads run plugin code (never the event loop). A thread that finishes a step
asks the core for newly ready steps under one lock, keeps the first for itself and queues
the rest, so a chain runs without a thread hand-off per step while independent steps
still run side by side on the other threads.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.document.model import JobDocument
from shared.execution.invoke import invoke
from shared.execution.result import JobResult, StepError, StepReport
from shared.execution.timeouts import call_with_timeout
from shared.planner.core import PlannerCore, StepState
from shared.plugin_registry import LoadedTask, PluginRegistry

DEFAULT_CONCURRENCY = max(4, os.cpu_count() or 1)


@dataclass
class StepRecord:
    state: StepState = StepState.PENDING
    attempts: int = 0
    started_s: float | None = None
    finished_s: float | None = None
    error: StepError | None = None
    traceback: str | None = None


@dataclass
class LocalJob:
    """The mutable state of one embedded run; read by progress displays."""

    document: JobDocument
    parameters: Mapping[str, Any]
    core: PlannerCore
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, StepRecord] = field(default_factory=dict)
    first_error: StepError | None = None
    done: int = 0


class LocalExecutor:
    """Runs one job on ``concurrency`` threads; ``run()`` blocks, ``run_async()`` awaits."""

    def __init__(
        self,
        document: JobDocument,
        parameters: Mapping[str, Any],
        registry: PluginRegistry,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        fail_fast: bool = True,
        artifact_values: Mapping[str, Mapping[str, Any]] | None = None,
        on_change: Callable[[str, StepState], None] | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.registry = registry
        self.on_change = on_change
        core = PlannerCore({name: step.dependencies for name, step in document.steps.items()}, fail_fast=fail_fast)
        self.job = LocalJob(document, parameters, core)
        self.job.outputs.update({name: dict(values) for name, values in (artifact_values or {}).items()})
        self.job.records = {name: StepRecord() for name in document.steps}
        self._tasks: dict[str, LoadedTask] = {}
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._finished = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None

    # entry points -----------------------------------------------------------------------
    def run(self) -> JobResult:
        threads = [threading.Thread(target=self._work, name=f"theodolite-step-{i}", daemon=True) for i in range(self.concurrency)]
        for thread in threads:
            thread.start()
        with self._lock:
            ready = self.job.core.start()
            self._announce(ready, StepState.QUEUED)
            if self.job.core.finished:
                self._finished.set()
        for name in ready:
            self._queue.put(name)
        self._finished.wait()
        for _ in threads:
            self._queue.put(None)
        return self.result()

    async def run_async(self) -> JobResult:
        """Await the job without blocking the event loop (threads do the work)."""
        self._loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self.run)

    # worker threads ---------------------------------------------------------------------
    def _task(self, name: str) -> LoadedTask:
        """Import a task's plugin the first time a step needs it (a failure fails that step)."""
        loaded = self._tasks.get(name)
        if loaded is None:
            loaded = self.registry.load(self.job.document.tasks[name].plugin)
            self._tasks[name] = loaded
        return loaded

    def _work(self) -> None:
        while True:
            name = self._queue.get()
            if name is None:
                return
            while name is not None:
                name = self._run_step(name)

    def _run_step(self, name: str) -> str | None:
        job = self.job
        with self._lock:
            if not job.core.running(name):
                return None
            record = job.records[name]
            record.state = StepState.RUNNING
            record.started_s = time.perf_counter()
        if self.on_change is not None:
            self.on_change(name, StepState.RUNNING)
        step = job.document.steps[name]
        binding = job.document.tasks[step.task]
        outputs: dict[str, Any] | None = None
        failure: BaseException | None = None
        try:
            loaded = self._task(step.task)
            attempts_allowed = binding.retries + 1
        except Exception as error:  # noqa: BLE001 - reported as this step's failure
            failure, attempts_allowed = error, 0
        for attempt in range(1, attempts_allowed + 1):
            record.attempts = attempt
            try:
                if binding.timeout_s is None:
                    outputs = invoke(step, loaded.function, binding.outputs, job.parameters, job.outputs)
                else:
                    outputs = call_with_timeout(name, binding.timeout_s, lambda: invoke(step, loaded.function, binding.outputs, job.parameters, job.outputs))
                failure = None
                break
            except Exception as error:  # noqa: BLE001 - a task's failure is the step's result
                failure = error
        with self._lock:
            record.finished_s = time.perf_counter()
            if failure is None:
                assert outputs is not None
                job.outputs[name] = outputs
                record.state = StepState.SUCCEEDED
                ready = job.core.succeeded(name)
                skipped: list[str] = []
            else:
                record.state = StepState.FAILED
                record.error = StepError(step=name, type=type(failure).__name__, message=str(failure))
                record.traceback = "".join(traceback.format_exception(failure))
                if job.first_error is None:
                    job.first_error = record.error
                ready = []
                skipped = job.core.failed(name)
                for skipped_name in skipped:
                    job.records[skipped_name].state = StepState.SKIPPED
            job.done += 1 + len(skipped)
            finished = job.core.finished
            for ready_name in ready:
                job.records[ready_name].state = StepState.QUEUED
        if self.on_change is not None:
            self.on_change(name, record.state)
            self._announce(skipped, StepState.SKIPPED)
            self._announce(ready, StepState.QUEUED)
        if finished:
            self._finished.set()
            return None
        if not ready:
            return None
        for extra in ready[1:]:
            self._queue.put(extra)
        return ready[0]

    def _announce(self, names: list[str], state: StepState) -> None:
        if self.on_change is not None:
            for name in names:
                self.on_change(name, state)

    # results ----------------------------------------------------------------------------
    def result(self) -> JobResult:
        job = self.job
        status = job.core.job_state.value
        steps = {name: self._report(name) for name in job.document.steps}
        return JobResult(status=status, steps=steps, error=job.first_error)

    def _report(self, name: str) -> StepReport:
        record = self.job.records[name]
        duration = None
        if record.started_s is not None and record.finished_s is not None:
            duration = record.finished_s - record.started_s
        return StepReport(
            status=self.job.core.state(name).value, outputs=self.job.outputs.get(name, {}),
            task=self.job.document.steps[name].task, duration_s=duration, traceback=record.traceback,
        )
