"""The HTTP server of /metrics, /healthz and /readyz, readiness rules, the cached MongoDB ping,
and where rejections are counted (``settle``)."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import aiohttp
import pytest

from shared.distributed_errors import MetricsPortUnavailable
from shared.observability.health import LeaseRole, MongoWatch, Readiness
from shared.observability.http import HealthServer, NoServer, metrics_server
from shared.observability.metrics import WorkerMetrics
from shared.observability.reasons import RejectReason
from shared.transport.settle import Reject, settle


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


async def test_the_server_serves_metrics_liveness_and_readiness() -> None:
    metrics = WorkerMetrics("cpu", slots=3)
    state = {"readiness": Readiness(mongodb=True, rabbitmq=True, consuming=True)}
    async with HealthServer(metrics.registry, lambda: state["readiness"], port=0) as server:
        assert server.port > 0
        status, content_type, body = await _get(f"{server.url}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert 'theodolite_worker_slots{device="cpu"} 3.0' in body
        status, _, body = await _get(f"{server.url}/healthz")
        assert status == 200 and '"alive": true' in body
        status, _, body = await _get(f"{server.url}/readyz")
        assert status == 200
        assert body == '{"ready": true, "rabbitmq": true, "mongodb": true, "consuming": true}'
        state["readiness"] = Readiness(mongodb=True, rabbitmq=False, consuming=False)
        status, _, body = await _get(f"{server.url}/readyz")
        assert status == 503 and '"ready": false' in body and '"rabbitmq": false' in body
        status, _, _ = await _get(f"{server.url}/elsewhere")
        assert status == 404


async def test_a_port_in_use_is_one_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        server = HealthServer(WorkerMetrics("cpu", 1).registry, lambda: Readiness(True, True, True), port=port)
        with pytest.raises(MetricsPortUnavailable, match=f"cannot serve metrics on 127.0.0.1:{port}"):
            await server.open()
        await server.close()


def test_port_zero_serves_nothing() -> None:
    server = metrics_server(0, "127.0.0.1", WorkerMetrics("cpu", 1).registry, lambda: Readiness(True, True, True), name="w")
    assert isinstance(server, NoServer)
    assert isinstance(metrics_server(9100, "0.0.0.0", WorkerMetrics("cpu", 1).registry, lambda: Readiness(True, True, True),
                                     name="w"), HealthServer)


@pytest.mark.parametrize(("readiness", "ready"), [
    (Readiness(mongodb=True, rabbitmq=True, consuming=True), True),
    (Readiness(mongodb=False, rabbitmq=True, consuming=True), False),
    (Readiness(mongodb=True, rabbitmq=False, consuming=False), False),
    (Readiness(mongodb=True, rabbitmq=True, consuming=False), False),
    (Readiness(mongodb=True, rabbitmq=True, consuming=True, lease=LeaseRole.HELD), True),
    (Readiness(mongodb=True, rabbitmq=False, consuming=False, lease=LeaseRole.HELD), False),
    (Readiness(mongodb=True, rabbitmq=None, consuming=None, lease=LeaseRole.STANDBY), True),
    (Readiness(mongodb=False, rabbitmq=None, consuming=None, lease=LeaseRole.STANDBY), False),
])
def test_readiness(readiness: Readiness, ready: bool) -> None:
    assert readiness.ready is ready
    body = readiness.as_json()
    assert body["ready"] is ready and ("lease" in body) == (readiness.lease is not None)


def test_a_standby_planner_says_so() -> None:
    assert Readiness(mongodb=True, rabbitmq=None, consuming=None, lease=LeaseRole.STANDBY).as_json() == {
        "ready": True, "rabbitmq": None, "mongodb": True, "consuming": None, "lease": "standby"}


async def test_mongodb_is_pinged_in_the_background_not_per_probe() -> None:
    clock = {"now": 0.0}
    pings: list[float] = []
    failing = {"now": False}

    async def ping() -> None:
        pings.append(clock["now"])
        if failing["now"]:
            raise ConnectionError("down")

    async with MongoWatch(ping, interval_s=0.01, stale_after_s=5.0, clock=lambda: clock["now"]) as watch:
        assert watch.reachable and len(pings) == 1, "one ping on opening"
        for _ in range(100):
            assert watch.reachable  # reading it never pings
        failing["now"] = True
        await asyncio.sleep(0.05)
        assert not watch.reachable
        failing["now"] = False
        await asyncio.sleep(0.05)
        assert watch.reachable
    count = len(pings)
    await asyncio.sleep(0.03)
    assert len(pings) == count, "closed: no more pings"


async def test_a_ping_that_hangs_turns_mongodb_unreachable_once_stale() -> None:
    clock = {"now": 0.0}
    hang = asyncio.Event()

    async def ping() -> None:
        if hang.is_set():
            await asyncio.sleep(3600)

    watch = MongoWatch(ping, interval_s=0.01, stale_after_s=5.0, clock=lambda: clock["now"])
    async with watch:
        hang.set()
        clock["now"] = 4.0
        assert watch.reachable
        clock["now"] = 6.0
        assert not watch.reachable


class _Message:
    """What ``settle`` touches of an aio-pika message."""

    def __init__(self, redelivered: bool = False) -> None:
        self.redelivered = redelivered
        self.processed = False
        self.message_id = "m"
        self.delivery_tag = 1
        self.settled: list[str] = []

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append("reject")

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append("nack")

    async def ack(self) -> None:
        self.settled.append("ack")


async def test_settle_reports_each_rejection_with_its_reason() -> None:
    heard: list[RejectReason] = []
    message: Any = _Message()
    async with settle(message, on_reject=heard.append):
        raise Reject("for a gpu worker", RejectReason.WRONG_DEVICE)
    async with settle(_Message(), on_reject=heard.append):  # type: ignore[arg-type]
        raise Reject("no code")
    async with settle(_Message(redelivered=False), on_reject=heard.append):  # type: ignore[arg-type]
        raise ValueError("a bug, first delivery: requeued, not rejected")
    async with settle(_Message(redelivered=True), on_reject=heard.append):  # type: ignore[arg-type]
        raise ValueError("a bug, again: rejected")
    assert message.settled == ["reject"]
    assert heard == [RejectReason.WRONG_DEVICE, RejectReason.OTHER, RejectReason.HANDLER_FAILED]
