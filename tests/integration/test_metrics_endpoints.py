"""Every service of a cluster serves /metrics, /healthz and /readyz, and the counts move with a job.

A cluster of two planners (one holds the lease, one stands by) and one cpu worker with one
slot, each on a port of its own (``LocalCluster(metrics=True)``, as ``theodolite up`` does).
A fan-out of sleeping steps keeps the worker busy while the test scrapes: the acting planner
shows ready steps on the cpu queue and an active job, the worker a busy slot; afterwards the
worker has counted every step started and finished with its duration, the planner the job
finished, and the ready gauge is back to 0.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.client import Client
from services.cluster import Child, LocalCluster
from shared.messages import JobSubmission
from tests.support.distributed import TEST_PLUGINS, make_settings, running_cluster
from tests.support.scrape import Samples, get, readyz, scrape, value, wait_for

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo, pytest.mark.slow]

FAN_OUT = 8
SLEEP_S = 0.4


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("metrics-cluster-logs")
    with running_cluster(make_settings(amqp_url, mongo_url), {"cpu": 1}, logs, plugin_dirs=[TEST_PLUGINS],
                         worker_concurrency=1, planners=2, metrics=True) as cluster:
        wait_for(lambda: all(readyz(c.base_url or "")[0] == 200 for c in cluster.children()), 30, "every service to be ready")
        yield cluster


def fan_out(log_dir: Path) -> str:
    lines = ["graph:"]
    for i in range(FAN_OUT):
        lines += [f"  s{i}:", "    logged_sleep:", f"      seconds: {SLEEP_S}", f"      log_dir: {log_dir}", f"      name: s{i}"]
    return "\n".join(lines) + "\n"


def url(child: Child) -> str:
    assert child.base_url is not None, f"{child.name} serves no metrics"
    return child.base_url


def acting_planner(cluster: LocalCluster) -> tuple[Child, Child]:
    """(the planner holding the lease, the one standing by)."""
    first, second = cluster.children("planner")
    return (first, second) if readyz(url(first))[1].get("lease") == "held" else (second, first)


def test_every_service_serves_health_and_readiness(cluster: LocalCluster) -> None:
    services = cluster.children()
    assert len(services) == 3 and len({c.metrics_port for c in services}) == 3, "each service has a port of its own"
    for child in services:
        status, body = get(f"{url(child)}/healthz")
        assert status == 200 and '"alive": true' in body, (child.name, status, body)
    held, standby = acting_planner(cluster)
    assert readyz(url(held)) == (200, {"ready": True, "rabbitmq": True, "mongodb": True, "consuming": True, "lease": "held"})
    assert readyz(url(standby)) == (200, {"ready": True, "rabbitmq": None, "mongodb": True, "consuming": None, "lease": "standby"})
    assert value(scrape(url(held)), "theodolite_planner_lease_held") == 1
    assert value(scrape(url(standby)), "theodolite_planner_lease_held") == 0
    (worker,) = cluster.children("worker")
    assert readyz(url(worker)) == (200, {"ready": True, "rabbitmq": True, "mongodb": True, "consuming": True})
    assert cluster.describe()["metrics"] == {c.name: f"{c.base_url}/metrics" for c in services}


def test_the_counts_move_during_and_after_a_job(cluster: LocalCluster, tmp_path: Path) -> None:
    planner, _ = acting_planner(cluster)
    (worker,) = cluster.children("worker")
    before = {"planner": scrape(url(planner)), "worker": scrape(url(worker))}
    during: dict[str, list[Samples]] = {"planner": [], "worker": []}

    async def scenario() -> str:
        async with Client(cluster.settings) as client:
            job_id = await client.submit(JobSubmission(document=fan_out(tmp_path)))
            waiting = asyncio.ensure_future(client.wait(job_id, timeout_s=120))
            while not waiting.done():  # scrape every service while the job runs
                during["planner"].append(await asyncio.to_thread(scrape, url(planner)))
                during["worker"].append(await asyncio.to_thread(scrape, url(worker)))
                await asyncio.sleep(0.1)
            return (await waiting).status

    assert asyncio.run(scenario()) == "succeeded"
    after = {"planner": scrape(url(planner)), "worker": scrape(url(worker))}

    # during: ready steps waiting on the cpu queue (one slot for eight steps), an active job, a busy slot
    assert max(value(s, "theodolite_ready_steps", device="cpu") for s in during["planner"]) > 1
    assert max(value(s, "theodolite_oldest_ready_step_age_seconds", device="cpu") for s in during["planner"]) >= SLEEP_S
    assert max(value(s, "theodolite_planner_active_jobs") for s in during["planner"]) == 1
    assert max(value(s, "theodolite_worker_slots_busy", device="cpu") for s in during["worker"]) == 1
    assert all(value(s, "theodolite_worker_slots", device="cpu") == 1 for s in during["worker"])

    # after: every step counted once, with its duration; nothing ready any more; the job counted
    def moved(service: str, name: str, **labels: str) -> float:
        return value(after[service], name, **labels) - value(before[service], name, **labels)

    labels = {"task": "logged_sleep", "device": "cpu"}
    assert moved("worker", "theodolite_steps_started_total", **labels) == FAN_OUT
    assert moved("worker", "theodolite_steps_finished_total", state="succeeded", **labels) == FAN_OUT
    assert moved("worker", "theodolite_step_duration_seconds_count", task="logged_sleep") == FAN_OUT
    assert moved("worker", "theodolite_step_duration_seconds_sum", task="logged_sleep") >= FAN_OUT * SLEEP_S
    assert moved("planner", "theodolite_jobs_finished_total", state="succeeded") == 1
    assert value(after["planner"], "theodolite_ready_steps", device="cpu") == 0
    assert value(after["planner"], "theodolite_oldest_ready_step_age_seconds", device="cpu") == 0
    assert value(after["planner"], "theodolite_planner_active_jobs") == 0
    assert value(after["worker"], "theodolite_worker_slots_busy", device="cpu") == 0
    assert value(after["planner"], "process_resident_memory_bytes") > 0
