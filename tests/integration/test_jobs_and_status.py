"""`theodolite jobs` and `theodolite status` against a cluster (planner and workers as processes).

Jobs are submitted with labels by `theodolite submit`; both commands run as subprocesses, as a
user runs them, and read what the services wrote to MongoDB."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.client import Client
from services.cluster import LocalCluster
from shared.messages import JobSubmission
from tests.integration import documents
from tests.support.distributed import ROOT, TEST_PLUGINS, make_settings, running_cluster

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]

CLI = [sys.executable, "-m", "services.cli"]


def arrays_and_retry(log_dir: Path) -> str:
    return f"""
graph:
  arr:
    make_array: [40, float32]
  small:
    make_array: [3, int64]
  retried:
    flaky_timed: [{log_dir}]
  total:
    plus: [1, 2]
    dependencies: [retried]
"""


def slow_chain(log_dir: Path, seconds: float) -> str:
    return f"""
graph:
  first:
    plus: [1, 1]
  slow:
    logged_sleep:
      seconds: {seconds}
      log_dir: {log_dir}
      name: slow
      x: $first
  after:
    plus: [$slow, 1]
"""


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    settings = make_settings(amqp_url, mongo_url, claim_after_s=0.3)  # a running step shows in MongoDB at once
    with running_cluster(settings, {"cpu": 2}, logs, plugin_dirs=[TEST_PLUGINS]) as cluster:
        yield cluster


def cli(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **cluster.settings.child_environment()}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)


def cli_json(cluster: LocalCluster, *args: str) -> Any:
    done = cli(cluster, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(cluster: LocalCluster, *job_ids: str) -> None:
    async def go() -> None:
        async with Client(cluster.settings) as client:
            for job_id in job_ids:
                await client.wait(job_id, timeout_s=120)
    asyncio.run(go())


def test_jobs_and_status_of_finished_jobs(cluster: LocalCluster, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:12]
    arrays, failing = tmp_path / "arrays.yaml", tmp_path / "failing.yaml"
    arrays.write_text(arrays_and_retry(tmp_path))
    failing.write_text(documents.FAILING)
    submitted = []
    for path, team in ((arrays, "vision"), (failing, "audio")):
        submitted.append(cli_json(cluster, "submit", str(path), "--plugins", str(TEST_PLUGINS),
                                  "--label", f"team={team}", "--label", f"run={run}", "--label", f"k{run}=")["job_id"])
        time.sleep(0.05)  # recorded in this order by the planner
    arrays_id, failing_id = submitted
    wait_for(cluster, arrays_id, failing_id)

    rows = cli_json(cluster, "jobs", "--label", f"run={run}")
    assert [r["job_id"] for r in rows] == [failing_id, arrays_id]  # newest first
    failed, succeeded = rows
    assert list(succeeded) == ["job_id", "name", "state", "steps_done", "steps_total", "steps_failed", "failed_step",
                               "submitted_at", "started_at", "finished_at", "duration_s", "labels"]
    assert (succeeded["state"], succeeded["steps_done"], succeeded["steps_total"], succeeded["failed_step"]) == ("succeeded", 4, 4, None)
    assert succeeded["labels"] == {"team": "vision", "run": run, f"k{run}": ""} and succeeded["name"] == str(arrays)
    assert succeeded["duration_s"] > 0 and succeeded["submitted_at"].endswith("Z") and succeeded["finished_at"]
    assert (failed["state"], failed["steps_done"], failed["steps_total"], failed["steps_failed"], failed["failed_step"]) == (
        "failed", 4, 4, 1, "boom")

    assert [r["job_id"] for r in cli_json(cluster, "jobs", "--label", f"run={run}", "--state", "failed")] == [failing_id]
    assert [r["job_id"] for r in cli_json(cluster, "jobs", "--label", f"run={run}", "--state", "failed",
                                          "--state", "succeeded")] == [failing_id, arrays_id]
    assert cli_json(cluster, "jobs", "--label", f"run={run}", "--label", "team=nobody") == []
    assert [r["job_id"] for r in cli_json(cluster, "jobs", "--label", f"k{run}", "--since", "10m")] == [failing_id, arrays_id]
    assert [r["job_id"] for r in cli_json(cluster, "jobs", "--label", f"k{run}", "--limit", "1")] == [failing_id]
    assert cli_json(cluster, "jobs", "--label", f"run={run}", "--since", "2999-01-01T00:00") == []

    status = cli_json(cluster, "status", arrays_id)
    assert (status["job_id"], status["state"], status["steps_done"], status["steps_total"]) == (arrays_id, "succeeded", 4, 4)
    assert status["labels"] == {"team": "vision", "run": run, f"k{run}": ""} and status["error"] is None
    steps = status["steps"]
    assert list(steps) == ["arr", "small", "retried", "total"]
    for name, step in steps.items():
        assert step["state"] == "succeeded" and step["device"] == "cpu" and step["worker"].startswith("cpu-"), (name, step)
        assert step["duration_s"] is not None and step["started_at"] and step["finished_at"] and step["error"] is None
    assert steps["arr"]["task"] == "make_array" and steps["arr"]["attempt"] == 1
    assert steps["arr"]["outputs"] == {"array": {"type": "ndarray", "dtype": "float32", "shape": [40, 40], "nbytes": 6400,
                                                 "stored": "gridfs"}}
    assert steps["small"]["outputs"]["array"] == {"type": "ndarray", "dtype": "int64", "shape": [3, 3], "nbytes": 72,
                                                  "stored": "inline"}
    assert steps["total"]["outputs"]["value"]["value"] == 3
    retried = steps["retried"]
    assert retried["attempt"] == 3 and retried["outputs"]["value"]["value"] == 3
    assert [(a["attempt"], a["error"]["type"], a["error"]["message"], a["error"]["kind"]) for a in retried["attempts"]] == [
        (1, "ConnectionError", "flaky failure 1", "task"), (2, "ConnectionError", "flaky failure 2", "task")]
    assert all(a["worker"].startswith("cpu-") and a["finished_at"] for a in retried["attempts"])

    failed_status = cli_json(cluster, "status", failing_id)
    assert failed_status["error"]["step"] == "boom" and failed_status["error"]["type"] == "RuntimeError"
    boom = failed_status["steps"]["boom"]
    assert boom["state"] == "failed" and boom["error"] == {"kind": "task", "type": "RuntimeError", "message": "kaboom from the test"}
    assert [failed_status["steps"][n]["state"] for n in ("ok", "after", "last")] == ["succeeded", "skipped", "skipped"]

    shown = cli(cluster, "status", arrays_id)
    assert shown.returncode == 0, shown.stderr
    assert f"job {arrays_id}  succeeded  4/4 steps done" in shown.stdout and "ndarray float32 (40, 40)" in shown.stdout
    assert "earlier attempts" in shown.stdout and "ConnectionError: flaky failure 1" in shown.stdout
    listed = cli(cluster, "jobs", "--label", f"run={run}")
    assert listed.returncode == 0 and arrays_id in listed.stdout and failing_id in listed.stdout and "boom" in listed.stdout

    unknown = cli(cluster, "status", "no-such-job")
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert unknown.stderr.strip() == f"error: no job named no-such-job in namespace {cluster.settings.namespace}"


def test_status_of_a_running_job_shows_the_running_step_and_its_worker(cluster: LocalCluster, tmp_path: Path) -> None:
    run = uuid.uuid4().hex[:12]
    submission = JobSubmission(document=slow_chain(tmp_path, seconds=8), document_name="slow.yaml", labels={"run": run})

    async def submit() -> str:
        async with Client(cluster.settings) as client:
            return await client.submit(submission)
    job_id = asyncio.run(submit())

    deadline = time.monotonic() + 60
    while True:
        status = cli_json(cluster, "status", job_id)
        if status["steps"]["slow"]["state"] == "running" or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    slow = status["steps"]["slow"]
    assert status["state"] == "running" and status["finished_at"] is None and status["duration_s"] > 0, status
    assert slow["state"] == "running" and slow["attempt"] == 1 and slow["worker"].startswith("cpu-"), slow
    assert slow["started_at"] and slow["finished_at"] is None and slow["duration_s"] >= 0 and slow["outputs"] == {}
    assert status["steps"]["first"]["state"] == "succeeded" and status["steps"]["after"]["state"] == "pending"
    assert (status["steps_done"], status["steps_total"]) == (1, 3)
    [row] = cli_json(cluster, "jobs", "--label", f"run={run}", "--state", "running")
    assert (row["job_id"], row["steps_done"], row["steps_total"], row["finished_at"]) == (job_id, 1, 3, None)
    shown = cli(cluster, "status", job_id)
    assert shown.returncode == 0 and "running" in shown.stdout and slow["worker"] in shown.stdout

    wait_for(cluster, job_id)
    done = cli_json(cluster, "status", job_id)
    assert done["state"] == "succeeded" and done["steps"]["slow"]["state"] == "succeeded"
    assert done["steps"]["slow"]["duration_s"] >= 8 and done["steps"]["slow"]["worker"] == slow["worker"]
