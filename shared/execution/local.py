"""The embedded runner: a whole job in one process, driven by the planner core.

Runner threads drive the steps (never the event loop); task code runs where the execution
layer puts it (:mod:`shared.execution.isolation`): by default in a child process per thread,
started on first need and ended when ``run()`` returns, so a timeout, a crash or a memory limit
costs one step, as on a worker. A thread that finishes a step
asks the core for newly ready steps under one lock, keeps the first for itself and queues
the rest, so a chain runs without a thread hand-off per step while independent steps
still run side by side on the other threads.

Only a task that never returns (give it a ``timeout``) keeps ``run()`` waiting. A task's
failure is any ``BaseException`` it raises (``SystemExit`` and ``KeyboardInterrupt`` too: in
a runner thread they come from the task's own code, not from Ctrl-C); only ``Exception``
subclasses are retried (:func:`~shared.execution.invoke.retryable`). An exception raised by
the ``on_change`` callback is counted on the job and logged once, and the job carries on.
A failure of the runner itself (a bug) fails the step it was on, aborts the job (steps not
started are cancelled or skipped) and the result says "failed". ``run()`` also stops
waiting if a runner thread dies, and once the job has ended waits (up to ``JOIN_S``) for
its threads to exit, so none outlives the call.
"""

from __future__ import annotations

import asyncio
import logging
import os
import queue
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from shared.document.model import JobDocument
from shared.errors import StepCancelledError
from shared.execution.cancellation import Cancellation
from shared.execution.failure import Failure
from shared.execution.invoke import error_message, format_traceback, resolve_arguments
from shared.execution.isolation import Reporting, TaskRunner
from shared.execution.options import ExecutionOptions
from shared.execution.result import JobResult, StepError, StepReport
from shared.execution.retry_timers import RetryTimers
from shared.planner.core import PlannerCore
from shared.plugin_registry import PluginRegistry
from shared.states import FINISHED_STEP_STATES, JobState, StepState
from shared.task_context import ContextInfo, Metric, derive_seed

DEFAULT_CONCURRENCY = max(4, os.cpu_count() or 1)
LIVENESS_CHECK_S = 0.5
"""While it waits, how often ``run()`` checks that its runner threads are still alive."""
JOIN_S = 5.0
"""How long ``run()`` waits for its runner threads to exit once the job has ended."""
DEFAULT_GRACE_S = 10.0
"""How long a cancelled job's running steps may take to stop by themselves."""
LOCAL_WORKER = "local"
"""The worker id a task's context says under ``theodolite run``."""
RUNNER_STEP = "(runner)"
"""The ``step`` of an error of the runner itself that no step was running into."""

log = logging.getLogger("theodolite.runner")


@dataclass
class StepRecord:
    state: StepState = StepState.PENDING
    attempts: int = 0
    """Attempts started so far (a retried step: more than one)."""
    failures: list[StepError] = field(default_factory=list)
    """The errors of earlier attempts that were retried."""
    retry_at: float | None = None
    """While the step waits for its next attempt: when it is due (``time.time()``)."""
    metrics: list[Metric] = field(default_factory=list)
    """What the task logged with ``context.log_metric``, every attempt's."""
    logs: dict[int, str] = field(default_factory=dict)
    """What each attempt printed and logged (capped), by attempt number."""
    artifacts: dict[str, Any] = field(default_factory=dict)
    """What the task logged with ``context.log_artifact`` (the last attempt's)."""
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
    job_id: str = ""
    seed: int = 0
    """The job's seed: each step's task context gets one derived from it and the step name."""
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, StepRecord] = field(default_factory=dict)
    first_error: StepError | None = None
    done: int = 0
    runner_error: StepError | None = None
    """A failure of the runner itself (a bug, never a task's): the job was aborted."""
    callback_error: StepError | None = None
    """The first exception the ``on_change`` callback raised (the job carried on)."""
    callback_errors: int = 0
    """How many times the ``on_change`` callback raised."""


class LocalExecutor:
    """Runs one job on ``concurrency`` threads; ``run()`` blocks, ``run_async()`` awaits.

    ``options`` are the defaults for tasks that do not choose where they run (default: read from
    ``THEODOLITE_ISOLATION`` / ``THEODOLITE_MEMORY_MB``, process isolation when unset). A
    ``runner`` given by the caller is used and left open (to share children between runs);
    otherwise one is made for ``run()`` and closed, with its children, before it returns.

    ``on_change(step, state)`` is called on runner threads (and on the caller's, for the
    first queued steps) after each state change; it must be quick and must not block. What
    it raises is recorded on the job (``callback_error``, ``callback_errors``) and logged
    once: it never fails a step or stops the job.
    """

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
        options: ExecutionOptions | None = None,
        runner: TaskRunner | None = None,
        job_id: str | None = None,
        seed: int | None = None,
    ) -> None:
        self.concurrency = max(1, concurrency)
        self.registry = registry
        self.on_change = on_change
        self.options = options or (runner.options if runner is not None else ExecutionOptions.from_environ())
        self._given_runner = runner
        self._runner: TaskRunner | None = runner
        core = PlannerCore({name: step.dependencies for name, step in document.steps.items()}, fail_fast=fail_fast)
        self.job = LocalJob(document, parameters, core, job_id or f"local-{uuid.uuid4().hex[:12]}",
                            secrets.randbits(63) if seed is None else int(seed))
        self.job.outputs.update({name: dict(values) for name, values in (artifact_values or {}).items()})
        self.job.records = {name: StepRecord() for name in document.steps}
        self._lock = threading.Lock()
        self._callback_lock = threading.Lock()
        self._queue: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        self._retries = RetryTimers(self._queue.put)
        self._cancels: dict[str, Cancellation] = {}
        """The running steps' stop requests (see :meth:`cancel`)."""
        self._cancel_grace_s: float | None = None
        self._finished = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._future: asyncio.Future[None] | None = None

    # entry points -----------------------------------------------------------------------
    def run(self) -> JobResult:
        if self._given_runner is not None:
            return self._run()
        self._runner = TaskRunner(self.registry, self.options, slots=self.concurrency)
        try:
            return self._run()
        finally:
            self._runner.close()  # no child outlives the call

    def _run(self) -> JobResult:
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
        while not self._finished.wait(LIVENESS_CHECK_S):
            if not all(thread.is_alive() for thread in threads):  # a runner bug: never wait forever
                self._abort(None, RuntimeError("a runner thread stopped before the job finished"), running=True)
                break
        self._retries.close()
        for _ in threads:
            self._queue.put(None)
        deadline = time.monotonic() + JOIN_S
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in threads):
            log.warning("runner threads still busy %.0f s after the job ended (a blocking on_change callback?)", JOIN_S)
        if self.job.callback_errors > 1:
            log.warning("the on_change callback raised %d times in all (the first is logged above)", self.job.callback_errors)
        return self.result()

    async def run_async(self) -> JobResult:
        """Await the job without blocking the event loop (threads do the work)."""
        self._loop = asyncio.get_running_loop()
        return await asyncio.to_thread(self.run)

    # worker threads ---------------------------------------------------------------------
    def _work(self) -> None:
        name: str | None = None
        while True:  # until the sentinel (None): an error here is the runner's, never a task's
            try:
                name = self._queue.get()
                if name is None:
                    return
                while name is not None:
                    name = self._run_step(name)
            except BaseException as error:  # noqa: BLE001 - a runner bug must not kill the thread nor hang run()
                self._abort(name, error)

    def _run_step(self, name: str) -> str | None:
        job = self.job
        with self._lock:
            record = job.records[name]
            state = job.core.begin(name)
            if state is not StepState.RUNNING:  # the job is stopping: a queued step ends unstarted
                stopped = record.state is StepState.QUEUED and state in FINISHED_STEP_STATES
                if stopped:
                    record.state = state
                    job.done += 1
                finished = job.core.finished
        if state is not StepState.RUNNING:
            if stopped:
                self._notify(name, state)
            if finished:
                self._finished.set()
            return None
        with self._lock:
            record.state = StepState.RUNNING
            record.retry_at = None
            if record.started_s is None:
                record.started_s = time.perf_counter()
        if self.on_change is not None:
            self._notify(name, StepState.RUNNING)
        step = job.document.steps[name]
        binding = job.document.tasks[step.task]
        runner = self._runner
        assert runner is not None
        cancel = Cancellation()
        with self._lock:
            self._cancels[name] = cancel
            grace_s = self._cancel_grace_s
        if grace_s is not None:  # cancelled while this step was being started
            cancel.request(grace_s)
        info = ContextInfo(job_id=job.job_id, step=name, attempt=record.attempts + 1, device=binding.device,
                           worker_id=LOCAL_WORKER, seed=derive_seed(job.seed, name))
        try:
            run = runner.run(name, binding, lambda: resolve_arguments(step, job.parameters, job.outputs),
                             on_warning=lambda elapsed_s, timeout_s: _warn_timeout(name, elapsed_s, timeout_s),
                             reporting=Reporting(context=info, on_metric=record.metrics.append, cancel=cancel))
        finally:
            with self._lock:
                self._cancels.pop(name, None)
        failure = run.failure
        record.attempts += 1
        record.logs[record.attempts] = run.logs
        record.artifacts = dict(run.artifacts or {})
        if failure is not None and failure.type == StepCancelledError.__name__:
            self._cancelled_while_running(name, record, failure)
            return None
        if failure is not None:
            delay_s = failure.retry_delay_s(job.document.retry_policy(name), record.attempts)
            if delay_s is not None:
                self._retry_later(name, record, failure, delay_s)
                return None
        with self._lock:
            record.finished_s = time.perf_counter()
            if failure is None:
                assert run.values is not None
                job.outputs[name] = run.values
                record.state = StepState.SUCCEEDED
                ready = job.core.succeeded(name)
                skipped: list[str] = []
            else:
                record.state = StepState.FAILED
                record.error = StepError(step=name, type=failure.type, message=failure.message)
                record.traceback = failure.traceback
                if job.first_error is None:
                    job.first_error = record.error
                ready = []
                skipped = job.core.failed(name)
                for skipped_name in skipped:
                    job.records[skipped_name].state = StepState.SKIPPED
                skipped += self._stop_retries()
            job.done += 1 + len(skipped)
            finished = job.core.finished
            for ready_name in ready:
                job.records[ready_name].state = StepState.QUEUED
        if self.on_change is not None:
            self._notify(name, record.state)
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

    # cancelling ---------------------------------------------------------------------------
    def cancel(self, grace_s: float = DEFAULT_GRACE_S) -> None:
        """Cancel the job: nothing new starts; running steps see ``context.cancelled()`` at once
        and are stopped ``grace_s`` seconds later (a task that returns before keeps its
        result); steps not started end ``cancelled``. Called again, it may shorten the grace.
        Thread-safe; returns at once."""
        with self._lock:
            self._cancel_grace_s = grace_s if self._cancel_grace_s is None else min(grace_s, self._cancel_grace_s)
            job = self.job
            changes = job.core.cancel()
            changes += self._stop_retries()
            for name in changes:
                job.records[name].state = StepState.CANCELLED
            job.done += len(changes)
            running = list(self._cancels.values())
            finished = job.core.finished
        for cancel in running:
            cancel.request(grace_s)
        self._announce(changes, StepState.CANCELLED)
        if finished:
            self._finished.set()

    def _cancelled_while_running(self, name: str, record: StepRecord, failure: Failure) -> None:
        """A running step outlived its job's cancel grace and was stopped: it ends cancelled."""
        with self._lock:
            record.finished_s = time.perf_counter()
            record.state = StepState.CANCELLED
            record.traceback = failure.traceback
            self.job.core.stopped(name, StepState.CANCELLED)
            self.job.done += 1
            finished = self.job.core.finished
        self._notify(name, StepState.CANCELLED)
        if finished:
            self._finished.set()

    def _retry_later(self, name: str, record: StepRecord, failure: Failure, delay_s: float) -> None:
        """Attempt ``record.attempts`` failed and the task retries: the step waits ``delay_s``
        on the timer thread (no runner thread held) and is queued again then."""
        with self._lock:
            record.state = StepState.QUEUED
            record.failures.append(StepError(step=name, type=failure.type, message=failure.message))
            record.retry_at = time.time() + delay_s
            self.job.core.requeue(name)
        policy = self.job.document.retry_policy(name)
        log.warning("step %r attempt %d of %d failed (%s: %s); retrying in %.1f s", name, record.attempts,
                    policy.retries + 1, failure.type, failure.message.splitlines()[0] if failure.message else "", delay_s)
        self._notify(name, StepState.QUEUED)
        self._retries.schedule(name, delay_s)

    def _stop_retries(self) -> list[str]:
        """Under the lock, once the job is stopping: steps waiting for a retry end now with the
        stop state (skipped after a failure, cancelled) instead of when their delay is up."""
        stop = self.job.core.stop_state
        if stop is None:
            return []
        stopped = [name for name in self._retries.cancel_all() if self.job.core.stopped(name, stop)]
        for name in stopped:
            self.job.records[name].state, self.job.records[name].retry_at = stop, None
        return stopped

    def _announce(self, names: list[str], state: StepState) -> None:
        if self.on_change is not None:
            for name in names:
                self._notify(name, state)

    def _notify(self, name: str, state: StepState) -> None:
        """Call ``on_change``; what it raises (any ``BaseException``: it runs on a runner
        thread) is recorded on the job and logged the first time, never propagated."""
        callback = self.on_change
        if callback is None:
            return
        try:
            callback(name, state)
        except BaseException as error:  # a broken display must not kill a runner thread
            with self._callback_lock:
                job = self.job
                job.callback_errors += 1
                first = job.callback_error is None
                if first:
                    job.callback_error = StepError(step=name, type=type(error).__name__, message=error_message(error))
            if first:
                log.error("the on_change callback raised on step %r (%s); the job carries on, later errors are only counted",
                          name, state.value, exc_info=error)

    def _abort(self, name: str | None, error: BaseException, *, running: bool = False) -> None:
        """A failure of the runner itself (a bug, never a task's): fail step ``name`` (if it
        had not finished) with ``error`` and, with ``running``, every running step (their
        threads are gone); cancel the steps not started. Never raises: if even this goes
        wrong, ``run()`` is released anyway and reports the job failed."""
        try:
            log.error("runner error on step %r; the job is aborted", name, exc_info=error)
            job, core = self.job, self.job.core
            with self._lock:
                step_error = StepError(step=name or RUNNER_STEP, type=type(error).__name__, message=error_message(error))
                if job.runner_error is None:
                    job.runner_error = step_error
                if job.first_error is None:
                    job.first_error = step_error
                failed = [name] if name is not None and core.state(name) not in FINISHED_STEP_STATES else []
                if running:
                    failed += [step for step, state in core.states().items() if state is StepState.RUNNING and step != name]
                changes: list[tuple[str, StepState]] = []
                now = time.perf_counter()
                for step in failed:
                    record = job.records[step]
                    record.state, record.finished_s = StepState.FAILED, now
                    record.error, record.traceback = step_error, format_traceback(error)
                    job.outputs.pop(step, None)
                    changes.append((step, StepState.FAILED))
                    changes += [(skipped, StepState.SKIPPED) for skipped in core.failed(step)]
                changes += [(cancelled, StepState.CANCELLED) for cancelled in core.cancel()]
                self._retries.cancel_all()  # their steps are queued: cancelled just below
                queued = [step for step, state in core.states().items() if state is StepState.QUEUED]
                changes += [(step, StepState.CANCELLED) for step in queued if core.stopped(step, StepState.CANCELLED)]
                for step, state in changes:
                    job.records[step].state = state
                job.done += len(changes)
                release = core.finished or not any(state is StepState.RUNNING for state in core.states().values())
            for step, state in changes:
                self._notify(step, state)
        except BaseException:  # the last resort: release run()
            log.exception("the runner could not record its own error")
            release = True
        if release:
            self._finished.set()

    # results ----------------------------------------------------------------------------
    def result(self) -> JobResult:
        job = self.job
        status = JobState.FAILED if job.runner_error is not None else job.core.job_state
        steps = {name: self._report(name) for name in job.document.steps}
        return JobResult(status=status, steps=steps, error=job.first_error, seed=job.seed,
                         metrics={name: list(record.metrics) for name, record in job.records.items() if record.metrics})

    def _report(self, name: str) -> StepReport:
        record = self.job.records[name]
        duration = None
        if record.started_s is not None and record.finished_s is not None:
            duration = record.finished_s - record.started_s
        return StepReport(
            status=self.job.core.state(name).value, outputs=self.job.outputs.get(name, {}),
            task=self.job.document.steps[name].task, duration_s=duration, traceback=record.traceback,
            attempts=record.attempts, logs=dict(record.logs), logged_artifacts=dict(record.artifacts),
        )


def _warn_timeout(step: str, elapsed_s: float, timeout_s: float) -> None:
    log.warning("step %r has run %.1f s of its %g s timeout; it is stopped at %g s", step, elapsed_s, timeout_s, timeout_s)
