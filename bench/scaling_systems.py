"""The systems of the scaling benchmark, each a context manager giving ``run_fanout(n)``.

``run_fanout(n)`` submits ``n`` independent no-op tasks and returns once the client holds
every result. The processes each system starts are children of the benchmark process, so
:mod:`bench.proc_cpu` finds them (and what they start) by role.

* :func:`theodolite`: ``planners`` planners and ``workers`` cpu workers as ``theodolite up``
  would start them (:class:`services.cluster.LocalCluster`); the second planner stands by.
* :func:`ack_only`: the same planners with :mod:`bench.ack_worker` stand-ins instead of
  workers: they answer every step as succeeded without running it or touching MongoDB.
* :func:`celery_rpc`: ``workers`` x ``celery worker --pool prefork --concurrency 1``, rpc
  result backend (as in bench/peers.py).
* :func:`dask`: Dask's LocalCluster with ``workers`` worker processes of one thread each.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bench.common import REPO_ROOT, BenchConfig, child_env
from bench.distributed_bench import PLUGINS, fanout_document
from services.client import Client
from services.cluster import LocalCluster
from shared.settings import Settings
from shared.transport import Broker

RunFanout = Callable[[int], None]
RESULT_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class TheodoliteOptions:
    planners: int = 1
    concurrency: int = 4
    """Slots per worker (as in bench/distributed_bench.py)."""
    isolation: str = "process"


def _settings(mongo_url: str, cfg: BenchConfig, isolation: str) -> Settings:
    run = uuid.uuid4().hex[:8]
    return Settings(amqp_url=cfg.amqp_url, mongo_url=mongo_url, db=f"bench_scaling_{run}",
                    namespace=f"bench.scaling.{run}", isolation=isolation)


@contextlib.contextmanager
def _client_fanout(settings: Settings) -> Iterator[RunFanout]:
    """A theodolite client on its own event loop; ``run_fanout(n)`` submits and awaits one job."""
    loop = asyncio.new_event_loop()
    client = Client(settings)
    loop.run_until_complete(client.open())
    documents: dict[int, str] = {}

    def run_fanout(n: int) -> None:
        text = documents.setdefault(n, fanout_document(n))
        result = loop.run_until_complete(client.submit_and_wait(text, name="fanout.yaml", timeout_s=RESULT_TIMEOUT_S))
        if result.status != "succeeded":
            raise RuntimeError(f"fan-out job {result.status}: {result.error}")

    try:
        yield run_fanout
    finally:
        loop.run_until_complete(client.close())
        loop.close()


@contextlib.contextmanager
def theodolite(mongo_url: str, cfg: BenchConfig, opts: TheodoliteOptions) -> Iterator[RunFanout]:
    settings = _settings(mongo_url, cfg, opts.isolation)
    with LocalCluster(settings, {"cpu": cfg.workers}, plugin_dirs=[PLUGINS], start_mongo=False,
                      worker_concurrency=opts.concurrency, planners=opts.planners) as cluster:
        cluster.wait_ready(READY_TIMEOUT_S)
        with _client_fanout(cluster.settings) as run_fanout:
            yield run_fanout


async def _wait_consumers(settings: Settings, queue: str, wanted: int, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with Broker(settings, name="bench-scaling-probe") as broker:
        while (await broker.queue_consumers(queue) or 0) < wanted:
            dead = [p.pid for p in procs if p.poll() is not None]
            if dead:
                raise RuntimeError(f"ack-only worker(s) {dead} exited during start-up")
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {wanted} consumers on {queue} after {READY_TIMEOUT_S:g} s")
            await asyncio.sleep(0.2)


def _stop_processes(procs: list[subprocess.Popen[bytes]], grace_s: float = 10.0) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def ack_only(mongo_url: str, cfg: BenchConfig, opts: TheodoliteOptions) -> Iterator[RunFanout]:
    settings = _settings(mongo_url, cfg, opts.isolation)
    with LocalCluster(settings, {}, plugin_dirs=[PLUGINS], start_mongo=False, planners=opts.planners) as cluster:
        env = cluster.environment()
        env["PYTHONPATH"] = child_env()["PYTHONPATH"]
        prefetch = str(4 * opts.concurrency)  # what a real worker with these slots holds
        procs = [subprocess.Popen([sys.executable, "-m", "bench.ack_worker", "--device", "cpu", "--prefetch", prefetch],
                                  env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL)
                 for _ in range(cfg.workers)]
        try:
            cluster.wait_ready(READY_TIMEOUT_S)  # the planner consumes notices
            names = Broker(cluster.settings, name="names").names
            asyncio.run(_wait_consumers(cluster.settings, names.steps_queue("cpu"), cfg.workers, procs))
            with _client_fanout(cluster.settings) as run_fanout:
                yield run_fanout
        finally:
            _stop_processes(procs)


@contextlib.contextmanager
def celery_rpc(mongo_url: str, cfg: BenchConfig) -> Iterator[RunFanout]:
    from celery import group

    from bench.peers import CeleryOptions, celery_workers
    from bench.peers_celery_app import make_app

    queue = cfg.name(f"bench.scaling.celery.{cfg.workers}")
    app = make_app(cfg.amqp_url, "rpc://", queue)
    noop = app.tasks["bench.noop"]

    def run_fanout(n: int) -> None:
        group(noop.s(i) for i in range(n)).apply_async().get(timeout=RESULT_TIMEOUT_S)

    try:
        with celery_workers(cfg.amqp_url, "rpc://", queue, CeleryOptions(processes=cfg.workers)):
            yield run_fanout
    finally:
        with contextlib.suppress(Exception):
            app.close()


@contextlib.contextmanager
def dask(mongo_url: str, cfg: BenchConfig) -> Iterator[RunFanout]:
    from dask.distributed import Client as DaskClient
    from dask.distributed import LocalCluster as DaskCluster

    from bench.peers import _dask_noop

    os.environ["PYTHONPATH"] = child_env()["PYTHONPATH"]  # worker processes can import bench
    with (
        DaskCluster(n_workers=cfg.workers, threads_per_worker=1, processes=True, dashboard_address=None,
                    silence_logs=logging.ERROR) as cluster,
        DaskClient(cluster) as client,
    ):
        def run_fanout(n: int) -> None:
            client.gather(client.map(_dask_noop, range(n), pure=False))

        yield run_fanout
        # Closing the cluster races with worker heartbeats; those CommClosedErrors are noise.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
