"""The distributed benchmark: theodolite beside Celery and Dask, same broker and Mongo-wire server.

    .venv/bin/python bench/distributed.py            # full: 200-step chain, 5,000-task fan-out, 2 workers
    .venv/bin/python bench/distributed.py --quick    # 1 repetition
    .venv/bin/python bench/distributed.py --only theodolite --quick
    .venv/bin/python bench/distributed.py --only theodolite --quick --isolation thread

theodolite runs as `theodolite up` would: a planner and two cpu workers as separate processes
on the same nx-27017 server the peers use (a database of its own); jobs are submitted and
awaited by a client that reads every result back from MongoDB, like the peers' clients.
``--isolation both`` (the default) measures it twice, with task code in a child process per
slot ("theodolite (process isolation)", the workers' default) and in the workers' threads
("theodolite (thread isolation)").
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.common import BenchConfig, BenchResult, measure_patterns
from services.client import Client
from services.cluster import LocalCluster
from shared.settings import Settings

PLUGINS = HERE / "plugins"
TASKS = "tasks:\n  noop: {plugin: bench_tasks.bench_noop}\n"


def chain_document(n: int) -> str:
    lines = [TASKS, "graph:", "  s0: {noop: []}"]
    lines += [f"  s{i}: {{noop: [], dependencies: [s{i - 1}]}}" for i in range(1, n)]
    return "\n".join(lines) + "\n"


def fanout_document(n: int) -> str:
    return "\n".join([TASKS, "graph:", *(f"  s{i}: {{noop: []}}" for i in range(n))]) + "\n"


def measure_theodolite(mongo_url: str, cfg: BenchConfig, *, concurrency: int = 4, isolation: str = "process",
                       name: str = "theodolite") -> BenchResult:
    run = uuid.uuid4().hex[:8]
    settings = Settings(amqp_url=cfg.amqp_url, mongo_url=mongo_url, db=f"bench_theodolite_{run}",
                        namespace=f"bench.theodolite.{run}", isolation=isolation)
    with LocalCluster(settings, {"cpu": cfg.workers}, plugin_dirs=[PLUGINS], start_mongo=False,
                      worker_concurrency=concurrency) as cluster:
        cluster.wait_ready()
        loop = asyncio.new_event_loop()
        client = Client(cluster.settings)
        loop.run_until_complete(client.open())
        documents: dict[tuple[str, int], str] = {}

        def run_job(kind: str, n: int) -> None:
            text = documents.setdefault((kind, n), (chain_document if kind == "chain" else fanout_document)(n))
            result = loop.run_until_complete(client.submit_and_wait(text, name=f"{kind}.yaml"))
            if result.status != "succeeded":
                raise RuntimeError(f"{kind} job {result.status}: {result.error}")

        try:
            return measure_patterns(
                name, cfg, lambda n: run_job("chain", n), lambda n: run_job("fanout", n),
                notes=f"planner + {cfg.workers} cpu workers (separate processes, {concurrency} slots each, "
                f"task code in {'a child process per slot' if isolation == 'process' else 'worker threads'}), "
                "results read back from MongoDB by the client",
            )
        finally:
            loop.run_until_complete(client.close())
            loop.close()


def isolation_measures(isolation: str) -> dict[str, Callable[[str, BenchConfig], BenchResult]]:
    """One measure per isolation mode asked for, each a row of its own."""
    modes = ["process", "thread"] if isolation == "both" else [isolation]

    def measure(mode: str) -> Callable[[str, BenchConfig], BenchResult]:
        name = f"theodolite ({mode} isolation)"
        return lambda url, cfg: measure_theodolite(url, cfg, isolation=mode, name=name)

    return {f"theodolite ({mode} isolation)": measure(mode) for mode in modes}


def main(argv: list[str] | None = None) -> int:
    from bench.peers import main as peers_main

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--isolation", choices=["process", "thread", "both"], default="both",
                        help="where theodolite's workers run task code (default: both, two rows)")
    known, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return peers_main(rest, measure_theodolite=isolation_measures(known.isolation))


if __name__ == "__main__":
    sys.exit(main())
