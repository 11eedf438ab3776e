"""`jobs` rows and `status` views built from stored documents, their JSON and their tables."""

from __future__ import annotations

import io
import json
import zlib
from datetime import UTC, datetime

import numpy as np
from rich.console import Console

from services.job_tables import format_duration, format_summary, format_time, print_jobs, print_status
from services.job_views import JobStatus, attempt_history, job_row, job_status
from shared import codec
from shared.document.model import JobDocument
from shared.store.queries import StepCounts, _unpacked
from tests.unit.conftest import check

NOW = 1_700_000_100.0
DOCUMENT = """tasks:
  add: {plugin: tp_tasks.tp_add, inputs: [{a: number}, {b: number}], outputs: {sum: number}}
graph:
  one:
    add: [1, 2]
  two:
    add: [$one, 2]
  three:
    add: [$two, 3]
  four:
    add: [$three, 4]
  five:
    add: [$four, 5]
"""
JOB_KEYS = ["job_id", "name", "state", "steps_done", "steps_total", "steps_failed", "failed_step", "submitted_at",
            "started_at", "finished_at", "duration_s", "labels"]
STEP_KEYS = ["task", "state", "attempt", "device", "worker", "started_at", "finished_at", "duration_s", "retry_at", "error",
             "outputs", "attempts", "metrics"]


def document() -> JobDocument:
    result = check(DOCUMENT)
    assert result.document is not None, result.issues
    return result.document


def running_job() -> tuple[dict, list[dict], set[str]]:
    """``one`` succeeded after a retry, ``two`` runs, ``three`` was dispatched, ``four`` and ``five`` wait."""
    job = {"_id": "j1", "name": "chain.yaml", "state": "running", "step_names": ["one", "two", "three", "four", "five"],
           "submitted_at": NOW - 100, "created_at": NOW - 99.5, "started_at": NOW - 99, "error": None,
           "labels": {"team": "[bold]vision[/]", "run": "a1"}}
    outputs = codec.encode({"sum": 3.0, "array": np.zeros((40, 40), np.float32)}, threshold_bytes=4096).tree
    steps = [
        {"_id": "j1:one", "job": "j1", "step": "one", "state": "succeeded", "attempt": 2, "worker": "cpu-h-1-abc",
         "started_at": NOW - 98, "finished_at": NOW - 90, "duration_s": 1.25, "outputs": outputs,
         "attempts": {"1": {"attempt": 1, "worker": "cpu-h-2-def", "finished_at": NOW - 95, "duration_s": 0.5,
                            "error": {"type": "ValueError", "message": "flaky\nsecond line", "traceback": "...", "kind": "task"}}}},
        {"_id": "j1:two", "job": "j1", "step": "two", "state": "running", "attempt": 1, "worker": "cpu-h-1-abc",
         "started_at": NOW - 64},
    ]
    return job, steps, {"one", "two", "three"}


def test_status_of_a_running_job() -> None:
    job, steps, dispatched = running_job()
    view = job_status(job, document(), steps, dispatched, NOW)
    data = view.model_dump(mode="json")
    assert list(data) == [*JOB_KEYS, "error", "problems", "steps"]
    assert data["state"] == "running" and data["steps_done"] == 1 and data["steps_total"] == 5 and data["failed_step"] is None
    assert data["duration_s"] == 99.0 and data["finished_at"] is None
    assert data["submitted_at"] == "2023-11-14T22:13:20Z" and data["labels"] == {"team": "[bold]vision[/]", "run": "a1"}
    assert list(data["steps"]) == ["one", "two", "three", "four", "five"]
    one, two = data["steps"]["one"], data["steps"]["two"]
    assert list(one) == STEP_KEYS
    assert one["state"] == "succeeded" and one["attempt"] == 2 and one["task"] == "add" and one["device"] == "cpu"
    assert one["duration_s"] == 1.25 and one["started_at"] == "2023-11-14T22:13:28.750000Z"  # finished - duration
    assert one["outputs"] == {"sum": {"type": "float", "value": 3.0},
                              "array": {"type": "ndarray", "dtype": "float32", "shape": [40, 40], "nbytes": 6400, "stored": "gridfs"}}
    assert one["attempts"] == [{"attempt": 1, "worker": "cpu-h-2-def", "finished_at": "2023-11-14T22:13:25Z", "duration_s": 0.5,
                                "error": {"kind": "task", "type": "ValueError", "message": "flaky"}}]
    assert two["state"] == "running" and two["worker"] == "cpu-h-1-abc" and two["duration_s"] == 64.0 and two["outputs"] == {}
    assert data["steps"]["three"]["state"] == "queued" and data["steps"]["three"]["attempt"] is None
    assert data["steps"]["four"]["state"] == "pending" and data["steps"]["four"]["worker"] is None
    json.dumps(data, allow_nan=False)


def test_status_of_a_failed_job() -> None:
    job = {"_id": "j2", "state": "failed", "step_names": ["a", "b", "c"], "created_at": NOW - 50, "started_at": NOW - 50,
           "finished_at": NOW - 40, "error": {"step": "a", "type": "RuntimeError", "message": "kaboom\nTraceback ..."}}
    steps = [
        {"job": "j2", "step": "a", "state": "failed", "attempt": 1, "worker": "gpu-x", "finished_at": NOW - 41, "duration_s": 3.0,
         "error": {"type": "StepTimeoutError", "message": "step 'a' exceeded its timeout of 3 s", "kind": "timeout"}},
        {"job": "j2", "step": "b", "state": "skipped", "attempt": 0, "finished_at": NOW - 40},
        {"job": "j2", "step": "c", "state": "queued", "attempt": 2, "worker": "cpu-y", "retry_at": NOW + 5, "duration_s": 0.1,
         "started_at": NOW - 45, "error": {"type": "OSError", "message": "x", "kind": "task"}},
    ]
    view = job_status(job, None, steps, set(), NOW)
    assert view.duration_s == 10.0 and view.steps_done == 2 and view.steps_failed == 1 and view.failed_step == "a"
    assert view.submitted_at == datetime.fromtimestamp(NOW - 50, UTC)  # no submitted_at stored: created_at
    assert view.error is not None and view.error.message == "kaboom"
    a, b, c = view.steps["a"], view.steps["b"], view.steps["c"]
    assert a.error is not None and (a.error.kind, a.error.type) == ("timeout", "StepTimeoutError") and a.task is None
    assert b.state == "skipped" and b.error is None and b.duration_s is None and b.attempt is None
    assert c.state == "queued" and c.error is None and c.started_at is None and c.duration_s is None  # waits for its retry
    assert c.retry_at == datetime.fromtimestamp(NOW + 5, UTC)


def test_status_of_a_rejected_job() -> None:
    job = {"_id": "j3", "state": "rejected", "name": "bad.yaml", "step_names": [], "problems": ["bad.yaml:3: graph.b: nope"],
           "error": {"step": "document", "type": "InvalidDocument", "message": "bad.yaml:3: graph.b: nope"},
           "created_at": NOW, "finished_at": NOW}
    view = job_status(job, None, [], set(), NOW)
    assert view.state == "rejected" and view.failed_step is None and view.problems == ["bad.yaml:3: graph.b: nope"]
    assert view.steps == {} and view.steps_total == 0 and view.duration_s is None
    text = render(print_status, view)
    assert "bad.yaml:3: graph.b: nope" in text and "error:" not in text and "┃ step" not in text


def test_job_rows() -> None:
    listed = {"_id": "j1", "name": "x.yaml", "state": "failed", "step_count": 7, "created_at": NOW - 10, "submitted_at": NOW - 11,
              "started_at": NOW - 9, "finished_at": NOW - 1, "error": {"step": "boom", "type": "E", "message": "m"}, "labels": {}}
    row = job_row(listed, StepCounts(done=7, failed=2, first_failed="other"), NOW)
    data = row.model_dump(mode="json")
    assert list(data) == JOB_KEYS
    assert (data["steps_done"], data["steps_total"], data["steps_failed"], data["failed_step"]) == (7, 7, 2, "boom")
    assert data["duration_s"] == 8.0
    pending = {"_id": "j2", "state": "pending", "step_count": 3, "created_at": NOW}
    row = job_row(pending, None, NOW)
    assert (row.steps_done, row.steps_total, row.failed_step, row.duration_s, row.labels) == (0, 3, None, None, {})
    running = {"_id": "j3", "state": "running", "step_count": 3, "created_at": NOW - 5, "started_at": NOW - 5}
    assert job_row(running, StepCounts(1, 1, "s"), NOW).failed_step == "s"  # before the job's error is written


def render(draw, *args) -> str:
    stream = io.StringIO()
    draw(*args, Console(file=stream, width=1 << 12, soft_wrap=True))
    return stream.getvalue()


def test_status_table() -> None:
    job, steps, dispatched = running_job()
    text = render(print_status, job_status(job, document(), steps, dispatched, NOW))
    lines = text.splitlines()
    assert lines[0].startswith("job j1  running  1/5 steps done  (chain.yaml)")
    assert f"submitted {format_time(datetime.fromtimestamp(NOW - 100, UTC))}  duration 1 m 39 s" in text
    assert "labels team=[bold]vision[/], run=a1" in text  # stored text is never taken for markup
    row = next(line for line in lines if "│ one " in line)
    for cell in ("add", "succeeded", "│ 2 ", "cpu", "cpu-h-1-abc", "1.2 s", "sum=float 3.0", "array=ndarray float32 (40, 40)"):
        assert cell in row, (cell, row)
    assert "running" in next(line for line in lines if "│ two " in line) and "1 m 04 s" in text
    assert "earlier attempts" in text and "task: ValueError: flaky" in text


def test_jobs_table() -> None:
    rows = [job_row({"_id": "j9", "name": "n.yaml", "state": "failed", "step_count": 4, "created_at": NOW, "started_at": NOW - 3725,
                     "finished_at": NOW, "error": {"step": "boom"}, "labels": {"a": "1", "b": "x y"}}, StepCounts(4, 1, "boom"), NOW)]
    text = render(print_jobs, rows)
    row = next(line for line in text.splitlines() if "j9" in line)
    for cell in ("n.yaml", "failed", "4/4", "boom", "1 h 02 m", "a=1, b=x y"):
        assert cell in row, (cell, row)
    assert render(print_jobs, []).strip() == "no jobs"


def test_durations_and_summaries_read_well() -> None:
    assert [format_duration(s) for s in (None, 0.04, 1.24, 59.94, 59.96, 184, 3725, 90061)] == [
        "", "40 ms", "1.2 s", "59.9 s", "1 m 00 s", "3 m 04 s", "1 h 02 m", "1 d 01 h"]
    assert format_summary({"type": "str", "value": "abc", "length": 3}) == "'abc'"
    assert format_summary({"type": "list", "length": 5}) == "list[5]"
    assert format_summary({"type": "bytes", "nbytes": 9, "stored": "inline"}) == "bytes 9 B"
    assert format_summary({"type": "npscalar", "dtype": "float64", "value": 2.5}) == "float64 2.5"


def test_attempt_histories_as_mappings_or_lists() -> None:
    entry = {"worker": "w", "finished_at": NOW, "duration_s": 1.0, "error": {"type": "E", "message": "m"}}
    keyed = attempt_history({"10": {**entry, "attempt": 10}, "2": {**entry, "attempt": 2}, "1": {**entry, "attempt": 1}})
    assert [a.attempt for a in keyed] == [1, 2, 10] and keyed[0].error is not None and keyed[0].error.kind == "task"
    assert [a.attempt for a in attempt_history([{**entry, "attempt": 1}])] == [1]
    assert attempt_history(None) == [] and attempt_history("junk") == []


def test_an_unreadable_stored_document_is_no_document() -> None:
    assert _unpacked(b"not zlib") is None
    assert _unpacked(zlib.compress(b'{"steps": 3}')) is None
    assert isinstance(_unpacked(zlib.compress(document().model_dump_json().encode())), JobDocument)
    assert JobStatus.model_fields["steps"].annotation is not None


def test_logged_metrics_are_summarised_per_name() -> None:
    from services.job_views import metric_summaries

    stored = [{"name": "loss", "value": 1.0, "step": 0, "at": 1.0}, {"name": "loss", "value": 0.25, "step": 1, "at": 2.0},
              {"name": "accuracy", "value": 0.9, "step": None, "at": 3.0}, {"name": "", "value": 1}, "junk", {"name": "x", "value": "nan?"}]
    summaries = {name: summary.model_dump() for name, summary in metric_summaries(stored).items()}
    assert summaries == {"loss": {"last": 0.25, "step": 1, "points": 2, "min": 0.25, "max": 1.0},
                         "accuracy": {"last": 0.9, "step": None, "points": 1, "min": 0.9, "max": 0.9}}
    assert metric_summaries(None) == {}
