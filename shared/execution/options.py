"""Where task code runs, as the runner or worker is told: isolation and memory defaults.

A task's own ``@task(isolation=..., memory_mb=...)`` wins over these defaults. The embedded
runner reads them from the environment (``THEODOLITE_ISOLATION``, ``THEODOLITE_MEMORY_MB``) when
it is given none; workers take them from their :class:`~shared.settings.Settings` (same
variables, or ``theodolite worker --isolation``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from shared.plugin_api import Isolation, TaskSpec

ISOLATION_ENV = "THEODOLITE_ISOLATION"
MEMORY_ENV = "THEODOLITE_MEMORY_MB"
DEFAULT_ISOLATION = Isolation.PROCESS
TIMEOUT_WARNING_FRACTION = 0.8
"""A step still running at this fraction of its timeout gets a warning (then it is killed at 1.0)."""

__all__ = ["DEFAULT_ISOLATION", "TIMEOUT_WARNING_FRACTION", "ExecutionOptions", "Isolation"]


@dataclass(frozen=True)
class ExecutionOptions:
    """The defaults for tasks that do not choose for themselves."""

    isolation: Isolation = DEFAULT_ISOLATION
    memory_mb: int | None = None
    """The memory limit of process-isolated tasks without ``memory_mb`` (None: no limit)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "isolation", Isolation(self.isolation))
        if self.memory_mb is not None and self.memory_mb <= 0:
            raise ValueError(f"memory_mb must be positive, got {self.memory_mb}")

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> ExecutionOptions:
        """Read ``THEODOLITE_ISOLATION`` and ``THEODOLITE_MEMORY_MB``; a bad value is a
        ValueError naming the variable."""
        env = os.environ if environ is None else environ
        isolation = env.get(ISOLATION_ENV, "").strip().lower() or DEFAULT_ISOLATION.value
        if isolation not in {member.value for member in Isolation}:
            raise ValueError(f"{ISOLATION_ENV} must be 'process' or 'thread', got {isolation!r}")
        memory = env.get(MEMORY_ENV, "").strip()
        try:
            memory_mb = int(memory) if memory else None
        except ValueError:
            raise ValueError(f"{MEMORY_ENV} must be a whole number of megabytes, got {memory!r}") from None
        if memory_mb is not None and memory_mb <= 0:
            raise ValueError(f"{MEMORY_ENV} must be positive, got {memory_mb}")
        return cls(Isolation(isolation), memory_mb)

    def isolation_of(self, spec: TaskSpec) -> Isolation:
        return spec.isolation or self.isolation

    def memory_mb_of(self, spec: TaskSpec) -> int | None:
        return spec.memory_mb or self.memory_mb
