"""Messages, settings and small pure helpers of the distributed mode (no services)."""

from __future__ import annotations

import json

import pytest

from services.cluster import parse_workers
from shared.constants import Names
from shared.distributed_errors import MessageError
from shared.messages import (
    JobCancel,
    JobSubmission,
    StepDispatch,
    StepNotice,
    encode,
    json_schemas,
    parse,
    parse_job_message,
)
from shared.planner.core import StepState
from shared.settings import Settings, redact_url


def test_job_messages_round_trip_and_are_discriminated() -> None:
    submission = JobSubmission(document="graph: {}", parameters={"n": 3})
    assert parse_job_message(encode(submission), 10_000) == submission
    cancel = JobCancel(job_id=submission.job_id)
    assert parse_job_message(encode(cancel), 10_000) == cancel


@pytest.mark.parametrize("body, reason", [
    (b"not json", "invalid message"),
    (b'{"kind": "job.submit"}', "document"),
    (b'{"kind": "job.submit", "document": "x", "schema_version": 2}', "schema_version"),
    (b'{"kind": "job.submit", "document": "x", "extra": 1}', "extra"),
    (b'{"kind": "job.submit", "document": "x", "job_id": "../etc"}', "job_id"),
])
def test_bad_job_messages_are_refused_with_a_reason(body: bytes, reason: str) -> None:
    with pytest.raises(MessageError) as info:
        parse_job_message(body, 10_000)
    assert reason in info.value.reason


def test_size_limit() -> None:
    body = encode(StepDispatch(job_id="j", step="s", attempt=1, device="cpu"))
    assert parse(StepDispatch, body, len(body)).step == "s"
    with pytest.raises(MessageError, match="exceeds the limit"):
        parse(StepDispatch, body, len(body) - 1)


def test_notice_requires_an_outcome() -> None:
    with pytest.raises(MessageError):
        parse(StepNotice, b'{"job_id": "j", "step": "s", "attempt": 1, "outcome": "maybe", "worker_id": "w"}', 1000)


def test_json_schemas_cover_every_message() -> None:
    schemas = json_schemas()
    assert set(schemas) == {"job.submit", "job.cancel", "job.resume", "step.dispatch", "step.batch", "step.done", "step.done.batch", "step.progress",
                            "step.progress.batch", "job.control", "event", "event.batch", "worker.event"}
    assert "document" in schemas["job.submit"]["properties"]
    json.dumps(schemas)


def test_settings_from_environment_mask_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEODOLITE_AMQP_URL", "amqp://user:s3cret@rabbit:5672/")
    monkeypatch.setenv("THEODOLITE_MONGO_URL", "mongodb://admin:hunter2@mongo:27017")
    monkeypatch.setenv("THEODOLITE_PREFETCH", "7")
    settings = Settings()
    assert settings.prefetch == 7 and settings.amqp_url.endswith("@rabbit:5672/")
    assert "s3cret" not in repr(settings) and "hunter2" not in repr(settings)
    assert redact_url("amqp://user:s3cret@rabbit:5672/") == "amqp://user:***@rabbit:5672/"
    assert Settings(amqp_url="amqp://h/").child_environment()["THEODOLITE_AMQP_URL"] == "amqp://h/"


def test_bad_settings_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THEODOLITE_LEASE_S", "-1")
    with pytest.raises(ValueError, match="lease_s"):
        Settings()


def test_gpu_workers_prefetch_one_by_default() -> None:
    settings = Settings(concurrency=4)
    assert settings.worker_prefetch("gpu", 4) == 1 and settings.worker_prefetch("cpu", 4) == 16
    assert Settings(prefetch=3).worker_prefetch("gpu", 4) == 3


def test_names_are_namespaced() -> None:
    names = Names("ns")
    assert names.steps_queue("gpu") == "ns.steps.gpu" and names.jobs_exchange == "ns.jobs"


def test_parse_workers() -> None:
    assert parse_workers("cpu=2, gpu=1") == {"cpu": 2, "gpu": 1}
    with pytest.raises(ValueError):
        parse_workers("cpu")


def test_waiting_is_queued_to_the_core() -> None:
    assert StepState("waiting").core is StepState.QUEUED and StepState("running").core is StepState.RUNNING


def test_gpu_worker_start_up_without_jax(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from services.worker import prepare_device_environment

    monkeypatch.delenv("XLA_PYTHON_CLIENT_PREALLOCATE", raising=False)
    monkeypatch.setitem(sys.modules, "jax", None)  # import jax -> ImportError
    assert "jax not installed" in prepare_device_environment("gpu")
    import os

    assert os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] == "false"
    assert prepare_device_environment("cpu") == "device cpu"


def test_batches_expand_to_their_steps() -> None:
    from shared.messages import (
        NoticeBatch,
        StepBatch,
        StepNotice,
        StepRef,
        encode,
        parse_dispatches,
        parse_notices,
    )

    batch = StepBatch(job_id="j1", device="cpu", steps=[StepRef(step="a", attempt=1), StepRef(step="b", attempt=2)])
    assert [(d.step, d.attempt, d.device) for d in parse_dispatches(encode(batch), 10_000)] == [("a", 1, "cpu"), ("b", 2, "cpu")]
    single = StepNotice(job_id="j1", step="a", attempt=1, outcome="succeeded", worker_id="w")
    assert parse_notices(encode(single), 10_000) == [single]
    assert parse_notices(encode(NoticeBatch(notices=[single, single])), 10_000) == [single, single]


def test_ready_steps_are_batched_only_when_many_are_ready() -> None:
    from shared.planner.book import MAX_BATCH, MIN_MESSAGES, _batches

    names = [f"s{i}" for i in range(5000)] + ["g0", "g1"]
    devices = {n: ("gpu" if n.startswith("g") else "cpu") for n in names}
    chunks = _batches(devices, names)
    assert sorted(n for chunk in chunks for n in chunk) == sorted(names)
    assert all(len({devices[n] for n in chunk}) == 1 for chunk in chunks)
    cpu = [c for c in chunks if devices[c[0]] == "cpu"]
    assert max(map(len, cpu)) == MAX_BATCH and len(cpu) >= MIN_MESSAGES
    assert [c for c in chunks if devices[c[0]] == "gpu"] == [["g0"], ["g1"]]
    assert _batches(devices, ["s1"]) == [["s1"]]
