"""A failed step attempt as plain strings: what crosses a process boundary and gets recorded.

A task's own exception never crosses as an object (no pickle): its child process sends its type
name, message and formatted traceback, and the execution layer's own failures (a timeout, a
crashed child, a memory limit) are described the same way. The embedded runner turns a
:class:`Failure` into a :class:`~shared.execution.result.StepError`, workers into the error dict
they store in MongoDB.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.errors import StepCancelledError, StepInterruptedError, StepTimeoutError
from shared.execution.invoke import error_message, format_traceback, retryable
from shared.retry_policy import RetryPolicy, type_names
from shared.states import ErrorKind


@dataclass(frozen=True)
class Failure:
    type: str
    """The exception's class name (``RuntimeError``, ``StepTimeoutError``, ``TaskCrashError``...)."""
    message: str
    traceback: str
    kind: ErrorKind = ErrorKind.TASK
    retryable: bool = True
    """Whether ``@task(retries=N)`` re-runs the step (ordinary exceptions, timeouts, crashes and
    memory limits: yes; ``SystemExit`` and other non-``Exception`` exits, plugin import errors: no)."""
    interrupted: bool = False
    """The execution layer stopped the task from outside (timeout, crash, memory limit): a
    :class:`~shared.errors.StepInterruptedError`, which retry policies may treat apart."""
    types: tuple[str, ...] = ()
    """The exception's type name and its bases' (most derived first), for ``retry_on``."""

    def retry_delay_s(self, policy: RetryPolicy, failed_attempt: int) -> float | None:
        """Seconds until the step's next attempt under ``policy``, or None: it fails for good."""
        return policy.next_delay_s(failed_attempt, self.types or (self.type,), retryable=self.retryable)

    @classmethod
    def of(cls, error: BaseException, *, retry: bool | None = None) -> Failure:
        """An exception raised in this process (``retry`` overrides :func:`retryable`)."""
        return cls(
            type=type(error).__name__,
            message=error_message(error),
            traceback=format_traceback(error),
            kind=ErrorKind.TIMEOUT if isinstance(error, StepTimeoutError) else ErrorKind.TASK,
            retryable=(retryable(error) and not isinstance(error, StepCancelledError)) if retry is None else retry,
            interrupted=isinstance(error, StepInterruptedError),
            types=tuple(type_names(error)),
        )

    @classmethod
    def interruption(cls, error: StepInterruptedError, detail: str = "") -> Failure:
        """The execution layer's own verdict on a task (no traceback of the task to show)."""
        text = f"{type(error).__name__}: {error_message(error)}\n"
        return cls(
            type=type(error).__name__,
            message=error_message(error),
            traceback=text + (detail if detail.endswith("\n") or not detail else detail + "\n"),
            kind=ErrorKind.TIMEOUT if isinstance(error, StepTimeoutError) else ErrorKind.TASK,
            retryable=not isinstance(error, StepCancelledError),
            interrupted=True,
            types=tuple(type_names(error)),
        )
