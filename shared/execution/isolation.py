"""The execution layer: run one attempt of a step's task, with its timeout, where it can be stopped.

Shared by the embedded runner (:mod:`shared.execution.local`) and the workers
(:mod:`services.worker_execution`), so ``theodolite run`` and a cluster behave alike. Each task
runs either

* in a **child process** (``process``, the default): a long-lived child per slot
  (:mod:`shared.execution.process_pool`); arguments go in and outputs come out as codec trees (no
  pickle); a step over its ``timeout`` is warned at 80 % and its child killed at 100 %
  (``StepTimeoutError``, kind ``timeout``); a child that dies fails the step with
  ``TaskCrashError`` (``crashed: signal 11 (SIGSEGV)``, ``crashed: exit code 3``), one that maps
  more than the task's ``memory_mb`` with ``MemoryLimitError`` (``memory limit 2048 MB``), both of
  kind ``task``; the child is replaced and every other slot keeps serving; or
* in the **calling thread** (``thread``): no hop, any Python value, but a timed-out call can
  only be abandoned (it runs on in the background).

The plugin's own choice (``@task(isolation=...)``) wins over the runner's default. Where a task
runs is decided from its decorator as read from source (:meth:`PluginRegistry.describe`), so a
process-isolated task's module is imported only in the children, never in the runner itself.

Retries (``@task(retries=N, backoff_s=...)``) are not run here: the caller asks the failure
(:meth:`Failure.retry_delay_s`) and runs the next attempt after the delay, holding no slot
meanwhile (the embedded runner on a timer, a cluster through the planner's timers);
``SystemExit`` and other non-``Exception`` exits and plugin import errors are never retried
(:func:`~shared.execution.invoke.retryable`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

from shared import codec
from shared.distributed_errors import CodecError
from shared.document.model import TaskBinding
from shared.errors import StepInterruptedError
from shared.execution import wire
from shared.execution.cancellation import Cancellation
from shared.execution.capture import Capture, capturing
from shared.execution.failure import Failure
from shared.execution.invoke import name_outputs, with_context
from shared.execution.options import ExecutionOptions, Isolation
from shared.execution.process_pool import ProcessPool
from shared.execution.timeouts import TimeoutWarning, call_with_timeout
from shared.plugin_registry import PluginRegistry
from shared.task_context import CollectingSink, ContextInfo, Metric, TaskContext

Arguments = Callable[[], tuple[list[Any], dict[str, Any]]]
"""Resolves a step's arguments (called once per attempt)."""

__all__ = ["Arguments", "Reporting", "StepRun", "TaskRunner"]


@dataclass
class StepRun:
    """What running one attempt of a step gave: its outputs, or its failure."""

    values: dict[str, Any] | None = None
    """The named outputs (None when failed, or when only ``encoded`` was asked for)."""
    encoded: codec.Encoded | None = None
    """The outputs as codec trees and blobs, when the caller asked for a storage threshold."""
    failure: Failure | None = None
    isolation: Isolation | None = None
    logs: str = ""
    """What the task printed and logged (capped: :data:`~shared.execution.capture.LOG_CAP_BYTES`)."""
    logs_dropped: int = 0
    """Bytes of output beyond the cap, counted and not kept."""
    metrics: list[Metric] = field(default_factory=list)
    metrics_dropped: int = 0
    artifacts: dict[str, Any] | None = None
    """Values the task logged with ``context.log_artifact`` (decoded; None: none, or only encoded)."""
    encoded_artifacts: codec.Encoded | None = None
    """The same as a codec tree, when the caller asked for a storage threshold."""

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class Reporting:
    """What a running task may learn and report beyond its arguments (all optional)."""

    context: ContextInfo | None = None
    """Handed to a task that asks for the task context (:mod:`shared.task_context`)."""
    on_metric: Callable[[Metric], None] | None = None
    """Told of each metric as the task logs it (on the slot's thread)."""
    on_logs: Callable[[str], None] | None = None
    """Told of a process-isolated task's new output about every second (live following)."""
    cancel: Cancellation | None = None
    """Set when the step's job is cancelled: ``context.cancelled()`` turns true, and the task is
    stopped at the end of the grace period (:class:`~shared.errors.StepCancelledError`)."""


@dataclass(frozen=True)
class _Plan:
    isolation: Isolation
    memory_mb: int | None
    function: Callable[..., Any] | None
    """Loaded in this process for thread isolation only."""
    context_arg: str | None = None


class TaskRunner:
    """Runs steps' tasks in ``slots`` child processes (started on first need) or in the
    calling thread; thread-safe. Close it (or use it as a context manager) to end the children."""

    def __init__(self, registry: PluginRegistry, options: ExecutionOptions | None = None, *, slots: int,
                 start_method: str | None = None) -> None:
        self.registry = registry
        self.options = options or ExecutionOptions()
        self.slots = max(1, slots)
        self.start_method = start_method
        self._plans: dict[str, _Plan] = {}
        self._pool: ProcessPool | None = None
        self._lock = threading.Lock()
        self._closed = False

    @property
    def pool(self) -> ProcessPool:
        """The process pool (created on first use)."""
        with self._lock:
            if self._closed:
                raise RuntimeError("the task runner is closed")
            if self._pool is None:
                self._pool = ProcessPool(self.slots, plugin_dirs=self.registry.plugin_path, start_method=self.start_method)
            return self._pool

    def close(self) -> None:
        """End the child processes (a running task's child is killed). Idempotent."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def isolation_of(self, binding: TaskBinding) -> Isolation:
        """Where the binding's task runs (raises as :meth:`PluginRegistry.describe` does)."""
        return self._plan(binding.plugin).isolation

    def run(self, step: str, binding: TaskBinding, arguments: Arguments, *, threshold_bytes: int | None = None,
            decode: bool = True, on_warning: TimeoutWarning | None = None, reporting: Reporting | None = None) -> StepRun:
        """Run one attempt of ``step`` (retries are the caller's: :meth:`Failure.retry_delay_s`
        says whether and when, and the attempt runs again later without holding this slot). With ``threshold_bytes``, the outputs are also
        returned encoded for storage (arrays and bytes above it as blobs); ``decode=False``
        skips decoding a child's outputs into ``values`` (the caller keeps ``encoded``).
        ``on_warning(elapsed_s, timeout_s)`` is called once a step has run 80 % of its timeout;
        ``reporting`` gives the task its context and takes what it reports."""
        reporting = reporting or Reporting()
        try:
            plan = self._plan(binding.plugin)
        except BaseException as error:  # noqa: BLE001 - a plugin that cannot load fails its step, unretried
            return StepRun(failure=Failure.of(error, retry=False))
        if plan.isolation is Isolation.THREAD:
            return self._in_thread(step, binding, plan, arguments, threshold_bytes, on_warning, reporting)
        return self._in_process(step, binding, plan, arguments, threshold_bytes, decode, on_warning, reporting)

    def _plan(self, coordinate: str) -> _Plan:
        plan = self._plans.get(coordinate)
        if plan is None:
            spec = self.registry.describe(coordinate)
            isolation = self.options.isolation_of(spec)
            function = self.registry.load(coordinate).function if isolation is Isolation.THREAD else None
            plan = _Plan(isolation, self.options.memory_mb_of(spec), function, spec.context_arg)
            self._plans[coordinate] = plan
        return plan

    # in this thread ------------------------------------------------------------------------------
    def _in_thread(self, step: str, binding: TaskBinding, plan: _Plan, arguments: Arguments,
                   threshold_bytes: int | None, on_warning: TimeoutWarning | None, reporting: Reporting) -> StepRun:
        function = plan.function
        assert function is not None
        cancel = reporting.cancel
        sink = CollectingSink(cancel_flag=cancel.requested if cancel is not None else lambda: False,
                              on_metric=reporting.on_metric)
        captured: list[Capture] = []

        def call() -> dict[str, Any]:
            with capturing() as capture:
                captured.append(capture)
                args, kwargs = arguments()
                if plan.context_arg is not None:
                    context = TaskContext(reporting.context or ContextInfo(job_id="", step=step), sink)
                    args, kwargs = with_context(function, plan.context_arg, args, kwargs, context)
                return name_outputs(step, binding.outputs, function(*args, **kwargs))

        run = StepRun(isolation=Isolation.THREAD)
        try:
            if binding.timeout_s is None and cancel is None:
                outputs = call()
            else:
                outputs = call_with_timeout(step, binding.timeout_s, call, on_warning=on_warning, cancel=cancel)
            run.encoded = None if threshold_bytes is None else codec.encode(outputs, threshold_bytes=threshold_bytes)
            run.values = outputs
            if sink.artifacts:
                run.artifacts = dict(sink.artifacts)
                if threshold_bytes is not None:
                    run.encoded_artifacts = codec.encode(run.artifacts, threshold_bytes=threshold_bytes, path="artifacts")
        except BaseException as error:  # noqa: BLE001 - a task's failure is the step's result
            run.failure = Failure.of(error)
        if captured:
            run.logs, run.logs_dropped = captured[0].text(), captured[0].dropped_bytes
        run.metrics, run.metrics_dropped = list(sink.metrics), sink.dropped_metrics
        return run

    # in a child process --------------------------------------------------------------------------
    def _in_process(self, step: str, binding: TaskBinding, plan: _Plan, arguments: Arguments, threshold_bytes: int | None,
                    decode: bool, on_warning: TimeoutWarning | None, reporting: Reporting) -> StepRun:
        run = StepRun(isolation=Isolation.PROCESS)
        header: dict[str, Any] = {
            "op": "run", "step": step, "task": binding.plugin, "names": list(binding.outputs.names),
            "unpack": binding.outputs.unpack, "memory_mb": plan.memory_mb,
            "threshold_bytes": wire.BLOB_THRESHOLD_BYTES if threshold_bytes is None else threshold_bytes,
            "for_storage": threshold_bytes is not None,
        }
        if plan.context_arg is not None:
            header.update(context_arg=plan.context_arg,
                          context=(reporting.context or ContextInfo(job_id="", step=step)).model_dump())
        try:
            pool = self.pool
        except RuntimeError as error:
            return StepRun(failure=Failure.of(error, retry=False), isolation=Isolation.PROCESS)
        try:
            call = encode_arguments(*arguments())
        except BaseException as error:  # noqa: BLE001 - unresolvable or unencodable arguments
            run.failure = Failure.of(error)
            return run
        live = Capture()  # what came before the reply: the logs of a task that was killed
        on_progress = _progress_hook(run, live, reporting)
        with pool.slot() as slot:
            try:
                reply, blobs = slot.call(step, {**header, "call": call.tree}, call.blobs, timeout_s=binding.timeout_s,
                                         on_warning=on_warning, on_progress=on_progress, cancel=reporting.cancel)
            except StepInterruptedError as error:  # the child was killed and is replaced
                run.failure = Failure.interruption(error)
                run.logs, run.logs_dropped = live.text(), live.dropped_bytes
                return run
            except Exception as error:  # noqa: BLE001 - no child could be started (fds, memory): fails the step
                run.failure = Failure.of(error, retry=False)
                return run
            if reply.get("replace"):
                slot.replace()
        run.logs, run.logs_dropped = str(reply.get("logs") or ""), int(reply.get("logs_dropped") or 0)
        run.metrics_dropped = int(reply.get("metrics_dropped") or 0)
        if not reply.get("ok"):
            types = reply.get("types")
            run.failure = Failure(
                type=str(reply.get("type")), message=str(reply.get("message")), traceback=str(reply.get("traceback")),
                retryable=bool(reply.get("retryable")), interrupted=reply.get("type") == "MemoryLimitError",
                types=tuple(str(name) for name in types) if isinstance(types, list) else (),
            )
            return run
        artifact_count = int(reply.get("artifact_blobs") or 0)
        output_blobs, artifact_blobs = blobs[:len(blobs) - artifact_count], blobs[len(blobs) - artifact_count:]
        encoded = codec.Encoded(reply["tree"], output_blobs, int(reply.get("inline_bytes") or 0))
        run.encoded = encoded if threshold_bytes is not None else None
        try:
            run.values = wire.decode(encoded.tree, output_blobs) if decode or threshold_bytes is None else None
            if "artifacts" in reply:
                run.encoded_artifacts = codec.Encoded(reply["artifacts"], artifact_blobs, 0) if threshold_bytes is not None else None
                run.artifacts = wire.decode(reply["artifacts"], artifact_blobs) if decode or threshold_bytes is None else None
        except Exception as error:  # noqa: BLE001 - a corrupt reply fails the step
            run.failure = Failure.of(error, retry=False)
        return run


def _progress_hook(run: StepRun, live: Capture, reporting: Reporting) -> Callable[[dict[str, Any]], None]:
    """What a child's progress frames do: metrics kept and passed on, output kept and passed on."""

    def on_progress(frame: dict[str, Any]) -> None:
        for item in frame.get("metrics") or []:
            try:
                metric = Metric.model_validate(item)
            except ValueError:
                continue
            run.metrics.append(metric)
            if reporting.on_metric is not None:
                reporting.on_metric(metric)
        text = frame.get("logs")
        if isinstance(text, str) and text:
            live.write(text)
            if reporting.on_logs is not None:
                reporting.on_logs(text)

    return on_progress


def encode_arguments(args: list[Any], kwargs: dict[str, Any]) -> codec.Encoded:
    """A step's arguments as one codec tree; what cannot cross without pickle is a CodecError
    naming the argument (``args[0]``, ``kwargs.model``)."""
    try:
        return wire.encode({"args": args, "kwargs": kwargs})
    except CodecError as error:
        raise CodecError(error.path.lstrip("."), f"{error.reason.split(';')[0]}: arguments reach a process-isolated "
                         "task through the codec; declare the task with @task(isolation='thread') to pass other "
                         "Python objects") from None
