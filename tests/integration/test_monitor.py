"""`theodolite monitor` against a cluster (planner and a worker as processes), run as a user
runs it: a subprocess with the cluster's environment, stdout a pipe (no terminal).

* started after a job ended, ``--job ID --from start --json`` replays every event of the job
  from the history stream, numbered 1..n without a hole, ending with its terminal event, and
  exits 0; without ``--json`` it prints the final view once (the job, its steps done of all,
  the worker that ran them);
* started while a job runs, ``--from start`` replays its beginning and follows the rest live,
  ``--from now`` hears the rest only, both without a hole, both exit when the job ends;
* without ``--job`` it runs until Ctrl-C (exit 0, the final view printed), and shows the loud
  line for a step that waits for a device no worker serves; ``--job`` stopped by Ctrl-C
  before its job ended exits 130.
"""

from __future__ import annotations

import asyncio
import json
import os
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.client import Client
from services.cluster import LocalCluster
from shared.messages import JobSubmission, new_job_id
from tests.integration import documents
from tests.support.distributed import ROOT, TEST_PLUGINS, make_settings, running_cluster
from tests.support.event_tap import Tap

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]
MONITOR = [sys.executable, "-m", "services.cli", "monitor"]
TIMEOUT_S = 90
ALARM = "!! device gpu: no worker serves it (its queue does not exist); 1 step(s) wait for it"


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("monitor-logs")
    settings = make_settings(amqp_url, mongo_url, heartbeat_s=0.5)
    with running_cluster(settings, {"cpu": 1}, logs, plugin_dirs=[TEST_PLUGINS]) as cluster:
        yield cluster


def monitor(cluster: LocalCluster, *args: str) -> subprocess.Popen[str]:
    env = {**cluster.environment(), "TERM": "dumb", "COLUMNS": "200"}
    return subprocess.Popen([*MONITOR, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        raise AssertionError(f"the monitor did not exit within {TIMEOUT_S} s; stdout {out[-2000:]!r}; stderr {err[-2000:]!r}") from None
    return process.returncode, out, err


def events_of(out: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def check_numbered(events: list[dict[str, Any]], job_id: str, first: int = 1) -> None:
    assert events, "no event printed"
    assert all(e["job_id"] == job_id and e["kind"] == "event" for e in events), "only the job's events"
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(first, first + len(seqs))), f"in number order, without a hole or a repeat: {seqs}"
    assert events[-1]["type"] == "job.succeeded", events[-1]


def run_job(cluster: LocalCluster, text: str) -> str:
    async def scenario() -> str:
        async with Client(cluster.settings) as client:
            job_id = await client.submit(JobSubmission(document=text, job_id=new_job_id()))
            result = await client.wait(job_id, timeout_s=120)
            assert result.status == "succeeded"
            return job_id
    return asyncio.run(scenario())


def test_a_finished_job_is_replayed_from_its_first_event_and_drawn_once(cluster: LocalCluster) -> None:
    job_id = run_job(cluster, documents.DIAMOND)

    code, out, err = finish(monitor(cluster, "--job", job_id, "--from", "start", "--json"))
    assert code == 0, err
    events = events_of(out)
    check_numbered(events, job_id)
    assert events[0]["type"] == "job.running" and events[0]["detail"] == {"steps": 4}
    steps = {"top", "left", "right", "bottom"}
    assert {e["step"] for e in events if e["type"] == "step.succeeded"} == steps
    (worker,) = {e["worker_id"] for e in events if e["type"] == "step.running"}

    code, out, err = finish(monitor(cluster, "--job", job_id, "--from", "start"))
    assert code == 0, err
    assert out.count(f"job {job_id}") == 1, f"the final view, printed once:\n{out}"
    header = next(line for line in out.splitlines() if line.startswith(f"job {job_id}"))
    assert "succeeded" in header and "4/4 steps done" in header, out
    assert f"ran on {worker} (4 steps)" in out, out
    assert "\x1b[" not in out, "no terminal codes off a terminal"


def test_a_running_job_is_replayed_then_followed_live_or_followed_from_now(cluster: LocalCluster, tmp_path: Path) -> None:
    settings, job_id = cluster.settings, new_job_id()
    text = f"""
graph:
  first:
    plus: [1, 1]
  slow:
    logged_sleep: {{seconds: 4, log_dir: {tmp_path}, name: slow, x: $first}}
  after:
    plus: [$slow, 1]
"""

    async def scenario() -> tuple[subprocess.Popen[str], subprocess.Popen[str], float]:
        async with Tap(settings, (f"job.{job_id}.#",)) as tap, Client(settings) as client:
            await client.submit(JobSubmission(document=text, job_id=job_id))
            await tap.until("the slow step running", lambda: any(
                e["type"] == "step.running" and e["step"] == "slow" for e in tap.job_events(job_id)), timeout_s=60)
            replaying = monitor(cluster, "--job", job_id, "--from", "start", "--json")
            live = monitor(cluster, "--job", job_id, "--from", "now", "--json")
            started = time.time()
        return replaying, live, started

    replaying, live, started = asyncio.run(scenario())
    code, out, err = finish(replaying)
    assert code == 0, err
    events = events_of(out)
    check_numbered(events, job_id)
    assert [e["step"] for e in events if e["type"] == "step.succeeded"] == ["first", "slow", "after"]
    assert any(e["at"] > started for e in events), "events published after it started were followed live"

    code, out, err = finish(live)
    assert code == 0, err
    from_now = events_of(out)
    check_numbered(from_now, job_id, first=from_now[0]["seq"])
    assert from_now[0]["seq"] > 1 and [e["step"] for e in from_now if e["type"] == "step.succeeded"][-1] == "after"


def wait_for_line(process: subprocess.Popen[str], *texts: str, timeout_s: float = 60.0) -> str:
    """Read the process's stderr until it holds each of ``texts``; what was read.

    Reads the pipe's descriptor, not the text wrapper: a ``readline()`` would buffer a second
    line that arrived with the first, and ``select`` would then wait for it in vain."""
    assert process.stderr is not None
    deadline, seen = time.monotonic() + timeout_s, b""
    while not all(text.encode() in seen for text in texts):
        ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(process.stderr.fileno(), 65536) if ready else b""
        if not chunk:
            raise AssertionError(f"no lines with {texts!r} on stderr within {timeout_s:g} s: {seen.decode()!r}")
        seen += chunk
    return seen.decode()


def test_without_a_job_it_runs_until_ctrl_c_and_shouts_about_a_device_no_worker_serves(cluster: LocalCluster) -> None:
    settings, job_id, stray_id = cluster.settings, new_job_id(), new_job_id()

    async def scenario() -> tuple[str, str]:
        async with Tap(settings, (f"job.{job_id}.#",)) as tap, Client(settings) as client:
            await client.submit(JobSubmission(document="graph:\n  g:\n    device_label: [1]\n", job_id=job_id))
            await tap.until("the gpu step waiting", lambda: any(e["type"] == "step.waiting" for e in tap.job_events(job_id)),
                            timeout_s=60)
            watcher = monitor(cluster, "--from", "now")  # the job publishes nothing more: read from MongoDB
            stray = monitor(cluster, "--job", stray_id, "--from", "now")
            # Off a terminal the monitor notes on stderr each alarm and worker as first seen: once
            # it read the job, heard the worker and asked the broker about the gpu queue, its
            # final view holds all three.
            said = (wait_for_line(watcher, "following the cluster", f"{ALARM} (job {job_id}: g)", "online (cpu, 2 slot(s))"),
                    wait_for_line(stray, f"no job {stray_id} in MongoDB yet"))
            for process in (watcher, stray):
                process.send_signal(signal.SIGINT)
            await client.cancel(job_id, grace_s=0)
            await client.wait(job_id, timeout_s=60)
        results.extend([finish(watcher), finish(stray)])
        return said

    results: list[tuple[int, str, str]] = []
    asyncio.run(scenario())
    (code, out, err), (stray_code, stray_out, stray_err) = results
    assert code == 0, err
    assert f"{ALARM} (job {job_id}: g)" in out, out
    header = next(line for line in out.splitlines() if line.startswith(f"job {job_id}"))
    assert "running" in header and "0/1 steps done" in header, out
    cpu = next(line.split() for line in out.splitlines() if line.split()[:1] == ["cpu"])
    assert cpu[:3] == ["cpu", "1", "0/2"], f"one cpu worker online, 2 slots: {out}"

    assert stray_code == 130, stray_err
    assert "stopped watching job" in stray_err and f"job {stray_id}: not seen yet" in stray_out


def test_ctrl_c_stops_it_while_rabbitmq_is_out_of_reach(cluster: LocalCluster) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on: the connection is retried with backoff
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**cluster.environment(), "TERM": "dumb", "THEODOLITE_AMQP_URL": f"amqp://guest:guest@127.0.0.1:{port}/",
           "THEODOLITE_CONNECT_TIMEOUT_S": "120"}
    process = subprocess.Popen([*MONITOR, "--from", "now"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    time.sleep(4)
    started = time.monotonic()
    process.send_signal(signal.SIGINT)
    code, _, err = finish(process)
    assert time.monotonic() - started < 5, "Ctrl-C must not wait for the broker"
    assert code in (0, 1), err
