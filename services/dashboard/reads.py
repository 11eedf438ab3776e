"""What the dashboard's API reads from MongoDB, shaped as JSON for its pages.

The views are those of ``theodolite jobs`` and ``theodolite status`` (:mod:`services.job_views`
over :mod:`shared.store.queries`), so a page and the CLI never disagree; this module only
picks what a page needs and keeps answers small:

* the job list: :class:`~services.job_views.JobRow` per job, with the filters of
  ``theodolite jobs`` (:func:`job_query`);
* one job: its :class:`~services.job_views.JobStatus` with the steps as a compact map (state,
  task, device, attempt; a job may have 100,000 steps), its graph (laid out by
  :mod:`services.dashboard.graph`) and its run number; step documents are read without their
  outputs or metrics;
* one step: its :class:`~services.job_views.StepView`, the traceback of its failure, what its
  attempts printed (:meth:`~shared.store.logs.LogsMixin.read_logs`, at most
  :data:`MAX_LOG_CHARS` in all, the newest attempt first served) and its metric points.

Every read goes through the store's retried reads: a MongoDB outage longer than the store
waits raises, and the app answers 503.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from services.job_views import JobStatus, StepView, job_row, job_status, step_view
from services.monitor_tracks import StepTrack
from shared.constants import STEPS
from shared.document.model import JobDocument
from shared.outages import retried_read
from shared.states import JobState, StepState
from shared.store import Store
from shared.store.logs import StepLog
from shared.store.queries import JobQuery

MAX_LIMIT = 1000
"""The most jobs one listing returns."""
MAX_LOG_CHARS = 200_000
"""The most log text one step's answer carries (older attempts are cut first, from their start)."""
LOG_STREAM = "output"
"""A capture holds what the task wrote to stdout and stderr and logged, interleaved."""
_LIGHT_STEP = {"outputs": 0, "metrics": 0, "logged_artifacts": 0, "lease_until": 0, "publisher": 0}
_ONE_STEP = {"logged_artifacts": 0, "lease_until": 0, "publisher": 0}
_NOT_STARTED = frozenset({StepState.PENDING, StepState.QUEUED, StepState.WAITING})


def with_running(view: StepView, heard: StepTrack | None, now: float) -> StepView:
    """``view`` as the events tell it: a worker stores a step once it finished, so a step it
    runs is stored as not started; the live feed heard its ``step.running`` (and who runs it)."""
    if heard is None or view.state not in _NOT_STARTED:
        return view
    since = heard.running_since
    return view.model_copy(update={"state": StepState.RUNNING, "worker": heard.worker or view.worker,
                                   "started_at": None if since is None else datetime.fromtimestamp(since, UTC),
                                   "duration_s": None if since is None else max(0.0, now - since), "retry_at": None})


def status_with_running(status: JobStatus, running: Mapping[str, StepTrack], now: float) -> JobStatus:
    """The job's status with the steps heard running shown running (:func:`with_running`)."""
    if not running:
        return status
    steps = {name: with_running(view, running.get(name), now) for name, view in status.steps.items()}
    return status.model_copy(update={"steps": steps})


class NotFound(LookupError):
    """No such job or step; the message says which."""


def job_query(states: Sequence[str], labels: Sequence[str], since: str | None, limit: str | None, now: float) -> JobQuery:
    """The query of ``GET /api/jobs?state=S&label=K=V&since=...&limit=N`` (the filters of
    ``theodolite jobs``). Raises ValueError with one line saying what is wrong."""
    from services.jobs_cli import DEFAULT_LIMIT, parse_label_filters, parse_since

    states = [state for state in states if state.strip()]  # a form's "any" sends an empty value
    labels = [label for label in labels if label.strip()]
    limit = limit if limit is not None and limit.strip() else None
    try:
        wanted_states = [JobState(state) for state in states]
    except ValueError:
        raise ValueError(f"state: expected one of {', '.join(s.value for s in JobState)}, got {', '.join(states)}") from None
    try:
        count = DEFAULT_LIMIT if limit is None else int(limit)
    except ValueError:
        raise ValueError(f"limit: expected a whole number, got {limit!r}") from None
    if not 1 <= count <= MAX_LIMIT:
        raise ValueError(f"limit: expected 1 to {MAX_LIMIT}, got {count}")
    try:
        wanted_labels = parse_label_filters(labels)
    except ValueError as problem:
        raise ValueError(f"label: {problem}") from None
    try:
        after = None if since is None or not since.strip() else parse_since(since, now)
    except ValueError as problem:
        raise ValueError(f"since: {problem}") from None
    return JobQuery(states=wanted_states, labels=wanted_labels, since=after, limit=count)


def compact_steps(status: JobStatus) -> dict[str, dict[str, Any]]:
    """Each step's state, task, device and attempt (what a page draws a node with)."""
    return {name: {"state": view.state.value, "task": view.task, "device": view.device, "attempt": view.attempt}
            for name, view in status.steps.items()}


def graph_inputs(status: JobStatus, document: JobDocument | None) -> tuple[dict[str, list[str]], dict[str, str | None],
                                                                            dict[str, str]]:
    """What :func:`services.dashboard.graph.layout` takes: each step's parents (steps of the
    job only), its task and its state."""
    known = set(status.steps)
    parents: dict[str, list[str]] = {}
    for name in status.steps:
        step = document.steps.get(name) if document is not None else None
        parents[name] = [d for d in step.dependencies if d in known] if step is not None else []
    tasks = {name: view.task for name, view in status.steps.items()}
    states = {name: view.state.value for name, view in status.steps.items()}
    return parents, tasks, states


def metric_series(stored: Any) -> dict[str, list[list[float]]]:
    """A step's stored metric points (``[{"name", "value", "step", "at"}]``) as ``{name: [[x,
    value], ...]}``, ``x`` the point's step, else its index among that metric's points."""
    series: dict[str, list[list[float]]] = {}
    for point in stored if isinstance(stored, list) else []:
        if not isinstance(point, Mapping) or not point.get("name"):
            continue
        value = point.get("value")
        if not isinstance(value, int | float) or isinstance(value, bool):
            continue
        points = series.setdefault(str(point["name"]), [])
        x = point.get("step")
        points.append([x if isinstance(x, int) and not isinstance(x, bool) else len(points), float(value)])
    return series


def capped_logs(logs: Sequence[StepLog], budget: int = MAX_LOG_CHARS) -> list[dict[str, Any]]:
    """The logs as JSON, in their order, at most ``budget`` characters of text in all: the newest
    attempts are served first, an older text that does not fit keeps its end
    (``cut_chars`` says how much was left out)."""
    shown: list[dict[str, Any]] = []
    for log in reversed(logs):
        text = log.text
        kept = text[len(text) - budget:] if len(text) > budget else text
        budget -= len(kept)
        entry = {key: value for key, value in dataclasses.asdict(log).items() if key not in ("job_id", "step", "text")}
        shown.append({"stream": LOG_STREAM, "step": log.step, "text": kept, "cut_chars": len(text) - len(kept), **entry})
    shown.reverse()
    return shown


def failure_traceback(doc: Mapping[str, Any] | None, logs: Sequence[StepLog]) -> str | None:
    """The traceback of a failed step: stored with its error, else its last attempt's log's."""
    if doc is None or doc.get("state") != "failed":
        return None
    error = doc.get("error")
    if isinstance(error, Mapping) and isinstance(error.get("traceback"), str) and error["traceback"]:
        return str(error["traceback"])
    for log in reversed(logs):
        if log.traceback:
            return log.traceback
    return None


@retried_read
async def _step_documents(store: Store, job_id: str) -> list[dict[str, Any]]:
    """A job's step documents without outputs, metrics or artifacts (a job page shows states)."""
    return [doc async for doc in store.db[STEPS].find({"job": job_id}, _LIGHT_STEP)]


@retried_read
async def _step_document(store: Store, job_id: str, step: str) -> dict[str, Any] | None:
    found: dict[str, Any] | None = await store.db[STEPS].find_one({"job": job_id, "step": step}, _ONE_STEP)
    return found


class Reads:
    """The API's reads over one open :class:`~shared.store.Store`."""

    def __init__(self, store: Store) -> None:
        self.store = store

    async def jobs(self, query: JobQuery, now: float) -> list[dict[str, Any]]:
        docs = await self.store.find_jobs(query)
        counts = await self.store.step_counts([doc["_id"] for doc in docs])
        return [job_row(doc, counts.get(doc["_id"]), now).model_dump(mode="json") for doc in docs]

    async def job(self, job_id: str, now: float, running: Mapping[str, StepTrack] | None = None) -> dict[str, Any]:
        """``{"job", "graph", "run"}`` of ``GET /api/jobs/{id}``; :class:`NotFound` if none.
        ``running``: the steps the live feed heard running (:func:`status_with_running`)."""
        from services.dashboard.graph import layout

        found = await self.store.job_with_document(job_id)
        if found is None:
            raise NotFound(f"no job named {job_id}")
        doc, document = found
        steps = await _step_documents(self.store, job_id)
        dispatched = await self.store.dispatched_steps(job_id)
        status = status_with_running(job_status(doc, document, steps, dispatched, now), running or {}, now)
        shown = status.model_dump(mode="json")
        shown["steps"] = compact_steps(status)
        return {"job": shown, "graph": layout(*graph_inputs(status, document)), "run": int(doc.get("run") or 1)}

    async def step(self, job_id: str, step: str, now: float, heard: StepTrack | None = None) -> dict[str, Any]:
        """``{"step", "traceback", "logs", "metrics"}`` of ``GET /api/jobs/{id}/steps/{step}``."""
        found = await self.store.job_with_document(job_id)
        if found is None:
            raise NotFound(f"no job named {job_id}")
        doc, document = found
        stored = await _step_document(self.store, job_id, step)
        if stored is None and step not in (doc.get("step_names") or []):
            raise NotFound(f"no step named {step} in job {job_id}")
        dispatched = stored is None and step in await self.store.dispatched_steps(job_id)
        view = with_running(step_view(step, stored, document, dispatched, now), heard, now)
        logs = await self.store.read_logs(job_id, step)
        return {"step": view.model_dump(mode="json"), "traceback": failure_traceback(stored, logs),
                "logs": capped_logs(logs), "metrics": metric_series((stored or {}).get("metrics"))}
