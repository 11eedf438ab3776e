"""Events other systems read (issue 10, item 4): bounded, versioned, numbered, routable;
workers' progress for the planner; ``theodolite schema`` exports them all."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from services.cli import main
from shared.constants import job_event_key, key_word, planner_event_key, worker_event_key
from shared.events import MAX_BATCH_EVENTS, MAX_DETAIL_BYTES, Event, EventBatch, WorkerEvent, WorkerEventType
from shared.messages import (
    NoticeBatch,
    Progress,
    ProgressBatch,
    StepNotice,
    StepProgress,
    encode,
    json_schemas,
    parse_notices,
    parse_reports,
)
from shared.states import StepState


def _worker_event(**fields: object) -> WorkerEvent:
    values: dict[str, object] = {"type": WorkerEventType.HEARTBEAT, "worker_id": "cpu-h-1", "device": "cpu", "seq": 1, "slots": 2,
                                 "busy": 1, "held": 1, "load": 0.5, "completed": 3, "host": "h", "pid": 1, "heartbeat_s": 5.0}
    values.update(fields)
    return WorkerEvent(**values)  # type: ignore[arg-type]


def test_a_long_detail_is_cut_never_refused() -> None:
    event = Event(type="step.failed", job_id="j", seq=4, detail={"error": {"type": "E", "message": "x" * 100_000}, "duration_s": 1.5})
    assert len(json.dumps(event.detail)) <= MAX_DETAIL_BYTES
    assert event.detail["truncated"] is True and event.detail["duration_s"] == 1.5
    assert event.detail["error"]["message"].startswith("xxxx") and event.detail["error"]["type"] == "E"
    many = Event(type="job.rejected", job_id="j", seq=1, detail={"problems": [f"problem {i}: " + "y" * 300 for i in range(10_000)]})
    assert len(json.dumps(many.detail)) <= MAX_DETAIL_BYTES and len(many.detail["problems"]) < 10_000
    small = {"duration_s": 0.25}
    assert Event(type="step.succeeded", detail=small).detail == small


def test_batches_are_bounded_and_events_name_their_type() -> None:
    event = Event(type="step.queued", job_id="j", seq=1)
    with pytest.raises(ValidationError):
        EventBatch(job_id="j", events=[event] * (MAX_BATCH_EVENTS + 1))
    with pytest.raises(ValidationError):
        EventBatch(job_id="j", events=[])
    with pytest.raises(ValidationError):
        Event(type="not a type")
    with pytest.raises(ValidationError):
        Event(type="step.queued", seq=0)


def test_readers_ignore_new_fields_but_refuse_another_schema_version() -> None:
    body = json.loads(encode(Event(type="step.queued", job_id="j", seq=3)))
    assert body["schema_version"] == 1 and body["seq"] == 3 and "at" in body
    assert Event.model_validate({**body, "added_later": 1}).seq == 3
    with pytest.raises(ValidationError):
        Event.model_validate({**body, "schema_version": 2})


def test_worker_events_carry_device_slots_and_load() -> None:
    body = json.loads(encode(_worker_event()))
    assert (body["type"], body["device"], body["slots"], body["busy"], body["seq"]) == ("worker.heartbeat", "cpu", 2, 1, 1)
    with pytest.raises(ValidationError):
        _worker_event(slots=0)
    with pytest.raises(ValidationError):
        _worker_event(type="worker.asleep")


def test_schemas_export_events_as_published_every_field_required() -> None:
    schemas = json_schemas()
    for kind in ("event", "worker.event"):
        assert {"schema_version", "seq", "at", "type"} <= set(schemas[kind]["required"]), kind
    event_seq = schemas["event"]["properties"]["seq"]
    assert {"type": "null"} in event_seq["anyOf"], "null for events not about a job"
    assert schemas["worker.event"]["properties"]["seq"]["type"] == "integer"
    assert {"device", "slots", "busy", "load", "heartbeat_s"} <= set(schemas["worker.event"]["required"])
    assert "events" in schemas["event.batch"]["required"]
    assert {"job_id", "step", "attempt", "worker_id", "progress"} <= set(schemas["step.progress"]["required"])
    assert "progress" in schemas["step.done.batch"]["properties"]


def test_theodolite_schema_writes_every_message_and_event(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["schema", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    written = {p.name for p in tmp_path.iterdir()}
    assert {"event.schema.json", "event.batch.schema.json", "worker.event.schema.json", "step.progress.schema.json",
            "step.progress.batch.schema.json"} <= written
    event = json.loads((tmp_path / "event.schema.json").read_text())
    assert "seq" in event["required"] and "schema_version" in event["required"]


def test_progress_travels_alone_or_ahead_of_notices() -> None:
    running = StepProgress(job_id="j", step="a", attempt=1, worker_id="w", progress=Progress.RUNNING)
    notice = StepNotice(job_id="j", step="a", attempt=1, outcome=StepState.SUCCEEDED, worker_id="w")
    assert parse_reports(encode(NoticeBatch(notices=[notice], progress=[running])), 10_000) == ([notice], [running])
    assert parse_reports(encode(ProgressBatch(progress=[running, running])), 10_000) == ([], [running, running])
    assert parse_reports(encode(running), 10_000) == ([], [running])
    assert parse_notices(encode(ProgressBatch(progress=[running])), 10_000) == []
    assert parse_notices(encode(NoticeBatch(notices=[notice], progress=[running])), 10_000) == [notice]


def _binds(pattern: str, key: str) -> bool:
    """RabbitMQ's topic matching: ``*`` one word, ``#`` zero or more."""
    words = [re.escape(w) if w not in ("*", "#") else w for w in pattern.split(".")]
    regex = r"\.".join(w.replace("*", r"[^.]+") if w == "*" else w for w in words)
    regex = regex.replace(r"\.#", r"(\.[^.]+)*").replace(r"#\.", r"([^.]+\.)*").replace("#", r"[^.]*(\.[^.]+)*")
    return re.fullmatch(regex, key) is not None


def test_routing_keys_bind_one_job_one_kind_one_device_or_everything() -> None:
    keys = {
        "j1 running": job_event_key("j1", "job.running"),
        "j1 step failed": job_event_key("j1", "step.failed"),
        "j2 step failed": job_event_key("j2", "step.failed"),
        "j2 failed": job_event_key("j2", "job.failed"),
        "gpu heartbeat": worker_event_key("gpu", "worker.heartbeat"),
        "gpu.a100 online": worker_event_key("gpu.a100", "worker.online"),
        "rejected": planner_event_key("planner-host.example-1", "message.rejected"),
    }

    def bound(pattern: str) -> set[str]:
        return {name for name, key in keys.items() if _binds(pattern, key)}

    assert bound("job.j1.#") == {"j1 running", "j1 step failed"}
    assert bound("*.*.step.failed") == {"j1 step failed", "j2 step failed"}
    assert bound("job.*.job.*") == {"j1 running", "j2 failed"}
    assert bound("worker.gpu.#") == {"gpu heartbeat"} and bound("worker.gpu_a100.#") == {"gpu.a100 online"}
    assert bound("*.*.worker.*") == {"gpu heartbeat", "gpu.a100 online"}
    assert bound("#") == set(keys)
    assert all(len(key.split(".")) == 4 for key in keys.values()), "<scope>.<id>.<type in two words>"
    assert key_word("a.b") == "a_b"
