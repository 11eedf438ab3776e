"""The project's one error base and its subclasses; each keeps its context as attributes."""

from __future__ import annotations

from typing import Any


class TheodoliteError(Exception):
    """Base of every error theodolite raises on purpose."""


class ReferenceResolutionError(TheodoliteError):
    """Raised when a ``$reference`` cannot be resolved at run time."""

    def __init__(self, reference: str, reason: str) -> None:
        super().__init__(f"cannot resolve ${reference}: {reason}")
        self.reference = reference
        self.reason = reason


class PluginLoadError(TheodoliteError):
    """Raised when a plugin module fails to import or a name is not a registered task."""

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"{target}: {reason}")
        self.target = target
        self.reason = reason


class StepOutputError(TheodoliteError):
    """Raised when a task's return value cannot be unpacked into its declared outputs."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(f"step {step!r}: {reason}")
        self.step = step
        self.reason = reason


class StepInterruptedError(TheodoliteError):
    """Base of the failures the execution layer inflicts on a task from outside (a timeout, a
    crashed or over-limit child process), as opposed to exceptions the task raises itself.
    Retryable (``@task(retries=N)`` re-runs them); ``reason`` is the short cause."""

    reason: str = "interrupted"


class StepCancelledError(StepInterruptedError):
    """Raised when a step was still running at the end of its job's cancel grace period (its
    child process killed, or a thread-isolated call abandoned). Never retried."""

    def __init__(self, step: str, grace_s: float | None = None) -> None:
        after = "" if grace_s is None else f" after a grace period of {grace_s:g} s"
        super().__init__(f"step {step!r} was stopped: its job was cancelled{after}")
        self.step = step
        self.reason = "cancelled"


class StepTimeoutError(StepInterruptedError):
    """Raised when a step runs longer than its task's ``timeout``."""

    def __init__(self, step: str, timeout_s: float) -> None:
        super().__init__(f"step {step!r} exceeded its timeout of {timeout_s:g} s")
        self.step = step
        self.timeout_s = timeout_s
        self.reason = "timeout"


class TaskCrashError(StepInterruptedError):
    """Raised when the child process running a task dies: a signal (``crashed: signal 11
    (SIGSEGV)``) or an exit of its own (``crashed: exit code 3``, e.g. ``os._exit(3)``)."""

    def __init__(self, step: str, reason: str) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason


class MemoryLimitError(StepInterruptedError):
    """Raised when a task maps more memory than its ``memory_mb`` (``memory limit 2048 MB``)."""

    def __init__(self, step: str, memory_mb: int, detail: str = "") -> None:
        super().__init__(f"memory limit {memory_mb} MB" + (f": {detail}" if detail else ""))
        self.step = step
        self.memory_mb = memory_mb
        self.reason = f"memory limit {memory_mb} MB"


class ParameterError(TheodoliteError):
    """Raised when run-time parameters are missing or malformed."""

    def __init__(self, problems: list[Any]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems
