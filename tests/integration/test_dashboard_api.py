"""`theodolite dashboard` against a cluster (planner and a worker as processes), run as a user
runs it: a subprocess with the cluster's environment, on a free port, spoken to over HTTP.

* the API reads what ``theodolite jobs`` / ``status`` / ``logs`` read: the job list and its
  filters, a job with its compact steps and its graph, a succeeding and a failing step with
  their logs, traceback and metric points; the pages and their static files;
* the event stream delivers a job's events as they happen, and the cluster's screen;
* cancel and resume by POST do what ``theodolite cancel`` / ``resume`` do, with their words;
* bound to 0.0.0.0 it refuses to start without THEODOLITE_DASHBOARD_TOKEN, and with it every
  action needs the token (even through 127.0.0.1: the policy goes by the bind address);
* SIGTERM stops it at once, event streams open; MongoDB gone is a 503, not a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import aiohttp
import pytest
from yarl import URL

from services.client import Client
from services.cluster import LocalCluster, MongoWireServer
from shared.messages import JobSubmission, new_job_id
from tests.integration import documents
from tests.support.distributed import ROOT, TEST_PLUGINS, cleanup, make_settings, running_cluster

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]
DASHBOARD = [sys.executable, "-m", "services.cli", "dashboard"]
TOKEN = "s3cret-token"
WITHIN_S = 60.0
T = TypeVar("T")

DIAGNOSED = """
graph:
  talk: {chatty: [3]}
  boom: {chatty_then_fail: [2]}
  after: {plus: [1], dependencies: [talk]}
"""
RESUMABLE = documents.RESUMABLE


@dataclass
class Dashboard:
    process: subprocess.Popen[bytes]
    url: str
    """``http://127.0.0.1:PORT`` (no trailing slash)."""
    printed: str


def start_dashboard(env: dict[str, str], errors: Path, *args: str) -> Dashboard:
    """``theodolite dashboard --port 0 ARGS``, once it says where it listens (stderr to ``errors``)."""
    with errors.open("wb") as sink:
        process = subprocess.Popen([*DASHBOARD, "--port", "0", *args], stdout=subprocess.DEVNULL, stderr=sink, env=env, cwd=ROOT)
    deadline = time.monotonic() + WITHIN_S
    while True:
        said = errors.read_text(errors="replace")
        found = re.search(r"theodolite dashboard: (http://(\S+):(\d+)/)\n", said)
        if found:
            return Dashboard(process, f"http://127.0.0.1:{found.group(3)}", found.group(1))
        if process.poll() is not None or time.monotonic() > deadline:
            stop(process)
            raise AssertionError(f"the dashboard did not say where it listens (exit {process.returncode}): {said[-2000:]}")
        time.sleep(0.05)


def stop(process: subprocess.Popen[bytes], within_s: float = 15.0) -> int:
    """SIGTERM, then the exit code (killed, and the test failed, past ``within_s``)."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(within_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        raise AssertionError(f"the dashboard did not stop within {within_s:g} s of SIGTERM") from None


async def until(what: str, check: Callable[[], Awaitable[T | None]], timeout_s: float = WITHIN_S) -> T:
    """``check()`` again until it gives something (not None); fails after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await check()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        await asyncio.sleep(0.1)


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("dashboard-cluster-logs")
    settings = make_settings(amqp_url, mongo_url, heartbeat_s=0.5)
    with running_cluster(settings, {"cpu": 1}, logs, plugin_dirs=[TEST_PLUGINS], worker_concurrency=3) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def dashboard(cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dashboard]:
    env = {k: v for k, v in cluster.environment().items() if k != "THEODOLITE_DASHBOARD_TOKEN"}
    running = start_dashboard(env, tmp_path_factory.mktemp("dashboard") / "stderr.txt")
    try:
        yield running
    finally:
        assert stop(running.process) == 0


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WITHIN_S)) as session:
        yield session


async def get(http: aiohttp.ClientSession, url: str, status: int = 200) -> Any:
    async with http.get(url) as response:
        body = await response.json()
        assert response.status == status, body
        assert response.content_type == "application/json"
        return body


async def post(http: aiohttp.ClientSession, url: str, body: Any = None, status: int = 200, *, raw: bytes | None = None,
               headers: dict[str, str] | None = None) -> Any:
    sent: dict[str, Any] = {"data": raw} if raw is not None else {"json": body}
    async with http.post(url, headers=headers, **sent) as response:
        answer = await response.json()
        assert response.status == status, answer
        return answer


async def run_job(cluster: LocalCluster, text: str, **submission: Any) -> str:
    async with Client(cluster.settings) as client:
        job_id = await client.submit(JobSubmission(document=text, job_id=new_job_id(), **submission))
        await client.wait(job_id, timeout_s=WITHIN_S)
        return job_id


async def sse(response: aiohttp.ClientResponse) -> AsyncIterator[tuple[str, str]]:
    """The stream's events as (name, data); a comment as ("", its text)."""
    name, data = "message", ""
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith(":"):
            yield "", line[1:].strip()
        elif line.startswith("event: "):
            name = line[len("event: "):]
        elif line.startswith("data: "):
            data = line[len("data: "):]
        elif not line and data:
            yield name, data
            name, data = "message", ""


async def test_jobs_a_job_and_its_steps_read_as_the_cli_reads_them(cluster: LocalCluster, dashboard: Dashboard,
                                                                   http: aiohttp.ClientSession) -> None:
    api = f"{dashboard.url}/api"
    job_id = await run_job(cluster, DIAGNOSED, fail_fast=False, labels={"suite": "dashboard"})

    listed = (await get(http, f"{api}/jobs?label=suite=dashboard&state=failed&since=1h"))["jobs"]
    assert [row["job_id"] for row in listed] == [job_id]
    assert listed[0]["steps_total"] == 3 and listed[0]["steps_failed"] == 1 and listed[0]["failed_step"] == "boom"
    assert (await get(http, f"{api}/jobs?label=suite=other"))["jobs"] == []
    assert len((await get(http, f"{api}/jobs?limit=1"))["jobs"]) == 1
    for bad in ("state=bogus", "limit=0", "limit=x", "since=yesterday-ish", "label=="):
        assert "error" in await get(http, f"{api}/jobs?{bad}", status=400)

    shown = await get(http, f"{api}/jobs/{job_id}")
    assert shown["run"] == 1 and shown["job"]["state"] == "failed" and shown["job"]["labels"] == {"suite": "dashboard"}
    assert shown["job"]["steps"] == {
        "talk": {"state": "succeeded", "task": "chatty", "device": "cpu", "attempt": 1},
        "boom": {"state": "failed", "task": "chatty_then_fail", "device": "cpu", "attempt": 1},
        "after": {"state": "succeeded", "task": "plus", "device": "cpu", "attempt": 1},
    }
    graph = shown["graph"]
    assert {name for node in graph["nodes"] for name in node["steps"]} == {"talk", "boom", "after"}
    assert len(graph["edges"]) == 1
    assert await get(http, f"{api}/jobs/no-such-job", status=404) == {"error": "no job named no-such-job"}

    talk = await until("talk's final log", lambda: _final_log(http, f"{api}/jobs/{job_id}/steps/talk"))
    assert talk["step"]["state"] == "succeeded" and talk["traceback"] is None
    assert talk["metrics"] == {"loss": [[0, 1.0], [1, 0.5], [2, 0.25]]}
    assert talk["step"]["metrics"]["loss"]["last"] == 0.25
    (log,) = talk["logs"]
    assert log["stream"] == "output" and log["attempt"] == 1 and "line 3 of 3" in log["text"]

    boom = await until("boom's final log", lambda: _final_log(http, f"{api}/jobs/{job_id}/steps/boom"))
    assert boom["step"]["state"] == "failed" and boom["step"]["error"]["message"] == "chatty failure"
    assert "RuntimeError: chatty failure" in boom["traceback"] and "Traceback" in boom["traceback"]
    assert "about to fail (1)" in boom["logs"][0]["text"] and boom["metrics"] == {}
    missing = await get(http, f"{api}/jobs/{job_id}/steps/ghost", status=404)
    assert missing == {"error": f"no step named ghost in job {job_id}"}

    config = await get(http, f"{api}/config")
    assert config == {"namespace": cluster.settings.namespace, "token_required": False, "host": "127.0.0.1"}


async def _final_log(http: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    found = await get(http, url)
    return found if found["logs"] and all(log["final"] for log in found["logs"]) else None


async def test_pages_and_static_files_are_served_and_nothing_else(dashboard: Dashboard, http: aiohttp.ClientSession) -> None:
    static = Path(ROOT, "services", "dashboard", "static")
    for path, name in (("/", "index.html"), ("/jobs/abc", "job.html")):
        async with http.get(dashboard.url + path) as response:
            if (static / name).exists():
                assert response.status == 200 and response.content_type == "text/html"
                assert await response.read() == (static / name).read_bytes()
            else:  # the pages are written beside this: absent, a plain 404
                assert response.status == 404
    for script in static.glob("*.js"):
        async with http.get(f"{dashboard.url}/static/{script.name}") as response:
            assert response.status == 200 and response.content_type == "text/javascript"
    for stray in ("/static/..%2Fapp.py", "/static/.hidden", "/static/nothing.js", "/static/%2E%2E", "/static/"):
        async with http.get(URL(dashboard.url + stray, encoded=True)) as response:  # sent as written
            assert response.status == 404, stray
    assert "error" in await get(http, f"{dashboard.url}/api/nothing", status=404)


async def test_the_event_stream_delivers_a_jobs_events_and_the_cluster(cluster: LocalCluster, dashboard: Dashboard,
                                                                       http: aiohttp.ClientSession) -> None:
    job_id, heard, names = new_job_id(), [], set()
    async with http.get(f"{dashboard.url}/api/events", params={"job": job_id}) as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        async with contextlib.aclosing(sse(response)) as stream, Client(cluster.settings) as client:
            assert await anext(stream) == ("", "connected")
            await client.submit(JobSubmission(document="graph:\n  one: {plus: [1]}\n  two: {plus: [$one]}\n", job_id=job_id))
            async with asyncio.timeout(WITHIN_S):
                async for name, data in stream:
                    names.add(name)
                    if name == "job":
                        heard.append(json.loads(data))
                    if "cluster" in names and heard and heard[-1]["type"] == "job.succeeded":
                        break
    assert {event["job_id"] for event in heard} == {job_id}, "only the job's events"
    assert [event["seq"] for event in heard] == list(range(1, len(heard) + 1)), "in number order, none missed"
    assert [event["step"] for event in heard if event["type"] == "step.succeeded"] == ["one", "two"]
    assert "worker" in names, "heartbeats go to every reader"

    screen = await until("the worker on the cluster screen", lambda: _worker_shown(http, dashboard))
    assert set(screen) == {"devices", "workers", "alarms", "events"} and screen["events"] > 0
    assert [device["device"] for device in screen["devices"]] == ["cpu"] and screen["alarms"] == []


async def _worker_shown(http: aiohttp.ClientSession, dashboard: Dashboard) -> dict[str, Any] | None:
    screen = await get(http, f"{dashboard.url}/api/cluster")
    online = [w for w in screen["workers"] if w["device"] == "cpu" and w["status"] == "online"]
    return screen if online and screen["devices"] else None


async def test_cancel_by_post_cancels_a_running_job(cluster: LocalCluster, dashboard: Dashboard, http: aiohttp.ClientSession) -> None:
    api = f"{dashboard.url}/api"
    async with Client(cluster.settings) as client:
        job_id = await client.submit(JobSubmission(document="graph:\n  slow: {wait_for_cancel: [60]}\n  later: {plus: [$slow]}\n"))

    async def running() -> bool | None:
        return True if (await get(http, f"{api}/jobs/{job_id}"))["job"]["steps"]["slow"]["state"] == "running" else None

    await until("the slow step running", running)
    url = f"{api}/jobs/{job_id}/cancel"
    assert "error" in await post(http, url, {"grace_s": -1}, status=400)
    assert "error" in await post(http, url, {"grace": 1}, status=400)
    assert "error" in await post(http, url, status=400, raw=b"{not json")
    assert "larger than" in (await post(http, url, {"pad": "x" * 70_000}, status=413))["error"]
    refused = await post(http, url, {"grace_s": 1}, status=403, headers={"Origin": "https://elsewhere.example"})
    assert "another site" in refused["error"]

    sent = await post(http, url, {"grace_s": 1})
    assert sent == {"ok": True, "code": "sent", "message": f"cancel of job {job_id} sent: running steps are stopped within 1 s"}

    async def ended() -> str | None:
        state = (await get(http, f"{api}/jobs/{job_id}"))["job"]["state"]
        return state if state in ("cancelled", "succeeded", "failed") else None

    assert await until("the job ending", ended) == "cancelled"
    again = await post(http, url)
    assert again["ok"] and again["message"] == f"job {job_id} has already ended (cancelled): nothing to cancel"
    unknown = await post(http, f"{api}/jobs/nope/cancel", {}, status=404)
    assert unknown["ok"] is False and unknown["message"] == f"no job named nope in namespace {cluster.settings.namespace}"


async def test_resume_by_post_starts_the_next_run(cluster: LocalCluster, dashboard: Dashboard, http: aiohttp.ClientSession) -> None:
    api = f"{dashboard.url}/api"
    job_id = await run_job(cluster, RESUMABLE, fail_fast=False)
    url = f"{api}/jobs/{job_id}/resume"
    refused = await post(http, url, {"parameters": {"nope": 1}}, status=409)
    assert refused["ok"] is False and refused["message"].startswith(f"cannot resume {job_id}: no parameter named 'nope'")
    assert "no step named 'ghost'" in (await post(http, url, {"from_steps": ["ghost"]}, status=409))["message"]

    sent = await post(http, url, {"parameters": {"ok": True}})
    assert sent["ok"] and sent["run"] == 2
    assert sent["message"] == f"resume of job {job_id} sent: run 2 runs 2 step(s) again (b, c)"

    async def second_run_ended() -> dict[str, Any] | None:
        shown = await get(http, f"{api}/jobs/{job_id}")
        return shown if shown["run"] == 2 and shown["job"]["state"] in ("succeeded", "failed") else None

    shown = await until("the second run ending", second_run_ended)
    assert shown["job"]["state"] == "succeeded" and shown["job"]["steps"]["b"]["attempt"] == 2
    assert (await post(http, f"{api}/jobs/nope/resume", {}, status=404))["ok"] is False


def test_bound_to_every_address_it_refuses_to_start_without_a_token(cluster: LocalCluster) -> None:
    env = {k: v for k, v in cluster.environment().items() if k != "THEODOLITE_DASHBOARD_TOKEN"}
    refused = subprocess.run([*DASHBOARD, "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, env=env,
                             cwd=ROOT, timeout=WITHIN_S, check=False)
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.startswith("error: the dashboard would listen on 0.0.0.0") and "THEODOLITE_DASHBOARD_TOKEN" in refused.stderr


async def test_bound_to_every_address_actions_need_the_token(cluster: LocalCluster, tmp_path: Path,
                                                             http: aiohttp.ClientSession) -> None:
    env = {k: v for k, v in cluster.environment().items() if k != "THEODOLITE_DASHBOARD_TOKEN"}
    job_id = await run_job(cluster, "graph:\n  x: {plus: [1]}\n")
    open_one = start_dashboard({**env, "THEODOLITE_DASHBOARD_TOKEN": TOKEN}, tmp_path / "stderr.txt", "--host", "0.0.0.0")
    try:
        assert open_one.printed.startswith("http://0.0.0.0:")
        api = f"{open_one.url}/api"
        config = await get(http, f"{api}/config")
        assert config["token_required"] is True and config["host"] == "0.0.0.0"
        assert [row["job_id"] for row in (await get(http, f"{api}/jobs"))["jobs"]][:1] == [job_id], "reading needs no token"
        url = f"{api}/jobs/{job_id}/cancel"
        refusal = {"error": "this dashboard listens on 0.0.0.0: actions need the token in THEODOLITE_DASHBOARD_TOKEN "
                            "(Authorization: Bearer ...)"}
        assert await post(http, url, {}, status=403) == refusal
        assert await post(http, url, {}, status=403, headers={"Authorization": "Bearer wrong"}) == refusal
        done = await post(http, url, {}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert done["ok"] and "already ended (succeeded)" in done["message"]

        async with http.get(f"{api}/events") as response, contextlib.aclosing(sse(response)) as stream:
            assert await anext(stream) == ("", "connected")  # an open stream does not hold the server
            started = time.monotonic()
            assert stop(open_one.process) == 0
            assert time.monotonic() - started < 10
    finally:
        stop(open_one.process)


async def test_mongodb_gone_is_a_503_not_a_crash(amqp_url: str, tmp_path: Path, http: aiohttp.ClientSession) -> None:
    mongo = MongoWireServer(tmp_path / "mongo")
    mongo.start()
    settings = make_settings(amqp_url, mongo.url, connect_timeout_s=1.0, store_retry_s=1.0)  # a quick 503
    env = {**os.environ, **settings.child_environment()}
    env.pop("THEODOLITE_DASHBOARD_TOKEN", None)
    lone: Dashboard | None = None
    try:
        lone = start_dashboard(env, tmp_path / "stderr.txt")
        assert (await get(http, f"{lone.url}/api/jobs"))["jobs"] == []
        mongo.stop()
        gone = await get(http, f"{lone.url}/api/jobs", status=503)
        assert gone["error"].startswith("MongoDB is out of reach")
        assert (await post(http, f"{lone.url}/api/jobs/x/cancel", {}, status=503))["error"].startswith("MongoDB")
        assert "workers" in await get(http, f"{lone.url}/api/cluster"), "the live view goes on"
        assert lone.process.poll() is None
        mongo.start()  # back, on the same port: the dashboard reads again

        async def back() -> bool | None:
            async with http.get(f"{lone.url}/api/jobs") as response:
                return True if response.status == 200 else None

        await until("reads answered again", back)
    finally:
        if lone is not None:
            assert stop(lone.process) == 0
        if mongo.process is not None:
            await asyncio.to_thread(cleanup, settings)  # its queues on the shared broker, and its database
        mongo.stop()
