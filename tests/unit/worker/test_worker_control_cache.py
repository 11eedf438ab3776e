"""The worker's cache of control words: bounded, least recently used first out, latest wins."""

from __future__ import annotations

import json

import pytest

from services.worker_control import ControlCache, ControlFlags, parse_control
from shared.messages import JobControl, encode
from shared.states import JobState, StepState
from shared.store import JobRecord
from shared.transport.settle import Reject
from tests.unit.conftest import check
from tests.unit.worker.fakes import control_message


def control(job_id: str, claim: bool = False, stop: StepState | None = None) -> JobControl:
    return JobControl(job_id=job_id, claim=claim, stop=stop)


def test_the_cache_is_bounded_and_drops_the_least_recently_used() -> None:
    cache = ControlCache(size=3)
    for name in ("a", "b", "c"):
        cache.update(control(name, claim=True))
    assert cache.get("a") == ControlFlags(claim=True)  # "a" is now the most recent
    cache.update(control("d"))
    assert len(cache) == 3
    assert "b" not in cache and cache.get("b") is None
    assert {"a", "c", "d"} <= {n for n in "abcd" if n in cache}


def test_the_default_bound_holds_4096_jobs() -> None:
    cache = ControlCache()
    for i in range(5000):
        cache.update(control(f"job{i}", stop=StepState.SKIPPED))
    assert len(cache) == 4096
    assert "job903" not in cache and "job904" in cache and "job4999" in cache


def test_the_latest_word_replaces_the_previous_one() -> None:
    cache = ControlCache()
    cache.update(control("j", claim=True))
    cache.update(control("j", stop=StepState.CANCELLED))
    assert cache.get("j") == ControlFlags(claim=False, stop=StepState.CANCELLED)


def test_a_cache_needs_room() -> None:
    with pytest.raises(ValueError):
        ControlCache(size=0)


@pytest.mark.parametrize(("record", "message", "expected"), [
    (ControlFlags(), None, ControlFlags()),
    (ControlFlags(claim=True), None, ControlFlags(claim=True)),
    (ControlFlags(), ControlFlags(claim=True), ControlFlags(claim=True)),
    (ControlFlags(claim=True), ControlFlags(stop=StepState.SKIPPED), ControlFlags(True, StepState.SKIPPED)),
    (ControlFlags(stop=StepState.CANCELLED), ControlFlags(stop=StepState.SKIPPED), ControlFlags(False, StepState.CANCELLED)),
])
def test_record_and_message_flags_merge_as_an_or(record: ControlFlags, message: ControlFlags | None,
                                                  expected: ControlFlags) -> None:
    assert record.merged(message) == expected


def test_flags_of_a_job_record_and_of_no_record() -> None:
    assert ControlFlags.of_record(None) == ControlFlags()
    document = check("graph:\n  a: {tp_add: [1, 2]}\n").document
    assert document is not None
    record = JobRecord("j", JobState.RUNNING, document, {}, ["a"], True, None, claim=True, stop=StepState.SKIPPED)
    assert ControlFlags.of_record(record) == ControlFlags(True, StepState.SKIPPED)


def test_a_valid_control_message_is_parsed() -> None:
    parsed = parse_control(control_message(encode(control("j7", claim=True, stop=StepState.CANCELLED))), 1 << 20)  # type: ignore[arg-type]
    assert (parsed.job_id, parsed.claim, parsed.stop) == ("j7", True, StepState.CANCELLED)


@pytest.mark.parametrize(("body", "kind"), [
    (b"not json", "job.control"),
    (json.dumps({"kind": "job.control", "job_id": "j", "stop": "failed"}).encode(), "job.control"),
    (json.dumps({"kind": "job.control"}).encode(), "job.control"),
    (json.dumps({"kind": "job.control", "job_id": "j"}).encode(), "step.dispatch"),
    (b"x" * 2048, None),
])
def test_bad_control_messages_are_rejected(body: bytes, kind: str | None) -> None:
    with pytest.raises(Reject):
        parse_control(control_message(body, kind), 1024)  # type: ignore[arg-type]
