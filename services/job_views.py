"""What ``theodolite jobs`` and ``theodolite status`` report, built from stored documents.

Pure: the job, step and dispatch documents a query returned (:mod:`shared.store.queries`) and
the time ``now`` go in; pydantic views come out, whose ``model_dump(mode="json")`` is the
``--json`` output (times as ISO 8601 UTC, durations in seconds) and which
:mod:`services.job_tables` draws for people. The keys are described in docs/operations.md.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.document.model import JobDocument
from shared.states import FINISHED_STEP_STATES, ErrorKind, JobState, StepState
from shared.store.queries import StepCounts
from shared.store.summary import shorten, summarize_outputs

MAX_MESSAGE_CHARS = 200
"""An error message is shown as its first line, cut to this many characters."""


class _View(BaseModel):
    model_config = ConfigDict(frozen=True)


class JobErrorView(_View):
    step: str | None
    type: str
    message: str


class StepErrorView(_View):
    kind: str
    """An :class:`~shared.states.ErrorKind` value (``task``, ``timeout``, ``lost``, ...)."""
    type: str
    message: str


class AttemptView(_View):
    """An earlier attempt of a step that failed and was retried."""

    attempt: int | None
    worker: str | None
    finished_at: datetime | None
    duration_s: float | None
    error: StepErrorView | None


class StepView(_View):
    task: str | None
    state: StepState
    attempt: int | None
    device: str | None
    worker: str | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    retry_at: datetime | None
    error: StepErrorView | None
    outputs: dict[str, dict[str, Any]]
    attempts: list[AttemptView]
    metrics: dict[str, MetricSummary] = {}
    """What the task logged with ``context.log_metric`` (its last attempt), by metric name."""


class MetricSummary(_View):
    """A logged metric: its last value (and that value's step), how many points, the range."""

    last: float
    step: int | None
    points: int
    min: float
    max: float


def metric_summaries(stored: Any) -> dict[str, MetricSummary]:
    """The stored points (``[{"name", "value", "step", "at"}]``) summarised per metric name."""
    by_name: dict[str, list[Mapping[str, Any]]] = {}
    for point in stored if isinstance(stored, list) else []:
        if isinstance(point, Mapping) and isinstance(point.get("value"), (int, float)) and point.get("name"):
            by_name.setdefault(str(point["name"]), []).append(point)
    return {name: MetricSummary(last=float(points[-1]["value"]), step=points[-1].get("step"), points=len(points),
                                min=min(float(p["value"]) for p in points), max=max(float(p["value"]) for p in points))
            for name, points in by_name.items()}


class JobRow(_View):
    """One job of ``theodolite jobs``."""

    job_id: str
    name: str | None
    state: JobState
    steps_done: int
    steps_total: int
    steps_failed: int
    failed_step: str | None
    submitted_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    duration_s: float | None
    labels: dict[str, str]


class JobStatus(JobRow):
    """One job and each of its steps (``theodolite status``)."""

    error: JobErrorView | None
    problems: list[str] = Field(default_factory=list)
    steps: dict[str, StepView]


def timestamp(value: Any) -> datetime | None:
    """Seconds since the epoch (as stored) as an aware UTC datetime."""
    return datetime.fromtimestamp(float(value), UTC) if isinstance(value, (int, float)) else None


def first_line(text: Any) -> str:
    lines = [line.strip() for line in str(text or "").splitlines() if line.strip()]
    return shorten(lines[0] if lines else "", MAX_MESSAGE_CHARS)


def _seconds(value: Any) -> float | None:
    return round(float(value), 3) if isinstance(value, (int, float)) else None


def _job_error(doc: Mapping[str, Any]) -> JobErrorView | None:
    error = doc.get("error")
    if not isinstance(error, Mapping):
        return None
    return JobErrorView(step=error.get("step"), type=str(error.get("type", "Error")), message=first_line(error.get("message")))


def step_error(error: Any) -> StepErrorView | None:
    if not isinstance(error, Mapping) or not error:
        return None
    return StepErrorView(kind=str(error.get("kind") or ErrorKind.TASK), type=str(error.get("type", "Error")),
                         message=first_line(error.get("message")))


def _job_times(doc: Mapping[str, Any], now: float) -> dict[str, Any]:
    started, finished = doc.get("started_at"), doc.get("finished_at")
    end = finished if isinstance(finished, (int, float)) else (None if JobState(doc["state"]).finished else now)
    duration = end - started if isinstance(started, (int, float)) and end is not None else None
    return {"submitted_at": timestamp(doc.get("submitted_at", doc.get("created_at"))), "started_at": timestamp(started),
            "finished_at": timestamp(finished), "duration_s": _seconds(duration)}


def _failed_step(doc: Mapping[str, Any], first_failed: str | None) -> str | None:
    if doc["state"] == JobState.REJECTED:
        return None
    error = doc.get("error")
    return (error.get("step") if isinstance(error, Mapping) else None) or first_failed


def job_row(doc: Mapping[str, Any], counts: StepCounts | None, now: float) -> JobRow:
    """A listed job (a document of :meth:`~shared.store.queries.QueriesMixin.find_jobs`)."""
    counts = counts or StepCounts()
    total = doc.get("step_count")
    return JobRow(job_id=str(doc["_id"]), name=doc.get("name"), state=JobState(doc["state"]), steps_done=counts.done,
                  steps_total=int(total) if isinstance(total, int) else len(doc.get("step_names") or []),
                  steps_failed=counts.failed, failed_step=_failed_step(doc, counts.first_failed),
                  labels=dict(doc.get("labels") or {}), **_job_times(doc, now))


def step_view(name: str, doc: Mapping[str, Any] | None, document: JobDocument | None, dispatched: bool, now: float) -> StepView:
    """One step: its stored document, or (none yet) pending, or queued once dispatched."""
    task = document.steps[name].task if document is not None and name in document.steps else None
    device = document.binding(name).device if task is not None and document is not None and task in document.tasks else None
    if doc is None:
        state = StepState.QUEUED if dispatched else StepState.PENDING
        return StepView(task=task, state=state, attempt=None, device=device, worker=None, started_at=None, finished_at=None,
                        duration_s=None, retry_at=None, error=None, outputs={}, attempts=[])
    state = StepState(doc["state"])
    started, finished, ran = doc.get("started_at"), doc.get("finished_at"), doc.get("duration_s")
    if state in (StepState.SUCCEEDED, StepState.FAILED) and isinstance(ran, (int, float)) and isinstance(finished, (int, float)):
        started, duration = finished - ran, ran  # the final attempt's run (a claim's time may be an earlier attempt's)
    elif state is StepState.RUNNING and isinstance(started, (int, float)):
        duration = now - started
    else:
        started = started if state is StepState.RUNNING or state in FINISHED_STEP_STATES else None
        duration = None
    return StepView(
        # attempt 0: the planner itself stored the step (skipped, cancelled, waiting), with no attempt
        task=task, state=state, attempt=doc.get("attempt") or None, device=device, worker=doc.get("worker"),
        started_at=timestamp(started), finished_at=timestamp(finished), duration_s=_seconds(duration),
        retry_at=timestamp(doc.get("retry_at")) if state in (StepState.QUEUED, StepState.WAITING) else None,
        error=step_error(doc.get("error")) if state is StepState.FAILED else None,
        outputs=summarize_outputs(doc.get("outputs")) if state is StepState.SUCCEEDED else {},
        attempts=attempt_history(doc.get("attempts")),
        metrics=metric_summaries(doc.get("metrics")),
    )


def attempt_history(stored: Any) -> list[AttemptView]:
    """A step's earlier attempts, oldest first: stored as a mapping keyed by attempt number
    (``{"1": {...}}``), or as a list by older writers."""
    entries = stored.values() if isinstance(stored, Mapping) else stored if isinstance(stored, list) else []
    return sorted((_attempt(a) for a in entries if isinstance(a, Mapping)), key=lambda a: a.attempt or 0)


def _attempt(doc: Mapping[str, Any]) -> AttemptView:
    return AttemptView(attempt=doc.get("attempt"), worker=doc.get("worker"), finished_at=timestamp(doc.get("finished_at")),
                       duration_s=_seconds(doc.get("duration_s")), error=step_error(doc.get("error")))


def job_status(doc: Mapping[str, Any], document: JobDocument | None, step_docs: Iterable[Mapping[str, Any]],
               dispatched: set[str], now: float) -> JobStatus:
    """A job and every step of it, in document order (steps stored under other names last)."""
    stored = {str(d["step"]): d for d in step_docs}
    names = list(doc.get("step_names") or [])
    names += sorted(set(stored) - set(names))
    steps = {name: step_view(name, stored.get(name), document, name in dispatched, now) for name in names}
    failures = sorted((d.get("finished_at") or 0.0, n) for n, d in stored.items() if d.get("state") == StepState.FAILED)
    counts = StepCounts(done=sum(1 for s in steps.values() if s.state in FINISHED_STEP_STATES),
                        failed=len(failures), first_failed=failures[0][1] if failures else None)
    row = job_row(doc, counts, now)
    return JobStatus(**row.model_dump(), error=_job_error(doc), problems=[str(p) for p in doc.get("problems") or []],
                     steps=steps)
