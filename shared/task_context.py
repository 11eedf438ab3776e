"""The task context: what a running task may know about its run and tell the engine.

A task asks for it by declaring a parameter annotated with :class:`TaskContext` (any name)::

    from plugins import TaskContext, task

    @task(outputs="model")
    def train(data, epochs: int, ctx: TaskContext):
        for epoch in range(epochs):
            ...
            ctx.log_metric("loss", loss, step=epoch)
            if ctx.cancelled():
                break

The parameter is not a document input: documents do not mention it, the validator leaves it
out of the task's inputs, and the engine passes it in both modes (``run`` and a cluster, in a
child process or a thread). What it reports goes through a :class:`ContextSink` that the
execution layer provides: metrics are sent on as they are logged (events, a live chart) and
stored with the step; logged artifacts are stored with the step like its outputs.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["CONTEXT_TYPE_NAME", "ContextInfo", "ContextSink", "Metric", "TaskContext", "derive_seed"]

CONTEXT_TYPE_NAME = "TaskContext"
"""How the static catalog recognises the parameter (an annotation of this name, bare or dotted)."""
MAX_METRIC_NAME = 100
MAX_METRICS_PER_ATTEMPT = 10_000
"""Points beyond this are counted, not kept (a task logging per batch should log per epoch)."""
MAX_ARTIFACTS_PER_ATTEMPT = 32


class ContextInfo(BaseModel):
    """Who and where a task runs: sent to a task's child process with each call."""

    model_config = ConfigDict(frozen=True)

    job_id: str
    step: str
    attempt: int = Field(default=1, ge=1)
    device: str = "cpu"
    worker_id: str = "local"
    seed: int = 0
    """Derived from the job's seed and the step name (:func:`derive_seed`): the same for every
    attempt of the step, different between steps."""


class Metric(BaseModel):
    """One logged value: ``name`` at ``step`` (an epoch, a batch; None: no step)."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(min_length=1, max_length=MAX_METRIC_NAME)
    value: float
    step: int | None = None
    at: float = Field(default_factory=time.time)


class ContextSink(Protocol):
    """Where a context's reports go (the execution layer's side of it)."""

    def metric(self, metric: Metric) -> None: ...

    def artifact(self, name: str, value: Any) -> None: ...

    def cancelled(self) -> bool: ...


def derive_seed(job_seed: int, step: str) -> int:
    """A step's seed: 63 bits of SHA-256 over the job's seed and the step name (stable across
    processes, Python versions and attempts, unlike ``hash()``)."""
    digest = hashlib.sha256(f"{int(job_seed)}:{step}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass
class TaskContext:
    """Handed to a task that declares a parameter annotated with this type."""

    info: ContextInfo
    _sink: ContextSink | None = field(default=None, repr=False)

    @property
    def job_id(self) -> str:
        return self.info.job_id

    @property
    def step(self) -> str:
        """The step's name in the job's graph."""
        return self.info.step

    @property
    def attempt(self) -> int:
        """1 for the first run of the step, 2 for its first retry, ..."""
        return self.info.attempt

    @property
    def device(self) -> str:
        return self.info.device

    @property
    def worker_id(self) -> str:
        """The worker running the step (``local`` under ``theodolite run``)."""
        return self.info.worker_id

    @property
    def seed(self) -> int:
        return self.info.seed

    def cancelled(self) -> bool:
        """True once the job is being cancelled: stop soon (the step is stopped after the
        cancel's grace period anyway)."""
        return self._sink is not None and self._sink.cancelled()

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Record ``value`` of metric ``name`` (at ``step``, e.g. the epoch). Stored with the
        step, sent as a ``step.metric`` event, shown by ``status``, ``monitor`` and the
        dashboard. A value that is not a finite number raises ``ValueError``."""
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"metric {name!r}: {value!r} is not a finite number")
        metric = Metric(name=str(name), value=number, step=None if step is None else int(step))
        if self._sink is not None:
            self._sink.metric(metric)

    def log_artifact(self, name: str, value: Any) -> None:
        """Keep ``value`` (an array, a number, a string, a JSON-like tree) under ``name`` with
        the step, stored like an output (MongoDB / GridFS on a cluster, the run's folder under
        ``run``) but not passed to other steps."""
        if self._sink is not None:
            self._sink.artifact(str(name), value)


@dataclass
class CollectingSink:
    """A sink that keeps what it is told (thread mode, and the parent's copy of a child's
    reports); ``on_metric`` is told of each metric as it comes."""

    cancel_flag: Callable[[], bool] = lambda: False
    on_metric: Callable[[Metric], None] | None = None
    metrics: list[Metric] = field(default_factory=list)
    dropped_metrics: int = 0
    artifacts: dict[str, Any] = field(default_factory=dict)

    def metric(self, metric: Metric) -> None:
        if len(self.metrics) >= MAX_METRICS_PER_ATTEMPT:
            self.dropped_metrics += 1
            return
        self.metrics.append(metric)
        if self.on_metric is not None:
            self.on_metric(metric)

    def artifact(self, name: str, value: Any) -> None:
        if name not in self.artifacts and len(self.artifacts) >= MAX_ARTIFACTS_PER_ATTEMPT:
            raise ValueError(f"a step may log at most {MAX_ARTIFACTS_PER_ATTEMPT} artifacts")
        self.artifacts[name] = value

    def cancelled(self) -> bool:
        return self.cancel_flag()
