"""Peer side of the distributed benchmark (issue 3, item 9): Celery and Dask on this machine.

Measures, against the same RabbitMQ and the same Mongo-wire server (a private nx-27017):

1. per-hop latency: wall time of a chain of no-op tasks (each depends on the previous one),
   from submission until the client holds the last result, divided by the chain length;
2. fan-out throughput: no-op tasks / wall time from submission until the client holds every
   result, with 2 worker processes.

Systems: Celery with the rpc result backend, Celery with its MongoDB result backend on the
nx-27017 server, Dask distributed (LocalCluster, 2 worker processes x 1 thread). Every system is
warmed up before measuring; each pattern is repeated and the median is reported.

Run (from the repository root):

    .venv/bin/python bench/peers.py --quick      # 1 measured repetition, ~2 minutes
    .venv/bin/python bench/peers.py              # 5 repetitions, median, ~4-6 minutes

Adding theodolite to the same table (with ratios vs every peer)::

    from bench.peers import main
    main(measure_theodolite=my_measure)          # my_measure(mongo_url, cfg) -> BenchResult

or ``bench/peers.py --theodolite some.module:function``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``bench`` as a package from the repo root
    _here = Path(__file__).resolve().parent
    # Drop bench/ itself from the path: a module there (bench/distributed.py) would shadow the
    # ``distributed`` package that Dask needs.
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from bench.common import (
    QUICK,
    REPO_ROOT,
    BenchConfig,
    BenchResult,
    child_env,
    ensure_rabbitmq,
    machine_load,
    measure_patterns,
    ratio_table,
    results_table,
)
from bench.mongo_server import MongoServer

Measure = Callable[[str, BenchConfig], BenchResult]

# Result polling interval for Celery backends without native join (MongoDB). Celery's default is
# 0.5 s, which would quantise a ~1 s chain; 5 ms costs the server little and the chain nothing.
CELERY_POLL_INTERVAL = 0.005
RESULT_TIMEOUT = 300.0


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ==================================================================================================
# Celery
# ==================================================================================================
@dataclasses.dataclass
class CeleryOptions:
    # "prefork" (Celery's default): each worker is a consumer parent plus one pool child process.
    # "solo": each worker process consumes and runs tasks itself. With the MongoDB backend its
    #   event loop sits in epoll ~80 ms between prefetched batches (14-50 tasks/s per worker
    #   measured here), so it is not the fair choice.
    pool: str = "prefork"
    # "canvas": one celery.chain of signatures; each worker publishes the next step itself (the
    #   message carries the rest of the chain, so a 200-step chain costs O(n^2) in message size).
    # "get": the client submits step i+1 with the result of step i after .get() of step i.
    # "both" measures the two and reports the faster (the other is kept in the notes).
    chain_mode: str = "both"
    processes: int = 2  # worker processes (``--concurrency 1`` each); set from cfg.workers


@contextlib.contextmanager
def celery_workers(broker: str, backend: str, queue: str, opts: CeleryOptions) -> Iterator[None]:
    """Start ``opts.processes`` ``celery worker --concurrency 1`` processes on ``queue``; stop them after."""
    env = child_env()
    env.update(BENCH_CELERY_BROKER=broker, BENCH_CELERY_BACKEND=backend, BENCH_CELERY_QUEUE=queue)
    logdir = Path(tempfile.mkdtemp(prefix="bench-celery-"))
    procs: list[subprocess.Popen] = []
    try:
        for i in range(opts.processes):
            cmd = [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.peers_celery_app",
                "worker",
                "--pool",
                opts.pool,
                "--concurrency",
                "1",
                "--hostname",
                f"w{i}.{queue}@%h",
                "--queues",
                queue,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "--loglevel",
                "WARNING",
            ]
            out = open(logdir / f"worker{i}.log", "wb")  # noqa: SIM115 - closed once the child has it
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
            out.close()
        _wait_for_consumers(broker, queue, opts.processes, procs, logdir)
        yield
    finally:
        for p in procs:  # warm shutdown
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(5)
        _delete_queue(broker, queue)
        shutil.rmtree(logdir, ignore_errors=True)


def _wait_for_consumers(broker: str, queue: str, n: int, procs, logdir: Path, timeout: float = 60) -> None:
    from kombu import Connection

    deadline = time.monotonic() + timeout
    consumers, last_error = 0, None
    while time.monotonic() < deadline:
        for p in procs:
            if p.poll() is not None:
                logs = "\n".join(f.read_text(errors="replace")[-3000:] for f in logdir.glob("*.log"))
                raise RuntimeError(f"celery worker exited with {p.returncode}:\n{logs}")
        try:
            with Connection(broker) as conn:
                _, _, consumers = conn.default_channel.queue_declare(queue=queue, passive=True)
            if consumers >= n:
                return
        except Exception as exc:  # noqa: BLE001 - queue not declared yet (404 closes the channel)
            last_error = exc
        time.sleep(0.2)
    raise TimeoutError(
        f"only {consumers} of {n} celery workers consuming {queue} after {timeout:.0f} s ({last_error})"
    )


def _delete_queue(broker: str, queue: str) -> None:
    from kombu import Connection

    with contextlib.suppress(Exception), Connection(broker) as conn:
        ch = conn.default_channel
        ch.queue_delete(queue)
        ch.exchange_delete(queue)


def _measure_celery(
    system: str, slug: str, backend: str, cfg: BenchConfig, opts: CeleryOptions, notes: str
) -> BenchResult:
    from celery import chain, group

    from bench.peers_celery_app import make_app

    opts = dataclasses.replace(opts, processes=cfg.workers)
    queue = cfg.name(f"bench.celery.{slug}")
    app = make_app(cfg.amqp_url, backend, queue)
    noop = app.tasks["bench.noop"]

    def run_canvas_chain(n: int) -> None:
        res = chain(*(noop.s() for _ in range(n))).apply_async()
        res.get(timeout=RESULT_TIMEOUT, interval=CELERY_POLL_INTERVAL)

    def run_get_chain(n: int) -> None:
        value = None
        for _ in range(n):
            value = noop.delay(value).get(timeout=RESULT_TIMEOUT, interval=CELERY_POLL_INTERVAL)

    variants = {"canvas chain": run_canvas_chain, "sequential .get()": run_get_chain}
    if opts.chain_mode == "canvas":
        variants.pop("sequential .get()")
    elif opts.chain_mode == "get":
        variants.pop("canvas chain")

    def run_fanout(n: int) -> None:
        res = group(noop.s(i) for i in range(n)).apply_async()
        res.get(timeout=RESULT_TIMEOUT, interval=CELERY_POLL_INTERVAL)

    log(f"{system}: starting {cfg.workers} celery workers on queue {queue}")
    try:
        with celery_workers(cfg.amqp_url, backend, queue, opts):
            result = measure_patterns(system, cfg, variants, run_fanout, log=log)
    finally:
        with contextlib.suppress(Exception):
            app.close()
    chains = "; ".join(f"{k} {v:.2f} ms/hop" for k, v in result.chain_variants.items())
    result.notes = (
        f"{cfg.workers} × `celery worker --pool {opts.pool} --concurrency 1` (prefetch multiplier 4, "
        f"the default); hop from the {result.chain_variant} ({chains}); "
        f"fan-out as group(...).apply_async().get(); {notes}"
    )
    return result


def measure_celery_rpc(
    mongo_url: str | None = None, cfg: BenchConfig | None = None, opts: CeleryOptions | None = None
) -> BenchResult:
    """Celery with the rpc result backend (results back over RabbitMQ to the client)."""
    cfg, opts = cfg or BenchConfig(), opts or CeleryOptions()
    return _measure_celery("Celery (rpc backend)", "rpc", "rpc://", cfg, opts, "results over AMQP")


def measure_celery_mongo(
    mongo_url: str, cfg: BenchConfig | None = None, opts: CeleryOptions | None = None
) -> BenchResult:
    """Celery with its MongoDB result backend on ``mongo_url`` (a database unique to this run)."""
    cfg, opts = cfg or BenchConfig(), opts or CeleryOptions()
    import pymongo

    db = f"bench_celery_{cfg.run_id}"
    backend = _with_database(mongo_url, db)
    try:
        return _measure_celery(
            "Celery (MongoDB backend)",
            "mongo",
            backend,
            cfg,
            opts,
            f"results polled every {CELERY_POLL_INTERVAL * 1000:.0f} ms",
        )
    finally:
        with contextlib.suppress(Exception):
            client = pymongo.MongoClient(mongo_url, serverSelectionTimeoutMS=2000)
            client.drop_database(db)
            client.close()


def _with_database(mongo_url: str, db: str) -> str:
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(mongo_url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + db, parts.query, parts.fragment))


# ==================================================================================================
# Dask
# ==================================================================================================
def _dask_noop(*args):
    """No-op task; takes (and ignores) the previous step's result in a chain; returns None."""


def measure_dask(mongo_url: str | None = None, cfg: BenchConfig | None = None) -> BenchResult:
    """Dask distributed: LocalCluster with ``cfg.workers`` worker processes of one thread each."""
    cfg = cfg or BenchConfig()
    from dask.distributed import Client, LocalCluster

    os.environ["PYTHONPATH"] = child_env()["PYTHONPATH"]  # worker processes can import bench
    log(f"Dask: starting LocalCluster with {cfg.workers} worker processes")
    with (
        LocalCluster(
            n_workers=cfg.workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        ) as cluster,
        Client(cluster) as client,
    ):

        def run_chain(n: int) -> None:
            fut = client.submit(_dask_noop, pure=False)
            for _ in range(n - 1):
                fut = client.submit(_dask_noop, fut, pure=False)
            fut.result(timeout=RESULT_TIMEOUT)

        def run_fanout(n: int) -> None:
            futs = client.map(_dask_noop, range(n), pure=False)
            client.gather(futs)

        notes = (
            f"LocalCluster(n_workers={cfg.workers}, threads_per_worker=1, processes=True); "
            "chain as client.submit on the previous future (all 200 submitted at once); "
            "fan-out as client.map(..., pure=False) + client.gather"
        )
        result = measure_patterns("Dask distributed", cfg, run_chain, run_fanout, notes=notes, log=log)
        # Closing the cluster races with worker heartbeats; those CommClosedErrors are noise.
        logging.getLogger("distributed").setLevel(logging.CRITICAL)
    return result


# ==================================================================================================
# Driver
# ==================================================================================================
def peer_measures(opts: CeleryOptions) -> dict[str, Measure]:
    return {
        "celery-rpc": lambda url, cfg: measure_celery_rpc(url, cfg, opts),
        "celery-mongo": lambda url, cfg: measure_celery_mongo(url, cfg, opts),
        "dask": lambda url, cfg: measure_dask(url, cfg),
    }


def _load_callable(spec: str) -> Measure:
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "measure_theodolite")


def main(argv: list[str] | None = None, *, measure_theodolite: Measure | dict[str, Measure] | None = None) -> int:
    """``measure_theodolite``: one measure, or several by name (rows of their own; ``--only
    theodolite`` keeps them all)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 measured repetition, short warm-up")
    parser.add_argument("--repeats", type=int, help="measured repetitions (median reported)")
    parser.add_argument("--chain", type=int, default=200, help="chain length (default 200)")
    parser.add_argument("--fanout", type=int, default=5000, help="fan-out size (default 5000)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes per system")
    parser.add_argument("--only", help="comma list of: celery-rpc, celery-mongo, dask, theodolite")
    parser.add_argument(
        "--celery-pool",
        choices=["prefork", "solo"],
        default="prefork",
        help="prefork (default): consumer + 1 pool child per worker; solo stalls with the MongoDB backend",
    )
    parser.add_argument(
        "--celery-chain",
        choices=["both", "canvas", "get"],
        default="both",
        help="Celery chain variant(s) to measure; the faster is reported",
    )
    parser.add_argument("--amqp-url", default=os.environ.get("THEODOLITE_AMQP_URL") or BenchConfig.amqp_url)
    parser.add_argument("--mongo-url", help="use this Mongo server instead of starting nx-27017")
    parser.add_argument("--theodolite", metavar="MODULE:FUNC", help="theodolite measure callable")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args(argv)

    overrides = dict(QUICK) if args.quick else {}
    if args.repeats:
        overrides["repeats"] = args.repeats
    cfg = BenchConfig(
        amqp_url=args.amqp_url, chain_len=args.chain, fanout=args.fanout, workers=args.workers, **overrides
    )
    opts = CeleryOptions(pool=args.celery_pool, chain_mode=args.celery_chain)
    if args.theodolite:
        measure_theodolite = _load_callable(args.theodolite)

    subjects: dict[str, Measure] = (dict(measure_theodolite) if isinstance(measure_theodolite, dict)
                                    else {"theodolite": measure_theodolite} if measure_theodolite else {})
    peers = peer_measures(opts)
    wanted = set(args.only.split(",")) if args.only else set(subjects) | set(peers)
    subjects = {k: v for k, v in subjects.items() if k in wanted or k.split(" ")[0] in wanted}
    peers = {k: v for k, v in peers.items() if k in wanted}

    from urllib.parse import urlsplit

    amqp = urlsplit(cfg.amqp_url)
    if amqp.hostname in ("127.0.0.1", "localhost"):
        ensure_rabbitmq(amqp.hostname, amqp.port or 5672)

    busy, loadavg = machine_load()
    log(f"CPU busy before start: {busy:.0%} of {os.cpu_count()} CPUs; load average {loadavg[0]:.2f}")
    if busy > 0.25:
        log("WARNING: the machine is busy; latency and throughput figures will be pessimistic")

    t0 = time.perf_counter()
    subject_results: list[BenchResult] = []
    peer_results: list[BenchResult] = []
    failures: list[str] = []
    with MongoServer(url=args.mongo_url) as server:
        log(f"Mongo-wire server: {server.url}; broker: {amqp.hostname}:{amqp.port or 5672}; run {cfg.run_id}")
        for group_, out in ((subjects, subject_results), (peers, peer_results)):
            for key, fn in group_.items():
                try:
                    out.append(fn(server.url, cfg))
                except Exception as exc:  # noqa: BLE001 - report, keep measuring the others
                    traceback.print_exc()
                    failures.append(f"{key}: {type(exc).__name__}: {exc}")
    elapsed = time.perf_counter() - t0

    print(
        f"\n### Distributed benchmark ({cfg.chain_len}-step chain, {cfg.fanout:,}-task fan-out, "
        f"{cfg.workers} workers; median of {cfg.repeats})\n"
    )
    print(results_table(subject_results + peer_results))
    for subject in subject_results:
        print()
        print(ratio_table(subject, peer_results))
    print("\nHow each system was run:\n")
    for r in subject_results + peer_results:
        print(f"- **{r.system}**: {r.notes}")
    if failures:
        print("\nFailed:\n")
        for f in failures:
            print(f"- {f}")
    print(
        f"\n_{os.cpu_count()} CPUs, {busy:.0%} busy just before the run (load average "
        f"{loadavg[0]:.2f}); total run time {elapsed:.0f} s; "
        f"command: `{' '.join([Path(sys.executable).name, *sys.argv])}`_"
    )

    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "config": dataclasses.asdict(cfg),
                    "cpu_busy_before": busy,
                    "loadavg_before": loadavg,
                    "results": [dataclasses.asdict(r) for r in subject_results + peer_results],
                    "failures": failures,
                },
                indent=2,
            )
        )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
