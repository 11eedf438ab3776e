"""The events other systems read: job and step events, and workers' presence (docs/events.md).

They travel on the ``<ns>.events`` topic exchange under ``<scope>.<id>.<type>`` keys
(:mod:`shared.constants`) and are kept in the ``<ns>.events.history`` stream. Unlike the
messages services send each other, events are made for readers we do not know, so:

* every field is always present in a published event (the exported JSON Schema, in
  serialization mode, lists them all as required; ``seq`` is null only for events that are not
  about a job);
* readers ignore fields they do not know (``extra="ignore"``): adding a field or an event type
  keeps :data:`EVENT_SCHEMA_VERSION`; removing or renaming a field, or changing what one
  means, bumps it, and a reader of version N refuses version N+1 (``Literal``);
* an event's ``detail`` is bounded (:func:`bounded_detail`): long texts and lists are cut,
  never refused, so that no producer fails on a large error message. Its other fields come
  from messages that are bounded already (job ids, step names, a worker's notice), and are
  not limited again here: the planner must never fail to make an event.
"""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

EVENT_SCHEMA_VERSION: Literal[1] = 1
"""The ``schema_version`` of every event (see the module docstring for when it changes)."""
MAX_DETAIL_BYTES = 8192
"""An event's ``detail`` as JSON is at most this long (cut by :func:`bounded_detail`)."""
MAX_TEXT_CHARS = 2000
MAX_ITEMS = 50
MAX_BATCH_EVENTS = 1000
"""Events per :class:`EventBatch`: with bounded details a batch stays well below the broker's
and the readers' message size limits."""
EventType = Annotated[str, Field(pattern=r"^[a-z_]+\.[a-z_]+$", max_length=100)]


class _EventModel(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, json_schema_serialization_defaults_required=True)

    schema_version: Literal[1] = Field(default=EVENT_SCHEMA_VERSION, description=(
        "The event schema's version: the same while changes are additive (new fields, new types), "
        "bumped when a field is removed, renamed or changes meaning."))


class Event(_EventModel):
    """A state change of a job or a step (or a message the planner refused), for monitors."""

    kind: Literal["event"] = "event"
    type: EventType = Field(description=(
        "job.<state> (job.rejected: the submission was invalid), step.<state>, step.retrying, "
        "step.timeout_warning, message.rejected, message.dead_lettered"))
    job_id: str | None = Field(default=None, max_length=100)
    seq: int | None = Field(default=None, ge=1, description=(
        "The job's event number, from 1, one more per event of the job: a consumer bound to the whole job sees "
        "1, 2, 3, ... and knows it missed events when a number is skipped (after a planner failover the "
        "numbers jump ahead: read the job's state from MongoDB then). Never reused. Null only for events "
        "that are not about a job."))
    step: str | None = None
    state: str | None = Field(default=None, max_length=50)
    attempt: int | None = None
    worker_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict, description=(
        f"Depends on the type; at most {MAX_DETAIL_BYTES} bytes as JSON (longer texts and lists are cut, "
        "and \"truncated\": true is added)."))
    at: float = Field(default_factory=time.time, description="When it happened: seconds since the epoch (the planner's clock).")

    @field_validator("detail")
    @classmethod
    def _bounded(cls, value: dict[str, Any]) -> dict[str, Any]:
        return bounded_detail(value)


class EventBatch(_EventModel):
    """Consecutive events of one job and one type, in ``seq`` order, as one message (a
    5,000-step fan-out queues 5,000 steps at once)."""

    kind: Literal["event.batch"] = "event.batch"
    job_id: str | None = Field(default=None, max_length=100)
    events: list[Event] = Field(min_length=1, max_length=MAX_BATCH_EVENTS)


class WorkerEventType(StrEnum):
    ONLINE = "worker.online"
    """The worker consumes its device queue (after connecting)."""
    HEARTBEAT = "worker.heartbeat"
    """Every ``heartbeat_s`` while it runs."""
    OFFLINE = "worker.offline"
    """It stopped cleanly (best effort: a killed worker only stops beating)."""


class WorkerEvent(_EventModel):
    """A worker's presence and load. A monitor that hears no heartbeat for about three
    ``heartbeat_s`` may consider the worker gone."""

    kind: Literal["worker.event"] = "worker.event"
    type: WorkerEventType
    worker_id: str
    device: str = Field(description="Its device type (the routing key has it with dots as underscores).")
    seq: int = Field(ge=1, description="Per worker, from 1 when it starts: a gap means missed heartbeats.")
    slots: int = Field(ge=1, description="Steps it runs at once (its concurrency).")
    busy: int = Field(ge=0, description="Slots running a step now (at most slots).")
    held: int = Field(ge=0, description="Steps it holds now: running, or taken from its queue and waiting for a slot.")
    load: float = Field(ge=0, description="held / slots: above 1, steps wait on this worker.")
    completed: int = Field(ge=0, description="Steps it finished and recorded since it started.")
    host: str = Field(max_length=255)
    pid: int
    host_load_1m: float | None = Field(default=None, description="The host's 1-minute load average (null where unknown).")
    heartbeat_s: float = Field(gt=0, description="Its heartbeat interval.")
    at: float = Field(default_factory=time.time, description="Seconds since the epoch (the worker's clock).")


def bounded_detail(detail: dict[str, Any]) -> dict[str, Any]:
    """``detail`` if its JSON fits :data:`MAX_DETAIL_BYTES`; else with texts and lists cut
    ever shorter until it fits (and ``"truncated": true``); else only
    ``{"truncated": true, "bytes": N}``."""
    if not detail:
        return detail
    size = len(json.dumps(detail, default=str))
    if size <= MAX_DETAIL_BYTES:
        return detail
    for text_chars, items in ((MAX_TEXT_CHARS, MAX_ITEMS), (500, 20), (100, 10)):
        clipped = _clip(detail, 0, text_chars, items)
        if isinstance(clipped, dict) and len(json.dumps(clipped, default=str)) <= MAX_DETAIL_BYTES - 20:
            return {**clipped, "truncated": True}
    return {"truncated": True, "bytes": size}


def _clip(value: Any, depth: int, text_chars: int, items: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= text_chars else value[:text_chars] + "..."
    if depth >= 5:
        return value if isinstance(value, int | float | bool) or value is None else str(value)[:text_chars]
    if isinstance(value, dict):
        return {str(k)[:200]: _clip(v, depth + 1, text_chars, items) for k, v in list(value.items())[:items]}
    if isinstance(value, list | tuple):
        return [_clip(v, depth + 1, text_chars, items) for v in value[:items]]
    return value
