"""theodolite resume on a cluster: the same job's next run reuses succeeded steps' outputs."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from services.cluster import LocalCluster
from tests.integration import documents
from tests.support.distributed import ROOT, TEST_PLUGINS, make_settings, running_cluster

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]

DOC = documents.RESUMABLE + "  side: {plus: [5]}\n"


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    with running_cluster(make_settings(amqp_url, mongo_url), {"cpu": 1}, logs, plugin_dirs=[TEST_PLUGINS]) as cluster:
        yield cluster


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=cluster.environment(), timeout=180, check=False)


async def docs(cluster: LocalCluster, job_id: str) -> tuple[dict, dict[str, dict]]:
    client = AsyncMongoClient(cluster.settings.mongo_url)
    try:
        db = client[cluster.settings.db]
        job = await db["jobs"].find_one({"_id": job_id}, {"document": 0})
        steps = {d["step"]: d async for d in db["steps"].find({"job": job_id}, {"outputs": 0})}
        return job or {}, steps
    finally:
        await client.close()


def test_resume_reruns_what_did_not_succeed_with_new_parameters_as_the_same_job(cluster: LocalCluster, tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(DOC)
    first = cli(cluster, "submit", str(path), "--wait", "--json", "--keep-going", "--plugins", str(TEST_PLUGINS))
    assert first.returncode == 1, first.stderr
    job_id = first.stderr.split("job ", 1)[1].split()[0]
    assert {k: v["status"] for k, v in json.loads(first.stdout)["steps"].items()} == {
        "a": "succeeded", "b": "failed", "c": "skipped", "side": "succeeded"}
    _, before = asyncio.run(docs(cluster, job_id))

    refused = cli(cluster, "resume", job_id, "-p", "nope=1")
    assert refused.returncode == 1 and "no parameter named 'nope'" in refused.stderr
    refused = cli(cluster, "resume", job_id, "--from", "ghost")
    assert refused.returncode == 1 and "no step named 'ghost'" in refused.stderr

    again = cli(cluster, "resume", job_id, "-p", "ok=true", "--wait", "--json")
    assert again.returncode == 0, again.stderr
    assert "run 2 runs 2 step(s) again (b, c)" in again.stderr
    result = json.loads(again.stdout)
    assert result["status"] == "succeeded"
    assert result["steps"]["b"]["outputs"] == {"value": 102.0} and result["steps"]["c"]["outputs"] == {"value": 103.0}
    job, after = asyncio.run(docs(cluster, job_id))
    assert job["run"] == 2 and job["runs"]["1"]["state"] == "failed" and job["state"] == "succeeded"
    for kept in ("a", "side"):  # not run again: same attempt, same worker, same finish time
        assert (after[kept]["attempt"], after[kept]["finished_at"]) == (before[kept]["attempt"], before[kept]["finished_at"])
    assert after["b"]["attempt"] == before["b"]["attempt"] + 1
    assert after["b"]["attempts"][str(before["b"]["attempt"])]["error"]["message"] == "not ok yet"

    done = cli(cluster, "resume", job_id)
    assert done.returncode == 1 and "the job succeeded: name steps to run again with --from" in done.stderr
    rerun = cli(cluster, "resume", job_id, "--from", "b", "--wait", "--json")
    assert rerun.returncode == 0, rerun.stderr
    assert "runs 2 step(s) again (b, c)" in rerun.stderr
    job, _ = asyncio.run(docs(cluster, job_id))
    assert job["run"] == 3 and job["runs"]["2"]["state"] == "succeeded"
