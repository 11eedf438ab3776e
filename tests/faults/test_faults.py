"""Faults: a planner killed mid-job, poison messages, redelivered and late duplicate steps."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from services.client import Client
from services.cluster import LocalCluster
from shared import codec
from shared.messages import JobSubmission, StepDispatch, encode
from shared.settings import Settings
from shared.store import Finish, Store
from shared.transport import Broker, Outgoing
from tests.integration import documents
from tests.support.distributed import TEST_PLUGINS

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]


async def _wait_state(store: Store, job_id: str, states: set[str], timeout_s: float = 60) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        doc = await store.job_state(job_id)
        if doc is not None and doc["state"] in states:
            return doc
        assert time.monotonic() < deadline, f"job {job_id} not in {states}: {doc}"
        await asyncio.sleep(0.1)


def test_planner_killed_mid_job_resumes_without_rerunning(settings: Settings, tmp_path: Path) -> None:
    text = documents.chain_with_log(str(tmp_path), length=10, seconds=0.4)
    with LocalCluster(settings, {"cpu": 2}, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=tmp_path / "logs") as cluster:
        cluster.wait_ready(60)

        async def scenario() -> tuple[dict, dict]:
            async with Client(settings) as client:
                job_id = await client.submit(JobSubmission(document=text))
                log = tmp_path / "executions.log"
                deadline = time.monotonic() + 30
                while not log.exists() or len(log.read_text().split()) < 3:
                    assert time.monotonic() < deadline
                    await asyncio.sleep(0.05)
                cluster.stop_child(cluster.child("planner"), kill=True)  # SIGKILL: no drain
                await asyncio.sleep(1.0)  # steps complete while no planner runs
                cluster.start_planner()
                result = await client.wait(job_id, timeout_s=60)
                records = await client.store.step_records(job_id)
                return result.to_json_dict(), {n: r.attempt for n, r in records.items()}

        result, attempts = asyncio.run(scenario())
    assert result["status"] == "succeeded"
    assert result["steps"]["s9"]["outputs"] == {"value": 10}
    executions = (tmp_path / "executions.log").read_text().split()
    assert sorted(executions) == sorted(f"s{i}" for i in range(10)), "a completed step ran again"
    assert set(attempts.values()) == {1}


def test_poison_messages_are_dead_lettered_and_recorded(settings: Settings, tmp_path: Path) -> None:
    with LocalCluster(settings, {"cpu": 1}, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=tmp_path / "logs") as cluster:
        cluster.wait_ready(60)

        async def scenario() -> list[dict]:
            async with Broker(settings, name="poisoner") as broker, Store(settings) as store:
                names = broker.names
                assert await broker.publish(Outgoing(names.steps_exchange, "cpu", b"\xff not json", "step.dispatch"))
                assert await broker.publish(Outgoing(names.jobs_exchange, "job.submit", b'{"kind": "job.submit"}', "job.submit"))
                deadline = time.monotonic() + 20
                while True:
                    events = await store.events()
                    types = [e["type"] for e in events]
                    if types.count("message.dead_lettered") >= 2 and "message.rejected" in types:
                        return events
                    assert time.monotonic() < deadline, events
                    await asyncio.sleep(0.2)

        events = asyncio.run(scenario())
        assert any("rejected" in str(e.get("reason")) for e in events if e["type"] == "message.dead_lettered")
        for child in cluster.children:  # nobody crashed
            assert child.process.poll() is None, child.name


def test_step_that_kills_its_workers_is_dead_lettered_and_fails_the_job(amqp_url: str, mongo_url: str, tmp_path: Path) -> None:
    from tests.support.distributed import cleanup, make_settings

    settings = make_settings(amqp_url, mongo_url, delivery_limit=1)
    text = "graph:\n  ok:\n    plus: [1, 1]\n  poison:\n    crash_worker: [$ok]\n  after:\n    plus: [$poison, 1]\n"
    try:
        with LocalCluster(settings, {"cpu": 2}, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=tmp_path / "logs") as cluster:
            cluster.wait_ready(60)

            async def scenario():
                async with Client(settings) as client:
                    return await client.submit_and_wait(text, timeout_s=60)

            result = asyncio.run(scenario())
            assert result.status == "failed"
            assert result.error is not None and result.error.step == "poison" and result.error.type == "DeadLettered"
            assert result.steps["after"].status == "skipped"
    finally:
        cleanup(settings)


async def _finish(store: Store, job_id: str, step: str, attempt: int, worker: str, outputs: codec.Encoded) -> bool:
    (recorded,) = await store.finish_many([Finish(job_id, step, attempt, worker, succeeded=True, outputs=outputs, duration_s=0.1)])
    return recorded


def test_redelivered_and_late_duplicate_steps_record_one_result(settings: Settings) -> None:
    """Store-level: the claim and the final write are compare-and-sets on (state, attempt)."""
    from shared.document import catalog_for, check_text

    document = check_text(documents.DIAMOND, "d.yaml", catalog_for(None, [TEST_PLUGINS])).document
    assert document is not None

    async def scenario() -> None:
        async with Store(settings) as store:
            await store.ensure_indexes()
            assert await store.insert_job("j1", document, {"x": 3}, name="d.yaml", fail_fast=True, submitted_at=time.time())
            assert not await store.insert_job("j1", document, {"x": 3}, name="d.yaml", fail_fast=True, submitted_at=time.time())
            await store.mark_dispatched("j1", ["top"])
            assert await store.claim("j1", "top", 1, "w1", take_over=False)
            assert not await store.claim("j1", "top", 1, "w2", take_over=False)  # duplicate delivery
            first = codec.encode({"value": 4}, threshold_bytes=100)
            assert await _finish(store, "j1", "top", 1, "w1", first)
            again = codec.encode({"value": 999}, threshold_bytes=100)
            assert not await _finish(store, "j1", "top", 1, "w2", again)
            assert not await store.claim("j1", "top", 1, "w3", take_over=True)  # redelivered after success
            assert (await store.upstream_outputs("j1", ["top"])) == {"top": {"value": 4}}
            # a late duplicate of an older attempt cannot overwrite the newer one
            await store.mark_dispatched("j1", ["left"])
            assert await store.claim("j1", "left", 1, "slow", take_over=False)
            assert await store.requeue("j1", "left", 1, reason="lease expired") == 2
            assert await store.claim("j1", "left", 2, "fast", take_over=False)
            assert await _finish(store, "j1", "left", 2, "fast", codec.encode({"value": 14}, threshold_bytes=100))
            big = codec.encode({"value": b"x" * 10_000}, threshold_bytes=100)
            assert not await _finish(store, "j1", "left", 1, "slow", big)
            record = (await store.step_records("j1"))["left"]
            assert (record.attempt, record.worker) == (2, "fast")
            assert (await store.upstream_outputs("j1", ["left"])) == {"left": {"value": 14}}

    asyncio.run(scenario())


def test_redelivered_dispatch_is_not_run_twice(settings: Settings, tmp_path: Path) -> None:
    text = documents.chain_with_log(str(tmp_path), length=2, seconds=0.05)
    with LocalCluster(settings, {"cpu": 1}, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=tmp_path / "logs") as cluster:
        cluster.wait_ready(60)

        async def scenario() -> None:
            async with Client(settings) as client:
                result = await client.submit_and_wait(text, timeout_s=30)
                assert result.status == "succeeded"
                job_id = next(iter([j async for j in client.store.db["jobs"].find({}, {"_id": 1})]))["_id"]
                before = await client.store.step_doc(job_id, "s0")
                duplicate = StepDispatch(job_id=job_id, step="s0", attempt=1, device="cpu")
                assert await client.broker.publish(Outgoing(client.broker.names.steps_exchange, "cpu", encode(duplicate), "step.dispatch"))
                await asyncio.sleep(1.0)
                after = await client.store.step_doc(job_id, "s0")
                assert before == after

        asyncio.run(scenario())
    assert (tmp_path / "executions.log").read_text().split() == ["s0", "s1"]


def test_step_for_a_device_without_workers_waits_then_runs(settings: Settings, tmp_path: Path) -> None:
    with LocalCluster(settings, {"cpu": 1}, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=tmp_path / "logs") as cluster:
        cluster.wait_ready(60)

        async def scenario():
            async with Client(settings) as client:
                job_id = await client.submit(JobSubmission(document=documents.TPU))
                deadline = time.monotonic() + 20
                while True:
                    doc = await client.store.step_doc(job_id, "accel")
                    if doc is not None and doc["state"] == "waiting":
                        break
                    assert time.monotonic() < deadline, doc
                    await asyncio.sleep(0.1)
                events = await client.store.events(job_id)
                assert any(e["type"] == "step.waiting" and "worker of type tpu" in e["reason"] for e in events)
                cluster.start_worker("tpu")
                return await client.wait(job_id, timeout_s=60)

        result = asyncio.run(scenario())
    assert result.status == "succeeded"
    assert result.steps["accel"].outputs == {"label": "tpu"}


def test_long_steps_outlive_the_ack_deadline_and_lost_leases_are_requeued(amqp_url: str, mongo_url: str, tmp_path: Path) -> None:
    """The consumer-timeout answer: acked early, kept by a renewed lease; a dead holder's lease expires."""
    import os
    import signal

    from tests.support.distributed import cleanup, make_settings

    settings = make_settings(amqp_url, mongo_url, ack_deadline_s=0.5, lease_s=1.5)
    text = f"graph:\n  long:\n    logged_sleep:\n      seconds: 3\n      log_dir: {tmp_path}\n      name: long\n"
    try:
        with LocalCluster(settings, {"cpu": 2}, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=tmp_path / "logs") as cluster:
            cluster.wait_ready(60)

            async def scenario() -> tuple[int, int, str, str]:
                async with Client(settings) as client:
                    first = await client.submit_and_wait(text, timeout_s=30)  # 3 s > lease and ack deadline
                    assert first.status == "succeeded"
                    first_id = next(iter([j async for j in client.store.db["jobs"].find({}, {"_id": 1})]))["_id"]
                    first_attempt = (await client.store.step_records(first_id))["long"].attempt
                    job_id = await client.submit(JobSubmission(document=text))
                    deadline = time.monotonic() + 20
                    while True:
                        doc = await client.store.step_doc(job_id, "long")
                        if doc and doc["state"] == "running" and time.time() - doc["started_at"] > 1.0:
                            break
                        assert time.monotonic() < deadline
                        await asyncio.sleep(0.05)
                    victim = doc["worker"]
                    os.kill(int(victim.split("-")[-2]), signal.SIGKILL)  # acked already: only the lease knows
                    result = await client.wait(job_id, timeout_s=30)
                    record = (await client.store.step_records(job_id))["long"]
                    assert result.status == "succeeded"
                    return first_attempt, record.attempt, victim, str(record.worker)

            first_attempt, attempt, victim, winner = asyncio.run(scenario())
    finally:
        cleanup(settings)
    assert first_attempt == 1
    assert attempt == 2 and winner != victim
