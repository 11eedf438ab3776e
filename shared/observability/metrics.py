"""The Prometheus metrics of the services, each service in a registry of its own.

No metric lives in ``prometheus_client``'s global ``REGISTRY``: a :class:`WorkerMetrics` or
:class:`PlannerMetrics` owns a :class:`~prometheus_client.CollectorRegistry`, which the
service's HTTP server (:mod:`shared.observability.http`) exposes at ``/metrics``. Names
follow Prometheus' conventions: the ``theodolite_`` prefix, units in names (``_seconds``),
counters ending in ``_total``, and labels from bounded sets only — a device type, a task's
short name (the plugin function's name, so bounded by the plugin catalog), a state or a
reason enum; never a job id, step name or worker id. Beside them, the standard ``process_*``
and ``python_info`` series of ``prometheus_client`` (CPU, memory, open files).

Worker (:class:`WorkerMetrics`):

* ``theodolite_steps_started_total{task,device}``: steps that started executing here (inputs
  read, then the task);
* ``theodolite_steps_finished_total{task,device,state}``: those that ended, ``state`` a
  :class:`StepEnd` (``succeeded``, ``failed``, or ``interrupted``: the store failed around the
  task and the delivery goes back to RabbitMQ, or the worker stopped);
* ``theodolite_step_duration_seconds{task}``: histogram of the execution time of finished
  steps (inputs read and task run, retries inside the task included);
* ``theodolite_worker_slots{device}`` and ``theodolite_worker_slots_busy{device}``: execution
  slots (``--concurrency``) and how many hold a step now;
* ``theodolite_messages_rejected_total{reason}``.

Planner (:class:`PlannerMetrics`; its gauges are read from the planner when scraped):

* ``theodolite_ready_steps{device}``: steps published and not started, per device queue;
* ``theodolite_oldest_ready_step_age_seconds{device}``: how long the oldest of them has waited;
* ``theodolite_planner_active_jobs``, ``theodolite_planner_writer_backlog`` (queued MongoDB
  writes), ``theodolite_planner_lease_held`` (1 while this planner holds the lease, else 0);
* ``theodolite_jobs_finished_total{state}`` (succeeded, failed, cancelled, rejected);
* ``theodolite_messages_rejected_total{reason}``, ``theodolite_messages_dead_lettered_total{reason}``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from shared.observability.reasons import DeadLetterReason, RejectReason
from shared.states import FINISHED_JOB_STATES, JobState

if TYPE_CHECKING:
    from shared.document.model import JobDocument

STEP_DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
                           1800.0, 3600.0, 4 * 3600.0)
"""From a no-op task's few milliseconds to a training run of hours."""


class StepEnd(StrEnum):
    """How a step that started executing on a worker ended (the ``state`` label)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    INTERRUPTED = "interrupted"
    """No outcome: the store failed around the task (the delivery goes back to RabbitMQ) or
    the worker stopped while it ran."""


def task_label(document: JobDocument | None, step: str) -> str:
    """A step's ``task`` label: the name of its plugin function (``plugins.attacks.fgm`` ->
    ``fgm``), bounded by the plugin catalog, unlike the task names a document chooses;
    ``unknown`` when the document or the step is not at hand."""
    if document is None or step not in document.steps:
        return "unknown"
    binding = document.tasks.get(document.steps[step].task)
    return (binding.plugin.rpartition(".")[2] if binding is not None else "") or "unknown"


def _standard_collectors(registry: CollectorRegistry) -> None:
    """``process_*`` (CPU, memory, file descriptors: Linux only) and ``python_info``."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)


def _rejected(registry: CollectorRegistry) -> Counter:
    counter = Counter("theodolite_messages_rejected_total", "Messages this service refused (dead-lettered without requeue), "
                      "by reason.", ["reason"], registry=registry)
    for reason in RejectReason:
        counter.labels(reason=reason.value)
    return counter


@dataclass
class StepRun:
    """One step executing on a worker; :meth:`ended` records its outcome (see :meth:`WorkerMetrics.step`)."""

    task: str
    end: StepEnd = StepEnd.INTERRUPTED
    duration_s: float | None = None

    def ended(self, *, succeeded: bool, duration_s: float) -> None:
        self.end = StepEnd.SUCCEEDED if succeeded else StepEnd.FAILED
        self.duration_s = duration_s


class WorkerMetrics:
    """A worker's metrics (see the module docstring), in :attr:`registry`."""

    def __init__(self, device: str, slots: int) -> None:
        self.device = device
        self.slots = slots
        self.registry = CollectorRegistry()
        _standard_collectors(self.registry)
        self._started = Counter("theodolite_steps_started_total", "Steps that started executing on this worker.",
                                ["task", "device"], registry=self.registry)
        self._finished = Counter("theodolite_steps_finished_total", "Steps that ended executing on this worker, by how "
                                 "they ended (succeeded, failed, interrupted).", ["task", "device", "state"], registry=self.registry)
        self._duration = Histogram("theodolite_step_duration_seconds", "Execution time of finished steps (inputs read and "
                                   "task run, the task's own retries included).", ["task"], buckets=STEP_DURATION_BUCKETS_S,
                                   registry=self.registry)
        Gauge("theodolite_worker_slots", "Execution slots of this worker (--concurrency).", ["device"],
              registry=self.registry).labels(device=device).set(slots)
        self._executing = 0
        Gauge("theodolite_worker_slots_busy", "Execution slots holding a step now.", ["device"],
              registry=self.registry).labels(device=device).set_function(lambda: min(self._executing, self.slots))
        self._rejected = _rejected(self.registry)

    @property
    def executing(self) -> int:
        """Steps executing now (more than :attr:`slots` while some wait for a slot)."""
        return self._executing

    @contextlib.contextmanager
    def step(self, task: str) -> Iterator[StepRun]:
        """Count a step from its start to its end; call ``ended`` on what it yields once the
        outcome is known (a step left without one counts as interrupted)."""
        self._started.labels(task=task, device=self.device).inc()
        self._executing += 1
        run = StepRun(task)
        try:
            yield run
        finally:
            self._executing -= 1
            self._finished.labels(task=task, device=self.device, state=run.end.value).inc()
            if run.duration_s is not None:
                self._duration.labels(task=task).observe(run.duration_s)

    def rejected(self, reason: RejectReason) -> None:
        self._rejected.labels(reason=reason.value).inc()


@dataclass(frozen=True)
class PlannerView:
    """What the planner's gauges show, read from the planner at each scrape."""

    active_jobs: int = 0
    writer_backlog: int = 0
    lease_held: bool = False
    ready: Mapping[str, tuple[int, float]] = field(default_factory=dict)
    """Per device: (ready steps, age in seconds of the oldest): ``ReadyTracker.by_device``."""


class PlannerStateCollector(Collector):
    """The planner's gauges, computed from :class:`PlannerView` when scraped (nothing to keep
    in step). A device once seen keeps its series, at 0 when it has no ready step."""

    def __init__(self, view: Callable[[], PlannerView]) -> None:
        self._view = view
        self._devices: set[str] = set()

    def describe(self) -> Iterable[Metric]:
        return self._families(PlannerView(), [])

    def collect(self) -> Iterable[Metric]:
        view = self._view()
        self._devices.update(view.ready)
        return self._families(view, sorted(self._devices))

    @staticmethod
    def _families(view: PlannerView, devices: list[str]) -> list[Metric]:
        ready = GaugeMetricFamily("theodolite_ready_steps", "Steps the planner published and no worker has reported "
                                  "started (nor finished) yet, per device queue.", labels=["device"])
        oldest = GaugeMetricFamily("theodolite_oldest_ready_step_age_seconds", "How long the oldest ready step of the device "
                                   "has waited since it was published (0 when none).", labels=["device"])
        for device in devices:
            count, age_s = view.ready.get(device, (0, 0.0))
            ready.add_metric([device], count)
            oldest.add_metric([device], age_s if count else 0.0)
        return [
            ready, oldest,
            GaugeMetricFamily("theodolite_planner_active_jobs", "Jobs this planner is running.", value=view.active_jobs),
            GaugeMetricFamily("theodolite_planner_writer_backlog", "MongoDB writes queued on the planner's ordered writer.",
                              value=view.writer_backlog),
            GaugeMetricFamily("theodolite_planner_lease_held", "1 while this planner holds the namespace's lease (acts), 0 "
                              "while it stands by.", value=1 if view.lease_held else 0),
        ]


class PlannerMetrics:
    """A planner's metrics (see the module docstring), in :attr:`registry`."""

    def __init__(self, view: Callable[[], PlannerView]) -> None:
        self.registry = CollectorRegistry()
        _standard_collectors(self.registry)
        self.registry.register(PlannerStateCollector(view))
        self._rejected = _rejected(self.registry)
        self._dead = Counter("theodolite_messages_dead_lettered_total", "Dead-lettered messages the planner received, by "
                             "RabbitMQ's reason.", ["reason"], registry=self.registry)
        for reason in DeadLetterReason:
            self._dead.labels(reason=reason.value)
        self._jobs = Counter("theodolite_jobs_finished_total", "Jobs this planner finished, by terminal state.", ["state"],
                             registry=self.registry)
        for state in sorted(FINISHED_JOB_STATES):
            self._jobs.labels(state=state.value)

    def rejected(self, reason: RejectReason) -> None:
        self._rejected.labels(reason=reason.value).inc()

    def dead_lettered(self, reason: DeadLetterReason) -> None:
        self._dead.labels(reason=reason.value).inc()

    def job_finished(self, state: JobState) -> None:
        self._jobs.labels(state=state.value).inc()
