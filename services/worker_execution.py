"""Running one step on a worker: read what it needs (cached), call its task in a thread pool.

The store's failures while reading (the job, upstream outputs, artifact inputs) propagate to
the caller, which hands the delivery back (:mod:`services.worker_faults`); everything else
becomes the step's :class:`~services.worker_results.Outcome`.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from services.worker_faults import is_infrastructure
from services.worker_results import Outcome, error_dict
from shared import codec
from shared.execution.invoke import invoke, referenced_steps, retryable
from shared.execution.timeouts import call_with_timeout
from shared.messages import StepDispatch
from shared.plugin_registry import PluginRegistry
from shared.settings import Settings
from shared.states import ErrorKind
from shared.store import JobRecord, Store

JOB_CACHE_SIZE = 64
OUTPUT_CACHE_SIZE = 256
CACHEABLE_OUTPUT_BYTES = 1024 * 1024


class StepExecutor:
    """Owns the thread pool and the per-job caches: job records, artifact inputs, and the
    small outputs of steps this worker ran (its downstream steps need no read for them)."""

    def __init__(self, settings: Settings, store: Store, registry: PluginRegistry, *, concurrency: int, device: str) -> None:
        self.settings = settings
        self.store = store
        self.registry = registry
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=f"theodolite-{device}")
        self._jobs: OrderedDict[str, asyncio.Future[JobRecord | None]] = OrderedDict()
        self._outputs: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._artifacts: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()

    def shutdown(self) -> None:
        """Abandon queued tasks; running ones finish in the background (threads cannot be stopped)."""
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def job_or_rejection(self, dispatch: StepDispatch) -> JobRecord | Outcome:
        """The step's job, or the failure (kind ``rejected``) of a step no job here can serve:
        its job is gone or unreadable, or has no such step. The store's errors propagate."""
        try:
            job = await self.job(dispatch.job_id)
        except Exception as error:
            if is_infrastructure(error):
                raise
            return Outcome(error=error_dict(error, ErrorKind.REJECTED))
        if job is None:
            return Outcome(error=error_dict(LookupError(f"job {dispatch.job_id} is not in the store"), ErrorKind.REJECTED))
        if dispatch.step not in job.document.steps:
            return Outcome(error=error_dict(LookupError(f"job {dispatch.job_id} has no step {dispatch.step!r}"), ErrorKind.REJECTED))
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
                outcome = await loop.run_in_executor(self._pool, self._run_task, job, dispatch.step, upstream)
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

    def _run_task(self, job: JobRecord, name: str, upstream: dict[str, dict[str, Any]]) -> Outcome:
        """In a pool thread: load the plugin, call it (retries, timeout), encode the outputs."""
        try:
            step = job.document.steps[name]
            binding = job.document.tasks[step.task]
            function = self.registry.load(binding.plugin).function
        except BaseException as error:  # noqa: BLE001 - a plugin that exits on import fails its step
            return Outcome(error=error_dict(error, ErrorKind.TASK))
        failure: BaseException = RuntimeError("the step was never attempted")
        for _attempt in range(binding.retries + 1):
            try:
                call = lambda: invoke(step, function, binding.outputs, job.parameters, upstream)
                outputs = call() if binding.timeout_s is None else call_with_timeout(name, binding.timeout_s, call)
                encoded = codec.encode(outputs, threshold_bytes=self.settings.gridfs_threshold_bytes)
                small = encoded.inline_bytes + sum(len(blob.data) for blob in encoded.blobs) <= CACHEABLE_OUTPUT_BYTES
                return Outcome(outputs=encoded, values=outputs if small else None)
            except BaseException as error:  # noqa: BLE001 - SystemExit in a task must not stop the worker
                failure = error
                if not retryable(error):
                    break
        return Outcome(error=error_dict(failure))
