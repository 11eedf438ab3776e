"""Two planners on one namespace: one acts, one stands by and takes over when it dies."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from services.client import Client
from services.cluster import LocalCluster
from shared.messages import JobSubmission, new_job_id
from shared.planner.numbering import SEQ_BLOCK
from shared.settings import Settings
from shared.store import Store
from tests.integration import documents
from tests.support.distributed import TEST_PLUGINS
from tests.support.event_tap import Tap

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]


async def _holder(store: Store, namespace: str, timeout_s: float = 30) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        info = await store.lease_info(namespace)
        if info is not None and info.until > time.time():
            return info.holder
        assert time.monotonic() < deadline, "no planner took the lease"
        await asyncio.sleep(0.1)


def _pid_of(holder: str) -> int:
    return int(holder.split("-")[-2])  # planner-HOST-PID-RANDOM


@pytest.mark.timeout(180)
def test_the_standby_planner_takes_over_when_the_active_one_is_killed(settings: Settings, tmp_path: Path) -> None:
    text = documents.chain_with_log(str(tmp_path), length=12, seconds=0.5)
    logs = tmp_path / "logs"
    with LocalCluster(settings, {"cpu": 1}, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=logs) as cluster:
        cluster.wait_ready(60)
        standby = cluster.start_planner(1)  # a second replica of the planner

        job_id = new_job_id()

        async def scenario() -> tuple[dict, float, str, str, list[int]]:
            async with Client(settings) as client, Tap(settings, (f"job.{job_id}.#",)) as tap:
                first = await _holder(client.store, settings.namespace)
                await client.submit(JobSubmission(document=text, job_id=job_id))
                log = tmp_path / "executions.log"
                deadline = time.monotonic() + 30
                while not log.exists() or len(log.read_text().split()) < 4:
                    assert time.monotonic() < deadline, "the job did not start"
                    await asyncio.sleep(0.05)
                os.kill(_pid_of(first), signal.SIGKILL)
                killed_at = time.monotonic()
                while (second := await _holder(client.store, settings.namespace)) == first:
                    assert time.monotonic() - killed_at < settings.lease_s, "no takeover within THEODOLITE_LEASE_S"
                    await asyncio.sleep(0.05)
                takeover_s = time.monotonic() - killed_at
                result = await client.wait(job_id, timeout_s=90)
                await tap.until("the job's last event", lambda: any(e["type"] == "job.succeeded" for e in tap.job_events(job_id)))
                return result.to_json_dict(), takeover_s, first, second, [e["seq"] for e in tap.job_events(job_id)]

        result, takeover_s, first, second, seqs = asyncio.run(scenario())
        assert standby.process.poll() is None, "the standby planner died"
    assert first != second and _pid_of(second) == standby.process.pid
    assert takeover_s < settings.lease_s, f"takeover took {takeover_s:.1f} s"
    assert result["status"] == "succeeded" and result["steps"]["s11"]["outputs"] == {"value": 12}
    executions = (tmp_path / "executions.log").read_text().split()
    assert sorted(executions) == sorted(f"s{i}" for i in range(12)), f"a step ran twice or not at all: {executions}"
    assert "standing by" in (logs / f"{standby.name}.log").read_text()
    # the job's event numbers: the first planner's, then a jump past its reservation, never one twice
    before, after = sorted(n for n in set(seqs) if n <= SEQ_BLOCK), sorted(n for n in set(seqs) if n > SEQ_BLOCK)
    assert before == list(range(1, len(before) + 1)) and before, f"the first planner's numbers have holes: {seqs}"
    assert after and after == list(range(SEQ_BLOCK + 1, SEQ_BLOCK + 1 + len(after))), f"after the takeover: {seqs}"
