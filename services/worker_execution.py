"""Running one step on a worker: read what it needs (cached), run its task where it can be stopped.

Task code runs through the execution layer (:mod:`shared.execution.isolation`), as in
``theodolite run``: by default in one long-lived child process per slot (``--isolation`` /
``THEODOLITE_ISOLATION``, ``THEODOLITE_MEMORY_MB``), driven by a thread pool of ``concurrency``
threads so the event loop never waits on a task. A child encodes the outputs for MongoDB itself
(the codec, with the GridFS threshold): the worker stores them as they come.

The store's failures while reading (the job, upstream outputs, artifact inputs) propagate to
the caller, which hands the delivery back (:mod:`services.worker_faults`); everything else
becomes the step's :class:`~services.worker_results.Outcome`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.worker_faults import is_infrastructure
from services.worker_results import TRACEBACK_CHARS, Outcome, Reports, error_dict
from shared.errors import StepCancelledError
from shared.execution import wire
from shared.execution.cancellation import Cancellation
from shared.execution.failure import Failure
from shared.execution.invoke import referenced_steps, resolve_arguments
from shared.execution.isolation import Reporting, TaskRunner
from shared.execution.options import ExecutionOptions
from shared.messages import StepDispatch
from shared.observability.reasons import RejectReason
from shared.plugin_registry import PluginRegistry
from shared.settings import Settings
from shared.states import ErrorKind, StepState
from shared.store import JobRecord, Store
from shared.task_context import ContextInfo, Metric, derive_seed
from shared.transport.settle import Reject

JOB_CACHE_SIZE = 64
OUTPUT_CACHE_SIZE = 256
CACHEABLE_OUTPUT_BYTES = 1024 * 1024
log = logging.getLogger("theodolite.worker")
TimeoutWarningHook = Callable[[StepDispatch, float, float], None]
"""``hook(dispatch, elapsed_s, timeout_s)``, called on the event loop when a step has run 80 %
of its timeout (the worker publishes it as a ``step.timeout_warning`` event)."""
MetricHook = Callable[[StepDispatch, Metric], None]
"""``hook(dispatch, metric)``, on the event loop, as a running task logs a metric."""
LogsHook = Callable[[StepDispatch, str], None]
"""``hook(dispatch, text)``, on the event loop, with what a running task printed since the last call."""


class StepExecutor:
    """Owns the task runner (child processes), the threads that drive it and the per-job
    caches: job records, artifact inputs, and the small outputs of steps this worker ran (its
    downstream steps need no read for them)."""

    def __init__(self, settings: Settings, store: Store, registry: PluginRegistry, *, concurrency: int, device: str,
                 on_timeout_warning: TimeoutWarningHook | None = None, worker_id: str = "",
                 on_metric: MetricHook | None = None, on_logs: LogsHook | None = None) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self.on_timeout_warning = on_timeout_warning
        self.worker_id = worker_id
        self.on_metric = on_metric
        self.on_logs = on_logs
        self._cancels: dict[tuple[str, str, int], Cancellation] = {}
        """The running steps' stop requests, by (job, step, attempt) (see :meth:`cancel_job`)."""
        self.runner = TaskRunner(registry, ExecutionOptions(settings.isolation, settings.memory_mb), slots=concurrency)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"theodolite-{device}")
        self._jobs: OrderedDict[str, asyncio.Future[JobRecord | None]] = OrderedDict()
        self._outputs: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._artifacts: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()

    def shutdown(self) -> None:
        """Abandon queued tasks and end the task processes (a running task's is killed; a
        thread-isolated task still running finishes in the background). Idempotent."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.runner.close()

    async def job_or_rejection(self, dispatch: StepDispatch) -> JobRecord | Outcome:
        """The step's job. A message no job here can serve (its job is gone or unreadable, or
        has no such step) is refused: :class:`Reject` dead-letters it, and the planner records
        the dead letter (a failed step of kind ``rejected`` if its job runs, else an event);
        nothing is written for a job that does not exist. The store's errors propagate."""
        try:
            job = await self.job(dispatch.job_id)
        except Exception as error:
            if is_infrastructure(error):
                raise
            raise Reject(f"job {dispatch.job_id} cannot be read: {type(error).__name__}: {error}", RejectReason.UNKNOWN_JOB) from None
        if job is None:
            raise Reject(f"job {dispatch.job_id} is not in the store", RejectReason.UNKNOWN_JOB)
        if dispatch.step not in job.document.steps:
            raise Reject(f"job {dispatch.job_id} has no step {dispatch.step!r}", RejectReason.UNKNOWN_JOB)
        return job

    async def job(self, job_id: str) -> JobRecord | None:
        """The job's record, read once per job (concurrent readers share the read; a failed
        read is forgotten, so the next delivery reads again)."""
        future = self._jobs.get(job_id)
        if future is None:
            future = asyncio.ensure_future(self.store.load_job(job_id))
            self._jobs[job_id] = future
            while len(self._jobs) > JOB_CACHE_SIZE:
                self._jobs.popitem(last=False)
        else:
            self._jobs.move_to_end(job_id)
        try:
            return await asyncio.shield(future)
        except Exception:
            self._jobs.pop(job_id, None)
            raise

    async def execute(self, dispatch: StepDispatch, job: JobRecord | Outcome) -> Outcome:
        """Read the step's inputs and run its task (``job`` an Outcome: that failure, timed).
        The store's errors propagate; any other failure to read the inputs fails the step
        (kind ``infrastructure``: corrupt stored data, which retrying would not mend)."""
        started = time.perf_counter()
        if isinstance(job, Outcome):
            outcome = job
        else:
            try:
                upstream = await self._inputs(dispatch, job)
            except Exception as error:
                if is_infrastructure(error):
                    raise
                outcome = Outcome(error=error_dict(error, ErrorKind.INFRASTRUCTURE))
            else:
                loop = asyncio.get_running_loop()
                outcome = await loop.run_in_executor(self._pool, self._run_task, job, dispatch, upstream, loop)
        outcome.duration_s = time.perf_counter() - started
        return outcome

    def remember_outputs(self, dispatch: StepDispatch, outcome: Outcome) -> None:
        """Keep a recorded outcome's small outputs for this worker's downstream steps."""
        if outcome.values is None:
            return
        self._outputs[(dispatch.job_id, dispatch.step)] = outcome.values
        while len(self._outputs) > OUTPUT_CACHE_SIZE:
            self._outputs.popitem(last=False)

    async def _inputs(self, dispatch: StepDispatch, job: JobRecord) -> dict[str, dict[str, Any]]:
        """The outputs of the upstream steps (and artifact inputs) the step's arguments use."""
        step = job.document.steps[dispatch.step]
        needed = referenced_steps(step, step.dependencies)
        upstream = {name: self._outputs[(dispatch.job_id, name)] for name in needed
                    if (dispatch.job_id, name) in self._outputs}
        missing = [name for name in needed if name not in upstream]
        if missing:
            upstream.update(await self.store.upstream_outputs(dispatch.job_id, missing))
        if job.document.artifact_inputs and referenced_steps(step, list(job.document.artifact_inputs)):
            upstream.update(await self._artifact_inputs(dispatch.job_id))
        return upstream

    async def _artifact_inputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        """A job's artifact inputs, read once per job (they never change)."""
        cached = self._artifacts.get(job_id)
        if cached is None:
            cached = await self.store.load_artifact_inputs(job_id)
            self._artifacts[job_id] = cached
            while len(self._artifacts) > JOB_CACHE_SIZE:
                self._artifacts.popitem(last=False)
        return cached

    def forget_job(self, job_id: str) -> None:
        """Drop the job's cached record (a control word came: a restored or resumed job may
        have new flags and parameters); the next step of it reads the job again."""
        self._jobs.pop(job_id, None)
        self._artifacts.pop(job_id, None)

    def cancel_job(self, job_id: str, grace_s: float) -> int:
        """The job is being cancelled: its running steps' tasks see ``context.cancelled()`` at
        once and are stopped after ``grace_s``. How many steps were told."""
        told = [cancel for (job, _, _), cancel in list(self._cancels.items()) if job == job_id]
        for cancel in told:
            cancel.request(grace_s)
        return len(told)

    def _run_task(self, job: JobRecord, dispatch: StepDispatch, upstream: dict[str, dict[str, Any]],
                  loop: asyncio.AbstractEventLoop) -> Outcome:
        """In a pool thread: run the task (timeout, isolation), keep the encoded outputs; a
        failure says whether the task retries it, and after how long (``retry_delay_s``)."""
        try:
            step = job.document.steps[dispatch.step]
            binding = job.document.tasks[step.task]
        except BaseException as error:  # noqa: BLE001 - a job without this task fails the step
            return Outcome(error=error_dict(error, ErrorKind.TASK))

        def warn(elapsed_s: float, timeout_s: float) -> None:
            loop.call_soon_threadsafe(self._timeout_warning, dispatch, elapsed_s, timeout_s)

        key = (dispatch.job_id, dispatch.step, dispatch.attempt)
        cancel = self._cancels[key] = Cancellation()
        if job.stop is StepState.CANCELLED:  # cancelled before this step started: stop at once if it runs
            cancel.request(0.0)
        info = ContextInfo(job_id=dispatch.job_id, step=dispatch.step, attempt=dispatch.attempt, device=dispatch.device,
                           worker_id=self.worker_id, seed=derive_seed(job.seed, dispatch.step))
        on_metric, on_logs = self.on_metric, self.on_logs

        def metric(value: Metric) -> None:
            if on_metric is not None:
                loop.call_soon_threadsafe(on_metric, dispatch, value)

        def logs(text: str) -> None:
            if on_logs is not None:
                loop.call_soon_threadsafe(on_logs, dispatch, text)

        reporting = Reporting(context=info, cancel=cancel, on_metric=metric, on_logs=logs)
        try:
            run = self.runner.run(dispatch.step, binding, lambda: resolve_arguments(step, job.parameters, upstream),
                                  threshold_bytes=self.settings.gridfs_threshold_bytes, decode=False, on_warning=warn,
                                  reporting=reporting)
        finally:
            self._cancels.pop(key, None)
        reports = Reports(logs=run.logs, logs_dropped=run.logs_dropped, metrics=[m.model_dump() for m in run.metrics],
                          artifacts=run.encoded_artifacts)
        if run.failure is not None:
            if run.failure.type == StepCancelledError.__name__:
                return Outcome(error=failure_dict(run.failure), cancelled=True, reports=reports)
            delay_s = run.failure.retry_delay_s(job.document.retry_policy(dispatch.step), dispatch.attempt)
            return Outcome(error=failure_dict(run.failure), retry_delay_s=delay_s, reports=reports)
        encoded = run.encoded
        assert encoded is not None
        small = encoded.inline_bytes + sum(len(blob.data) for blob in encoded.blobs) <= CACHEABLE_OUTPUT_BYTES
        values = None
        if small:
            values = run.values if run.values is not None else wire.decode(encoded.tree, encoded.blobs)
        return Outcome(outputs=encoded, values=values, reports=reports)

    def _timeout_warning(self, dispatch: StepDispatch, elapsed_s: float, timeout_s: float) -> None:
        """On the event loop: a step has run 80 % of its timeout."""
        log.warning("step %s of job %s has run %.1f s of its %g s timeout; it is stopped at %g s",
                    dispatch.step, dispatch.job_id, elapsed_s, timeout_s, timeout_s)
        if self.on_timeout_warning is not None:
            try:
                self.on_timeout_warning(dispatch, elapsed_s, timeout_s)
            except Exception:
                log.exception("the timeout-warning hook raised")


def failure_dict(failure: Failure) -> dict[str, Any]:
    """The stored form of a step's failure (see :func:`services.worker_results.error_dict`)."""
    return {"type": failure.type, "message": failure.message, "traceback": failure.traceback[-TRACEBACK_CHARS:],
            "kind": failure.kind.value}
