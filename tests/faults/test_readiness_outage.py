"""/readyz follows RabbitMQ: 503 on planner and worker while it is stopped, 200 once it is back.

A cluster of one planner and one cpu worker, each serving its endpoints on a port of its own.
RabbitMQ is stopped (``rabbitmqctl stop_app``, started again in ``finally``): both services
stay alive (``/healthz`` 200, same processes) but say they are not ready, naming RabbitMQ
and not MongoDB; once it is back and they have reconnected and subscribed again, both are
ready again, the planner still holding the lease.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cluster import LocalCluster
from shared.settings import Settings
from tests.faults.test_reconnect import rabbitmqctl
from tests.support.distributed import ensure_rabbitmq
from tests.support.scrape import get, readyz, scrape, value, wait_for

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo, pytest.mark.slow]


@pytest.mark.timeout(240)
def test_readiness_goes_false_while_rabbitmq_is_stopped_and_true_again_after(settings: Settings, tmp_path: Path) -> None:
    cluster = LocalCluster(settings, {"cpu": 1}, start_mongo=False, log_dir=tmp_path / "logs", metrics=True)
    cluster.start()
    codes: dict[str, int] = {}
    try:
        cluster.wait_ready(60)
        services = {c.name: c.base_url or "" for c in cluster.children()}
        pids = {c.name: c.process.pid for c in cluster.children()}
        wait_for(lambda: all(readyz(base)[0] == 200 for base in services.values()), 30, "every service to be ready")
        assert readyz(services["planner"])[1]["lease"] == "held"
        try:
            rabbitmqctl("stop_app")
            wait_for(lambda: all(readyz(base)[0] == 503 for base in services.values()), 60,
                     "planner and worker to say they are not ready")
            for name, base in services.items():
                status, body = readyz(base)
                assert status == 503 and body["ready"] is False and body["rabbitmq"] is False, (name, body)
                assert body["mongodb"] is True, f"{name}: MongoDB was not stopped: {body}"
                assert get(f"{base}/healthz")[0] == 200, f"{name} must stay alive through the outage"
                assert value(scrape(base), "process_resident_memory_bytes") > 0, f"{name}: /metrics answers too"
        finally:
            rabbitmqctl("start_app")
            ensure_rabbitmq(settings.amqp_url)
        wait_for(lambda: all(readyz(base)[0] == 200 for base in services.values()), 90, "planner and worker to be ready again")
        assert readyz(services["planner"]) == (200, {"ready": True, "rabbitmq": True, "mongodb": True, "consuming": True,
                                                     "lease": "held"})
        assert readyz(services["worker-cpu-0"]) == (200, {"ready": True, "rabbitmq": True, "mongodb": True, "consuming": True})
        assert {c.name: c.process.pid for c in cluster.children()} == pids, "a service exited during the outage"
    finally:
        codes = cluster.stop()
    assert all(code == 0 for code in codes.values()), f"services did not drain cleanly: {codes}; logs in {tmp_path / 'logs'}"
