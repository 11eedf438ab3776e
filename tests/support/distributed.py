"""Fixtures shared by the integration and fault tests: real RabbitMQ and a Mongo-wire server.

RabbitMQ: 127.0.0.1:5672 (or THEODOLITE_TEST_AMQP_URL); started with ``rabbitmq-server
-detached`` (installed with apt-get first if missing) when not answering. MongoDB: an
nx-27017 process on a free port unless THEODOLITE_TEST_MONGO_URL names a real server.
Every test (or module cluster) gets its own namespace and database, removed afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import pytest
from pymongo import AsyncMongoClient

from services.cluster import LocalCluster, MongoWireServer, port_answers
from shared.constants import Names
from shared.settings import Settings
from shared.transport.topology import all_exchange_names, all_queue_names

ROOT = Path(__file__).resolve().parents[2]
TEST_PLUGINS = ROOT / "tests" / "integration" / "testplugins"
DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"


async def _amqp_ok(url: str) -> bool:
    try:
        connection = await aio_pika.connect(url, timeout=3)
    except Exception:  # noqa: BLE001 - not up yet
        return False
    await connection.close()
    return True


def ensure_rabbitmq(url: str, timeout_s: float = 120.0) -> None:
    if port_answers("127.0.0.1", 5672) and asyncio.run(_amqp_ok(url)):
        return
    if shutil.which("rabbitmq-server") is None:
        subprocess.run(["apt-get", "install", "-y", "rabbitmq-server"], check=True, capture_output=True)
    if not port_answers("127.0.0.1", 5672):
        subprocess.run(["rabbitmq-server", "-detached"], check=False, capture_output=True)
    deadline = time.monotonic() + timeout_s
    while not asyncio.run(_amqp_ok(url)):
        if time.monotonic() > deadline:
            pytest.fail(f"RabbitMQ did not answer at {url} within {timeout_s:g} s")
        time.sleep(1)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("THEODOLITE_TEST_AMQP_URL", DEFAULT_AMQP)
    ensure_rabbitmq(url)
    return url


@pytest.fixture(scope="session")
def mongo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url = os.environ.get("THEODOLITE_TEST_MONGO_URL")
    if url:
        yield url
        return
    server = MongoWireServer(tmp_path_factory.mktemp("nx-27017"))
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


def make_settings(amqp_url: str, mongo_url: str, **overrides: object) -> Settings:
    tag = uuid.uuid4().hex[:10]
    values: dict[str, object] = {
        "amqp_url": amqp_url, "mongo_url": mongo_url, "namespace": f"ttest-{tag}", "db": f"ttest_{tag}",
        "lease_s": 3.0, "tick_s": 0.3, "concurrency": 2, "drain_timeout_s": 20.0, "gridfs_threshold_bytes": 4096,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


async def _cleanup(settings: Settings, devices: list[str]) -> None:
    names = Names(settings.namespace)
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        for queue in all_queue_names(names, devices):
            channel = await connection.channel()
            with contextlib.suppress(Exception):  # it may not exist
                await channel.queue_delete(queue)
            if not channel.is_closed:
                await channel.close()
        channel = await connection.channel()
        for exchange in all_exchange_names(names):
            await channel.exchange_delete(exchange)
    finally:
        await connection.close()
    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(settings.mongo_url)
    try:
        with contextlib.suppress(Exception):  # best effort
            await client.drop_database(settings.db)
    finally:
        await client.close()


def cleanup(settings: Settings, devices: list[str] = ("cpu", "gpu", "tpu")) -> None:  # type: ignore[assignment]
    asyncio.run(_cleanup(settings, list(devices)))


@pytest.fixture
def settings(amqp_url: str, mongo_url: str) -> Iterator[Settings]:
    value = make_settings(amqp_url, mongo_url)
    yield value
    cleanup(value)


@contextlib.contextmanager
def running_cluster(settings: Settings, workers: dict[str, int], logs: Path, *, ready_s: float = 90,
                    **options: object) -> Iterator[LocalCluster]:
    """A cluster for a test module: started, ready, then stopped; every service must exit 0."""
    instance = LocalCluster(settings, workers, start_mongo=False, log_dir=logs, **options)  # type: ignore[arg-type]
    instance.start()
    try:
        instance.wait_ready(ready_s)
        yield instance
    finally:
        codes = instance.stop()
        cleanup(settings)
        assert all(code == 0 for code in codes.values()), f"services did not drain cleanly: {codes}; logs in {logs}"
