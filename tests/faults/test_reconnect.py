"""Outages of RabbitMQ and MongoDB are waited out, and `theodolite up` restarts what exits.

1. RabbitMQ stopped (``rabbitmqctl stop_app``) for about 5 s mid-job: planner and workers stay
   up (same processes), reconnect, and the job completes with every step run once; the test's
   own ``Client.wait`` survives the outage too.
2. The Mongo-wire server stopped for 15 s mid-job: the job succeeds and ``theodolite submit
   --wait --json`` (a subprocess) prints its result and exits 0; no service logs an asyncio
   "Task exception was never retrieved".
3. ``theodolite up`` with a worker killed by SIGKILL: up says so, restarts it, and a job then
   still completes.

Executions are counted with ``traced_sleep`` (tests/integration/testplugins/job_book_tasks.py).
RabbitMQ is always started again (``start_app`` in ``finally``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from services.client import Client
from services.cluster import LocalCluster, MongoWireServer
from shared.messages import JobSubmission
from shared.settings import Settings
from tests.support.distributed import TEST_PLUGINS, cleanup, ensure_rabbitmq, make_settings

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo, pytest.mark.slow]

CLI = [sys.executable, "-m", "services.cli"]
NEVER_RETRIEVED = "exception was never retrieved"
LOST, BACK = "lost the RabbitMQ connection", "RabbitMQ connection back after"


# helpers ------------------------------------------------------------------------------------

def traced_chain(log_dir: Path, *, length: int, seconds: float, long_s: float | None = None) -> str:
    """``c0 -> c1 -> ...`` of ``traced_sleep`` steps (``c{i}`` returns i + 1), and, with
    ``long_s``, an independent step ``long`` sleeping that long."""
    def step(name: str, sleep_s: float, x: str | None = None) -> list[str]:
        lines = [f"  {name}:", "    traced_sleep:", f"      seconds: {sleep_s}", f"      log_dir: {log_dir}", f"      name: {name}"]
        return lines + ([f"      x: {x}"] if x else [])

    lines = ["graph:", *step("c0", seconds)]
    for i in range(1, length):
        lines += step(f"c{i}", seconds, f"$c{i - 1}")
    if long_s is not None:
        lines += step("long", long_s)
    return "\n".join(lines) + "\n"


def trace(log_dir: Path) -> list[tuple[str, str]]:
    path = log_dir / "trace.log"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [(parts[0], parts[1]) for parts in (line.split() for line in lines) if len(parts) == 3]


def counts(log_dir: Path, kind: str) -> Counter[str]:
    return Counter(name for k, name in trace(log_dir) if k == kind)


def logs(log_dir: Path) -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted(log_dir.glob("*.log"))}


async def wait_until(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        await asyncio.sleep(0.1)


def rabbitmqctl(command: str) -> None:
    subprocess.run(["rabbitmqctl", command], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def cluster_of(settings: Settings, workers: dict[str, int], log_dir: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(settings, workers, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=log_dir)
    cluster.start()
    codes: dict[str, int] = {}
    try:
        cluster.wait_ready(60)
        yield cluster
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), f"services did not drain cleanly: {codes}; logs in {log_dir}"


# 1: RabbitMQ restarted mid-job ----------------------------------------------------------------

@pytest.mark.timeout(240)
def test_a_rabbitmq_restart_mid_job_is_waited_out_by_every_service(settings: Settings, tmp_path: Path) -> None:
    length, long_s = 10, 8.0
    text = traced_chain(tmp_path, length=length, seconds=0.3, long_s=long_s)
    log_dir = tmp_path / "logs"
    with cluster_of(settings, {"cpu": 2}, log_dir) as cluster:
        pids = {c.name: c.process.pid for c in cluster.children}

        async def scenario() -> tuple[Any, int, float]:
            async with Client(settings) as client:
                job_id = await client.submit(JobSubmission(document=text))
                await wait_until(lambda: counts(tmp_path, "start")["long"] and counts(tmp_path, "end")["c1"], 30,
                                 "long to start and c1 to end")
                assert not counts(tmp_path, "end")["long"], "precondition: long must still be running at the outage"
                began = time.monotonic()
                await asyncio.to_thread(rabbitmqctl, "stop_app")
                try:
                    await asyncio.sleep(5.0)
                finally:
                    await asyncio.to_thread(rabbitmqctl, "start_app")
                down_s = time.monotonic() - began
                result = await client.wait(job_id, timeout_s=120)
                return result, client.broker.outages, down_s

        try:
            result, client_outages, down_s = asyncio.run(scenario())
        finally:
            ensure_rabbitmq(settings.amqp_url)
        alive = {c.name: c.process.pid for c in cluster.children if c.process.poll() is None}
    service_logs = logs(log_dir)
    assert alive == pids, f"services exited or were replaced during the outage: before {pids}, after {alive}"
    assert result.status == "succeeded", f"the job ended {result.status} after a RabbitMQ restart: {result.error}"
    assert result.steps[f"c{length - 1}"].outputs == {"value": length} and result.steps["long"].outputs == {"value": 1}
    names = [f"c{i}" for i in range(length)] + ["long"]
    starts, ends = counts(tmp_path, "start"), counts(tmp_path, "end")
    assert all(starts[n] == 1 for n in names) and all(ends[n] == 1 for n in names), (
        f"every step must run exactly once across the restart: starts {dict(starts)}, ends {dict(ends)}")
    assert client_outages >= 1, "the test's Client did not notice the outage: was RabbitMQ really stopped?"
    for name, text_ in service_logs.items():
        if name == "trace.log":
            continue
        assert text_.count(LOST) >= 1 and text_.count(BACK) >= 1, f"{name} should log the loss and the recovery:\n{text_[-3000:]}"
        assert NEVER_RETRIEVED not in text_, f"{name}: {text_[-3000:]}"
    print(f"RabbitMQ down (stop_app to start_app) {down_s:.1f} s")


# 2: MongoDB stopped mid-job ---------------------------------------------------------------------

@pytest.mark.timeout(300)
def test_a_mongodb_outage_mid_job_and_submit_wait_prints_the_result(amqp_url: str, tmp_path: Path) -> None:
    server = MongoWireServer(tmp_path / "mongo")  # ours: stopped and started again on the same port and data
    server.start()
    settings = make_settings(amqp_url, server.url)
    length = 6
    job = tmp_path / "chain.yaml"
    job.write_text(traced_chain(tmp_path, length=length, seconds=1.0))
    log_dir = tmp_path / "logs"
    env = {**os.environ, **settings.child_environment(), "PYTHONUNBUFFERED": "1"}
    try:
        with cluster_of(settings, {"cpu": 2}, log_dir) as cluster, cluster.supervised() as supervisor:
            workers = {c.name: c.process.pid for c in cluster.children("worker")}
            submit = subprocess.Popen([*CLI, "submit", str(job), "--wait", "--json", "--plugins", str(TEST_PLUGINS)],
                                      cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            try:
                asyncio.run(wait_until(lambda: len(counts(tmp_path, "end")) >= 2, 60, "two steps to finish"))
                server.stop()
                assert len(counts(tmp_path, "end")) < length, "precondition: the job must still be running at the outage"
                time.sleep(15.0)
                server.start()
                out, err = submit.communicate(timeout=180)
            finally:
                if submit.poll() is None:
                    submit.kill()
                    submit.communicate()
            alive_workers = {c.name: c.process.pid for c in cluster.children("worker")}
    finally:
        if server.process is None:
            server.start()
        with contextlib.suppress(Exception):
            cleanup(settings)
        server.stop()
    assert submit.returncode == 0, f"submit --wait exited {submit.returncode}; stderr:\n{err[-3000:]}"
    assert "Traceback" not in err, err[-3000:]
    result = json.loads(out)
    assert result["status"] == "succeeded", result
    assert result["steps"][f"c{length - 1}"]["outputs"] == {"value": length}
    assert alive_workers == workers, f"workers exited during the MongoDB outage: before {workers}, after {alive_workers}"
    for name, text_ in [*logs(log_dir).items(), ("submit stderr", err)]:
        assert NEVER_RETRIEVED not in text_, f"{name}: {text_[-3000:]}"
    if supervisor.lines:
        print("restarts during the outage:", supervisor.lines)


# 3: up restarts a killed worker ---------------------------------------------------------------

@pytest.mark.timeout(240)
def test_up_restarts_a_worker_killed_by_sigkill_and_says_so(amqp_url: str, mongo_url: str, tmp_path: Path) -> None:
    from tests.integration.test_up_then_submit import Up, bare_environment

    tag = uuid.uuid4().hex[:10]
    settings = Settings(amqp_url=amqp_url, mongo_url=mongo_url, namespace=f"tup-{tag}", db=f"tup_{tag}")  # the database is up's
    job = tmp_path / "chain.yaml"
    job.write_text(traced_chain(tmp_path, length=3, seconds=0.1))
    up_env = bare_environment(THEODOLITE_AMQP_URL=amqp_url, THEODOLITE_NAMESPACE=settings.namespace,
                              THEODOLITE_DB=settings.db, THEODOLITE_TICK_S="0.3")
    up = Up(["--workers", "cpu=1", "--plugins", str(TEST_PLUGINS)], tmp_path, up_env)
    try:
        up.wait_for("cluster up", timeout_s=120)
        line = up.wait_for("  worker-cpu-0: pid ", timeout_s=10)
        victim = int(line.rsplit(" ", 1)[1])
        os.kill(victim, signal.SIGKILL)
        said = up.wait_for("worker-cpu-0 ", timeout_s=20)
        assert said == "worker-cpu-0 was killed by SIGKILL; restarting in 1 s", said
        restarted = up.wait_for("worker-cpu-0 restarted: pid ", timeout_s=20)
        assert int(restarted.rsplit(" ", 1)[1]) != victim
        done = subprocess.run([*CLI, "submit", str(job), "--wait", "--json", "--plugins", str(TEST_PLUGINS)],
                              cwd=tmp_path, env=bare_environment(), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["status"] == "succeeded"
    finally:
        code = up.interrupt()
        cleanup(settings)
    assert code == 0, "\n".join(up.seen)
    assert not [s for s in up.seen if "restarting in" in s and "worker-cpu-0" not in s], up.seen
