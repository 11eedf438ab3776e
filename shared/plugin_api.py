"""The plugin decorator: marks a function as a task a job document may call.

A decorated function is returned unchanged apart from a ``__theodolite_task__``
attribute holding its :class:`TaskSpec`. Nothing is recorded in module-level state:
registries are built by importing plugin modules and collecting marked functions
(see :mod:`shared.plugin_registry`), and the validator reads the same decorator
statically from source (see :mod:`shared.plugin_catalog`) without importing anything.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from enum import StrEnum
from typing import Any, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.retry_policy import RetryPolicy, names_of
from shared.task_context import CONTEXT_TYPE_NAME, TaskContext

TASK_MARKER = "__theodolite_task__"
DEFAULT_DEVICE = "cpu"

F = TypeVar("F", bound=Callable[..., Any])

OutputsArg = str | Mapping[str, str] | Sequence[str | Mapping[str, str]] | None
RetryOn = type[BaseException] | str | Sequence[type[BaseException] | str]


class Isolation(StrEnum):
    """Where a task's code runs (see docs/distributed.md, "Where task code runs")."""

    PROCESS = "process"
    """In a long-lived child process of the runner or worker: a timeout, a crash or a memory
    limit costs one step; arguments and outputs cross the process boundary through the codec."""
    THREAD = "thread"
    """In a thread of the runner or worker itself: for trusted, fast tasks (no per-call hop),
    and tasks passing Python objects the codec cannot carry; a timed-out call cannot be stopped."""


class OutputSpec(BaseModel):
    """How a task's return value becomes named outputs (Dioptra's ``outputs``)."""

    model_config = ConfigDict(frozen=True)

    names: tuple[str, ...] = ()
    types: tuple[str, ...] = ()
    unpack: bool = False
    """True for a list of outputs: the return value is iterated and zipped with ``names``."""


class TaskSpec(BaseModel):
    """Everything the engine knows about one plugin task."""

    model_config = ConfigDict(frozen=True)

    name: str
    module: str = ""
    function: str = ""
    outputs: OutputSpec = OutputSpec()
    device: str = DEFAULT_DEVICE
    retries: int = Field(default=0, ge=0, le=100)
    retry_on: tuple[str, ...] = ()
    """Exception type names a failure must have (its type or a base type) to be retried; empty:
    any exception. Timeouts, crashes and memory limits are retried whatever it says."""
    backoff_s: float = Field(default=1.0, ge=0, le=86_400)
    """Seconds before the first retry; doubled for each later one (±25 % jitter)."""
    max_backoff_s: float = Field(default=60.0, ge=0, le=86_400)
    timeout_s: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    """Address space the task may map beyond its child process's own (``RLIMIT_AS``); None: the
    worker's default (``THEODOLITE_MEMORY_MB``), or no limit. Process isolation only."""
    isolation: Isolation | None = None
    """None: the runner's or worker's default (``THEODOLITE_ISOLATION``, ``process`` unless set)."""
    context_arg: str | None = None
    """The parameter annotated with :class:`~shared.task_context.TaskContext`, if any: passed by
    the engine, never a document input."""

    @field_validator("device")
    @classmethod
    def _device_label(cls, value: str) -> str:
        if not value or not value.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"device label must be a non-empty word, got {value!r}")
        return value

    @model_validator(mode="after")
    def _backoff_order(self) -> TaskSpec:
        if self.max_backoff_s < self.backoff_s:
            raise ValueError(f"max_backoff_s ({self.max_backoff_s:g}) is below backoff_s ({self.backoff_s:g})")
        return self

    @property
    def coordinate(self) -> str:
        return f"{self.module}.{self.function}"

    @property
    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(retries=self.retries, backoff_s=self.backoff_s, max_backoff_s=self.max_backoff_s,
                           retry_on=self.retry_on)


def normalize_outputs(outputs: OutputsArg) -> OutputSpec:
    """Accept every spelling of ``outputs`` the decorator allows.

    ``"sum"`` or ``{"sum": "number"}`` name a single output holding the whole return value;
    ``["seed", "rng"]`` or ``[{"seed": "integer"}, {"rng": "any"}]`` unpack an iterable.
    """
    if outputs is None:
        return OutputSpec()
    if isinstance(outputs, str):
        return OutputSpec(names=(outputs,), types=("any",))
    if isinstance(outputs, Mapping):
        if len(outputs) != 1:
            raise ValueError("a single output mapping must have exactly one name: type entry")
        (name, type_name), = outputs.items()
        return OutputSpec(names=(str(name),), types=(str(type_name),))
    names: list[str] = []
    types: list[str] = []
    for item in outputs:
        if isinstance(item, str):
            names.append(item)
            types.append("any")
        elif isinstance(item, Mapping) and len(item) == 1:
            (name, type_name), = item.items()
            names.append(str(name))
            types.append(str(type_name))
        else:
            raise ValueError(f"output entries must be names or one-entry mappings, got {item!r}")
    return OutputSpec(names=tuple(names), types=tuple(types), unpack=True)


@overload
def task(fn: F, /) -> F: ...
@overload
def task(
    *,
    name: str | None = None,
    outputs: OutputsArg = None,
    device: str = DEFAULT_DEVICE,
    retries: int = 0,
    retry_on: RetryOn = (),
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    timeout: float | None = None,
    memory_mb: int | None = None,
    isolation: str | None = None,
) -> Callable[[F], F]: ...


def task(
    fn: F | None = None,
    /,
    *,
    name: str | None = None,
    outputs: OutputsArg = None,
    device: str = DEFAULT_DEVICE,
    retries: int = 0,
    retry_on: RetryOn = (),
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    timeout: float | None = None,
    memory_mb: int | None = None,
    isolation: str | None = None,
) -> F | Callable[[F], F]:
    """Register a function as a plugin task; usable bare (``@task``) or with options.

    ``name`` is the short name documents use (default: the function name); ``outputs``
    names the return value(s); ``device`` routes the step to workers of that type;
    ``retries`` re-runs a failed step that many extra times, the first after ``backoff_s``
    (1 s), then doubling up to ``max_backoff_s`` (60 s), ±25 % jitter, holding no worker slot
    while it waits; ``retry_on`` (exception types or their names) limits retries to those
    failures (timeouts and crashes are always retried); ``timeout`` (seconds) fails a
    step that runs longer (a warning at 80 %, the task's process killed at 100 %);
    ``memory_mb`` fails a step whose task maps more memory than that (process isolation);
    ``isolation`` is ``"process"`` or ``"thread"`` (default: the runner's or worker's). A
    parameter annotated with :class:`~shared.task_context.TaskContext` receives the task context.
    """

    def mark(func: F) -> F:
        spec = TaskSpec(
            context_arg=context_parameter(func),
            name=name or func.__name__,
            module=func.__module__,
            function=func.__name__,
            outputs=normalize_outputs(outputs),
            device=device,
            retries=retries,
            retry_on=names_of((retry_on,) if isinstance(retry_on, (str, type)) else retry_on),
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
            timeout_s=timeout,
            memory_mb=memory_mb,
            isolation=isolation,
        )
        setattr(func, TASK_MARKER, spec)
        return func

    if fn is not None:
        return mark(fn)
    return mark


register = task
"""pyplugs-style alias: Dioptra plugins decorated with ``@register`` read the same."""


def spec_of(obj: object) -> TaskSpec | None:
    """The task spec of a decorated function, or None for anything else."""
    spec = getattr(obj, TASK_MARKER, None)
    return spec if isinstance(spec, TaskSpec) else None


def is_context_annotation(annotation: object) -> bool:
    """``TaskContext`` (or ``TaskContext | None``) as a class, or as a name (``"TaskContext"``,
    ``"plugins.TaskContext | None"``: what ``from __future__ import annotations`` leaves)."""
    if annotation is TaskContext or annotation == TaskContext | None:
        return True
    if not isinstance(annotation, str):
        return False
    parts = {part.strip().strip("'\"").rpartition(".")[2] for part in annotation.strip("'\"").split("|")} - {"None"}
    return parts == {CONTEXT_TYPE_NAME}


def context_parameter(func: Callable[..., Any]) -> str | None:
    """The name of ``func``'s parameter annotated with the task context, if any."""
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return None
    return next((p.name for p in parameters if is_context_annotation(p.annotation)), None)
