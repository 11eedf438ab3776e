"""Events a consumer can trust (issue 10, item 4), on a real planner and workers: a queue bound
to one job's key gets its events numbered 1..n without a hole, ``step.running`` from the
planner with the worker's id, workers' presence with device and slots, and the history
stream keeps the job's numbered events and the workers' ``online`` (not their heartbeats)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from services.client import Client
from services.cluster import LocalCluster
from shared.messages import JobSubmission, new_job_id
from tests.integration import documents
from tests.support.distributed import TEST_PLUGINS, make_settings, running_cluster
from tests.support.event_tap import Tap

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]
HEARTBEAT_S = 0.5


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("events-logs")
    settings = make_settings(amqp_url, mongo_url, heartbeat_s=HEARTBEAT_S)
    with running_cluster(settings, {"cpu": 2}, logs, plugin_dirs=[TEST_PLUGINS]) as cluster:
        yield cluster


def test_a_jobs_events_are_numbered_without_holes_and_workers_beat(cluster: LocalCluster) -> None:
    settings, job_id = cluster.settings, new_job_id()
    text = documents.fan_out_in(12)

    async def scenario() -> tuple[Tap, Tap, str]:
        async with Tap(settings, (f"job.{job_id}.#", "worker.#")) as tap, Client(settings) as client:
            await client.submit(JobSubmission(document=text, job_id=job_id))
            result = await client.wait(job_id, timeout_s=120)
            await tap.until("the job's last event", lambda: any(e["type"] == "job.succeeded" for e in tap.job_events(job_id)))
            await tap.until("two heartbeats of one worker", lambda: max(
                [sum(1 for e in tap.worker_events("worker.heartbeat") if e["worker_id"] == w)
                 for w in {e["worker_id"] for e in tap.worker_events("worker.heartbeat")}] or [0]) >= 2)
        async with Tap(settings, history=True) as history:
            await history.until("the job in the history stream",
                                lambda: any(e["type"] == "job.succeeded" for e in history.job_events(job_id)))
            await history.until("both workers' online in the history stream", lambda: len(history.worker_events("worker.online")) >= 2)
        return tap, history, str(result.status)

    tap, history, status = asyncio.run(scenario())
    assert status == "succeeded"
    events = tap.job_events(job_id)
    seqs = [e["seq"] for e in events]
    assert sorted(seqs) == list(range(1, len(events) + 1)), f"holes or repeats in the job's numbers: {seqs}"
    assert seqs == sorted(seqs), f"a job's events arrive in number order: {seqs}"
    assert all(e["schema_version"] == 1 and isinstance(e["at"], float) for e in events)
    by_seq = {e["seq"]: e for e in events}
    assert by_seq[1]["type"] == "job.running" and by_seq[len(events)]["type"] == "job.succeeded"
    assert all(h.key == f"job.{job_id}.{e['type']}" for h in tap.heard if h.kind != "worker.event" for e in h.events())
    steps = {"source", "gather", *(f"f{i}" for i in range(12))}
    running = [e for e in events if e["type"] == "step.running"]
    assert {e["step"] for e in running} == steps, "every step is reported running, fast ones too"
    assert all(e["worker_id"].startswith("cpu-") and e["attempt"] == 1 for e in running)
    assert {e["step"] for e in events if e["type"] == "step.succeeded"} == steps

    beats = tap.worker_events("worker.heartbeat")
    odd = [b for b in beats if not (b["device"] == "cpu" and b["slots"] == settings.concurrency and b["heartbeat_s"] == HEARTBEAT_S
                                    and 0 <= b["busy"] <= b["slots"] and b["seq"] >= 2)]
    assert beats and not odd, json.dumps(odd)
    assert len({b["worker_id"] for b in beats}) == 2
    assert {h.key for h in tap.heard if h.kind == "worker.event"} <= {"worker.cpu.worker.heartbeat", "worker.cpu.worker.online",
                                                                       "worker.cpu.worker.offline"}

    online = history.worker_events("worker.online")
    assert {o["worker_id"] for o in online} >= {b["worker_id"] for b in beats}
    assert all(o["device"] == "cpu" and o["slots"] == settings.concurrency and o["seq"] == 1 for o in online)
    assert not history.worker_events("worker.heartbeat"), "heartbeats are not kept in the history"
    replayed = sorted(e["seq"] for e in history.job_events(job_id))
    assert replayed == sorted(seqs), "the history stream keeps the job's numbered events"
