"""The task context on a cluster: seeds from the job's, metrics and logged artifacts stored with
the step and returned by submit --wait --json, logs per attempt (theodolite logs)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator

import pytest
from pymongo import AsyncMongoClient

from services.client import Client
from services.cluster import LocalCluster
from shared.messages import JobSubmission
from shared.settings import Settings
from shared.task_context import derive_seed
from tests.support.distributed import ROOT, TEST_PLUGINS, make_settings, running_cluster

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]

DOC = """
graph:
  talk:
    chatty: [3]
  fail:
    chatty_then_fail: [2]
"""


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    with running_cluster(make_settings(amqp_url, mongo_url), {"cpu": 1}, logs, plugin_dirs=[TEST_PLUGINS]) as cluster:
        yield cluster


async def step_doc(settings: Settings, job_id: str, step: str) -> dict:
    client = AsyncMongoClient(settings.mongo_url)
    try:
        doc = await client[settings.db]["steps"].find_one({"job": job_id, "step": step})
        assert doc is not None
        return doc
    finally:
        await client.close()


def theodolite(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"THEODOLITE_AMQP_URL": settings.amqp_url, "THEODOLITE_MONGO_URL": settings.mongo_url, "THEODOLITE_DB": settings.db,
           "THEODOLITE_NAMESPACE": settings.namespace, "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=60, check=False)


def test_context_metrics_artifacts_and_logs_on_a_worker(cluster: LocalCluster) -> None:
    submission = JobSubmission(document=DOC, seed=42, fail_fast=False)

    events: list = []

    async def go():
        async with Client(cluster.settings) as client:
            await client.submit(submission)
            return await client.wait(submission.job_id, timeout_s=120, on_event=events.append)

    result = asyncio.run(go())
    assert result.status == "failed"
    metric_events = [e for e in events if e.type == "step.metric"]
    assert [(e.step, e.detail["name"], e.detail["step"], e.detail["value"]) for e in metric_events] == [
        ("talk", "loss", 0, 1.0), ("talk", "loss", 1, 0.5), ("talk", "loss", 2, 0.25)], "metrics are sent as events"
    assert all(e.worker_id and e.seq for e in metric_events)
    talk = result.steps["talk"].outputs
    assert talk["seed"] == derive_seed(42, "talk") and talk["worker"].startswith("cpu-") and talk["attempt"] == 1
    doc = asyncio.run(step_doc(cluster.settings, submission.job_id, "talk"))
    assert [(m["name"], m["step"], m["value"]) for m in doc["metrics"]] == [("loss", 0, 1.0), ("loss", 1, 0.5), ("loss", 2, 0.25)]
    assert "logged_artifacts" in doc
    assert [m.name for m in result.metrics["talk"]] == ["loss", "loss", "loss"], "submit --wait returns the metrics"

    shown = theodolite(cluster.settings, "logs", submission.job_id)
    assert shown.returncode == 0, shown.stderr
    assert "==> talk attempt 1" in shown.stdout and "line 2 of 3" in shown.stdout
    assert "==> fail attempt 1" in shown.stdout and "about to fail" in shown.stdout
    assert "RuntimeError: chatty failure" in shown.stdout, "a failed attempt's traceback follows its output"
    one = theodolite(cluster.settings, "logs", submission.job_id, "talk")
    assert "fail attempt" not in one.stdout and "line 1 of 3" in one.stdout
    missing = theodolite(cluster.settings, "logs", "no-such-job")
    assert missing.returncode == 1 and "no job named no-such-job" in missing.stderr


def test_logs_follow_shows_output_while_the_step_runs(cluster: LocalCluster) -> None:
    submission = JobSubmission(document="graph:\n  slow:\n    print_slowly: [6]\n")

    async def submit():
        async with Client(cluster.settings) as client:
            await client.submit(submission)

    asyncio.run(submit())
    env_args = ["logs", submission.job_id, "--follow"]
    follow = subprocess.Popen([sys.executable, "-m", "services.cli", *env_args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, cwd=ROOT, env={"THEODOLITE_AMQP_URL": cluster.settings.amqp_url,
                                                        "THEODOLITE_MONGO_URL": cluster.settings.mongo_url,
                                                        "THEODOLITE_DB": cluster.settings.db,
                                                        "THEODOLITE_NAMESPACE": cluster.settings.namespace, "PATH": "/usr/bin:/bin"})
    with follow:
        assert follow.stdout is not None and follow.stderr is not None
        first = follow.stdout.readline()
        assert "==> slow attempt 1" in first and "running" in first, first
        out = follow.stdout.read()  # the same buffered reader: communicate() would skip what it holds
        follow.wait(60)
        err = follow.stderr.read()
    assert follow.returncode == 0, err
    assert "tick 0" in out and "tick 5" in out and out.count("tick 0") == 1
