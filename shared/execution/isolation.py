"""The execution layer: run one step's task, with its retries and timeout, where it can be stopped.

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

Retries (``@task(retries=N)``) re-run failed attempts, in the same child or, after a crash, a
timeout or a memory limit, in a fresh one; ``SystemExit`` and other non-``Exception`` exits and
plugin import errors are not retried (:func:`~shared.execution.invoke.retryable`).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

from shared import codec
from shared.distributed_errors import CodecError
from shared.document.model import TaskBinding
from shared.errors import StepInterruptedError
from shared.execution import wire
from shared.execution.failure import Failure
from shared.execution.invoke import name_outputs
from shared.execution.options import ExecutionOptions, Isolation
from shared.execution.process_pool import ProcessPool
from shared.execution.timeouts import TimeoutWarning, call_with_timeout
from shared.plugin_registry import PluginRegistry

Arguments = Callable[[], tuple[list[Any], dict[str, Any]]]
"""Resolves a step's arguments (called once per attempt)."""

__all__ = ["Arguments", "StepRun", "TaskRunner"]


@dataclass
class StepRun:
    """What running one step gave: its outputs, or the failure of its last attempt."""

    values: dict[str, Any] | None = None
    """The named outputs (None when failed, or when only ``encoded`` was asked for)."""
    encoded: codec.Encoded | None = None
    """The outputs as codec trees and blobs, when the caller asked for a storage threshold."""
    failure: Failure | None = None
    attempts: int = 0
    isolation: Isolation | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


@dataclass(frozen=True)
class _Plan:
    isolation: Isolation
    memory_mb: int | None
    function: Callable[..., Any] | None
    """Loaded in this process for thread isolation only."""


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
            decode: bool = True, on_warning: TimeoutWarning | None = None) -> StepRun:
        """Run ``step`` (all its attempts). With ``threshold_bytes``, the outputs are also
        returned encoded for storage (arrays and bytes above it as blobs); ``decode=False``
        skips decoding a child's outputs into ``values`` (the caller keeps ``encoded``).
        ``on_warning(elapsed_s, timeout_s)`` is called once a step has run 80 % of its timeout."""
        try:
            plan = self._plan(binding.plugin)
        except BaseException as error:  # noqa: BLE001 - a plugin that cannot load fails its step, unretried
            return StepRun(failure=Failure.of(error, retry=False))
        if plan.isolation is Isolation.THREAD:
            return self._in_thread(step, binding, plan, arguments, threshold_bytes, on_warning)
        return self._in_process(step, binding, plan, arguments, threshold_bytes, decode, on_warning)

    def _plan(self, coordinate: str) -> _Plan:
        plan = self._plans.get(coordinate)
        if plan is None:
            spec = self.registry.describe(coordinate)
            isolation = self.options.isolation_of(spec)
            function = self.registry.load(coordinate).function if isolation is Isolation.THREAD else None
            plan = _Plan(isolation, self.options.memory_mb_of(spec), function)
            self._plans[coordinate] = plan
        return plan

    # in this thread ------------------------------------------------------------------------------
    def _in_thread(self, step: str, binding: TaskBinding, plan: _Plan, arguments: Arguments,
                   threshold_bytes: int | None, on_warning: TimeoutWarning | None) -> StepRun:
        function = plan.function
        assert function is not None

        def call() -> dict[str, Any]:
            args, kwargs = arguments()
            return name_outputs(step, binding.outputs, function(*args, **kwargs))

        run = StepRun(isolation=Isolation.THREAD)
        for attempt in range(1, binding.retries + 2):
            run.attempts = attempt
            try:
                if binding.timeout_s is None:
                    outputs = call()
                else:
                    outputs = call_with_timeout(step, binding.timeout_s, call, on_warning=on_warning)
                run.encoded = None if threshold_bytes is None else codec.encode(outputs, threshold_bytes=threshold_bytes)
                run.values, run.failure = outputs, None
                return run
            except BaseException as error:  # noqa: BLE001 - a task's failure is the step's result
                run.failure = Failure.of(error)
                if not run.failure.retryable:
                    break
        return run

    # in a child process --------------------------------------------------------------------------
    def _in_process(self, step: str, binding: TaskBinding, plan: _Plan, arguments: Arguments,
                    threshold_bytes: int | None, decode: bool, on_warning: TimeoutWarning | None) -> StepRun:
        run = StepRun(isolation=Isolation.PROCESS)
        header = {
            "op": "run", "step": step, "task": binding.plugin, "names": list(binding.outputs.names),
            "unpack": binding.outputs.unpack, "memory_mb": plan.memory_mb,
            "threshold_bytes": wire.BLOB_THRESHOLD_BYTES if threshold_bytes is None else threshold_bytes,
            "for_storage": threshold_bytes is not None,
        }
        try:
            pool = self.pool
        except RuntimeError as error:
            return StepRun(failure=Failure.of(error, retry=False), isolation=Isolation.PROCESS)
        with pool.slot() as slot:
            for attempt in range(1, binding.retries + 2):
                run.attempts = attempt
                try:
                    call = encode_arguments(*arguments())
                except BaseException as error:  # noqa: BLE001 - unresolvable or unencodable arguments
                    run.failure = Failure.of(error)
                    if not run.failure.retryable:
                        break
                    continue
                try:
                    reply, blobs = slot.call(step, {**header, "call": call.tree}, call.blobs,
                                             timeout_s=binding.timeout_s, on_warning=on_warning)
                except StepInterruptedError as error:
                    run.failure = Failure.interruption(error)
                    continue
                except Exception as error:  # noqa: BLE001 - no child could be started (fds, memory): fails the step
                    run.failure = Failure.of(error, retry=False)
                    break
                if reply.get("ok"):
                    encoded = codec.Encoded(reply["tree"], blobs, int(reply.get("inline_bytes") or 0))
                    run.encoded = encoded if threshold_bytes is not None else None
                    try:
                        run.values = wire.decode(encoded.tree, blobs) if decode or threshold_bytes is None else None
                    except Exception as error:  # noqa: BLE001 - a corrupt reply fails the step
                        run.failure = Failure.of(error, retry=False)
                        break
                    run.failure = None
                    return run
                run.failure = Failure(
                    type=str(reply.get("type")), message=str(reply.get("message")), traceback=str(reply.get("traceback")),
                    retryable=bool(reply.get("retryable")), interrupted=reply.get("type") == "MemoryLimitError",
                )
                if reply.get("replace"):
                    slot.replace()
                if not run.failure.retryable:
                    break
        return run


def encode_arguments(args: list[Any], kwargs: dict[str, Any]) -> codec.Encoded:
    """A step's arguments as one codec tree; what cannot cross without pickle is a CodecError
    naming the argument (``args[0]``, ``kwargs.model``)."""
    try:
        return wire.encode({"args": args, "kwargs": kwargs})
    except CodecError as error:
        raise CodecError(error.path.lstrip("."), f"{error.reason.split(';')[0]}: arguments reach a process-isolated "
                         "task through the codec; declare the task with @task(isolation='thread') to pass other "
                         "Python objects") from None
