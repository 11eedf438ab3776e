"""When a failed step runs again, and how long it waits first.

A task declares its policy (``@task(retries=N, retry_on=(...), backoff_s=..., max_backoff_s=...)``)
and a step may override it in the document with the extension key ``x-retry`` (a key
Dioptra documents never use: task names cannot contain ``-``). By default a task with
retries waits ``backoff_s`` (1 s) before its first retry, doubling each time up to
``max_backoff_s`` (60 s), with jitter of at most ±25 %. Timeouts and crashes are retryable;
an exception is retryable when ``retry_on`` is empty or names its type (or a base type's
name); a cancellation never is.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

from pydantic import BaseModel, ConfigDict, Field

RETRY_KEY = "x-retry"
JITTER = 0.25
NEVER_RETRIED = frozenset({"SystemExit", "KeyboardInterrupt", "GeneratorExit", "StepCancelledError", "CancelledError"})
ALWAYS_RETRIED = frozenset({"StepTimeoutError", "TaskCrashError", "MemoryLimitError", "StepInterruptedError"})
"""Failures of the run rather than of the task's logic: retried whatever ``retry_on`` says."""


class RetryOverride(BaseModel):
    """A step's ``x-retry:`` mapping: any field it gives replaces the task's."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    retries: int | None = Field(default=None, ge=0, le=100)
    backoff_s: float | None = Field(default=None, ge=0, le=86_400)
    max_backoff_s: float | None = Field(default=None, ge=0, le=86_400)


class RetryPolicy(BaseModel):
    model_config = ConfigDict(frozen=True)

    retries: int = 0
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    retry_on: tuple[str, ...] = ()
    """Exception type names; empty: any exception of the task."""

    def overridden(self, override: RetryOverride | None) -> RetryPolicy:
        if override is None:
            return self
        return self.model_copy(update={k: v for k, v in override.model_dump().items() if v is not None})

    def retries_after(self, failed_attempt: int, error_types: Sequence[str]) -> bool:
        """Whether attempt ``failed_attempt`` (1-based), which raised an exception whose type
        and base types are ``error_types`` (most derived first), runs again."""
        if failed_attempt > self.retries or not error_types or error_types[0] in NEVER_RETRIED:
            return False
        if error_types[0] in ALWAYS_RETRIED or not self.retry_on:
            return True
        return any(name in self.retry_on for name in error_types)

    def next_delay_s(self, failed_attempt: int, error_types: Sequence[str], *, retryable: bool = True,
                     rng: random.Random | None = None) -> float | None:
        """Seconds until the next attempt after attempt ``failed_attempt`` failed with an error
        of ``error_types`` (see :meth:`retries_after`), or None when the step fails for good.
        ``retryable`` False (a ``SystemExit``, a plugin that cannot load) never retries."""
        if not retryable or not self.retries_after(failed_attempt, error_types):
            return None
        return self.delay_s(failed_attempt, rng)

    def delay_s(self, failed_attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the attempt after ``failed_attempt``: ``backoff_s`` doubled
        per retry so far, capped at ``max_backoff_s``, then jittered by at most ±25 %."""
        base = min(self.backoff_s * 2 ** max(0, failed_attempt - 1), self.max_backoff_s)
        return base * (1 + JITTER * (2 * (rng or random).random() - 1))


def type_names(error: BaseException) -> list[str]:
    """An exception's type name and those of its bases (for ``retry_on``)."""
    return [cls.__name__ for cls in type(error).__mro__ if cls is not object]


def names_of(types: Iterable[type[BaseException] | str]) -> tuple[str, ...]:
    return tuple(t if isinstance(t, str) else t.__name__ for t in types)
