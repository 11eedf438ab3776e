"""Scaling on one machine: fan-out throughput by worker processes and planners (issue 11, item 4).

    .venv/bin/python bench/scaling_bench.py                      # 2,000-task fan-out, median of 3
    .venv/bin/python bench/scaling_bench.py --quick              # 1 repetition, short warm-up
    .venv/bin/python bench/scaling_bench.py --workers 1,2,4 --planners 1,2 --fanout 2000 --json run.json
    .venv/bin/python bench/scaling_bench.py --tables-from run.json   # print a saved run's tables again

For each worker count, in one run on one RabbitMQ and one nx-27017 server: theodolite with
each planner count (the second planner stands by for the lease), theodolite's planner alone
(the same planners with ack-only stand-ins for workers: bench/ack_worker.py), Celery (rpc
backend) and Dask with that many worker processes. Each measured fan-out is bracketed by CPU
snapshots of every process the benchmark started (bench/proc_cpu.py) and RabbitMQ's, so the
tables say which process was busiest while the throughput stopped growing.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import ``bench`` as a package from the repo root
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from bench import scaling_systems as systems
from bench.common import BenchConfig, Stopwatch, ensure_rabbitmq, machine_load
from bench.mongo_server import MongoServer
from bench.proc_cpu import CpuSampler, merge
from bench.scaling_report import Row, report, rows_from_json, to_json

System = Callable[[str, BenchConfig], AbstractContextManager[systems.RunFanout]]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Case:
    system: str
    family: str
    workers: int
    planners: int
    start: System


def cases(worker_counts: Sequence[int], planner_counts: Sequence[int], ack_counts: Sequence[int],
          opts: systems.TheodoliteOptions) -> Iterator[Case]:
    """Every system at every worker count, grouped by worker count (drift hits all alike)."""
    for n in sorted(set(worker_counts) | set(ack_counts)):
        for p in planner_counts:
            o = dataclasses.replace(opts, planners=p)
            if n in worker_counts:
                yield Case(f"theodolite, {p} planner{'s' * (p > 1)}", "theodolite", n, p,
                           functools.partial(systems.theodolite, opts=o))
            if n in ack_counts:
                yield Case(f"planner alone (ack-only workers), {p} planner{'s' * (p > 1)}", "ack-only", n, p,
                           functools.partial(systems.ack_only, opts=o))
        if n in worker_counts:
            yield Case("Celery (rpc backend)", "celery", n, 0, systems.celery_rpc)
            yield Case("Dask distributed", "dask", n, 0, systems.dask)


def measure(case: Case, url: str, cfg: BenchConfig, sampler: CpuSampler) -> Row:
    row = Row(case.system, case.family, case.workers, case.planners, cfg.fanout)
    log(f"{case.system}, {case.workers} worker(s): starting")
    with case.start(url, dataclasses.replace(cfg, workers=case.workers)) as run_fanout:
        for _ in range(cfg.warmup_rounds):
            run_fanout(cfg.warmup_fanout)
        usages = []
        for i in range(cfg.repeats):
            before = sampler.snapshot()
            with Stopwatch() as sw:
                run_fanout(cfg.fanout)
            usages.append(sampler.since(before))
            row.rates.append(cfg.fanout / sw.elapsed)
            busiest, pct = usages[-1].busiest()
            log(f"  rep {i + 1}/{cfg.repeats}: {row.rates[-1]:,.0f} tasks/s; busiest {busiest} {pct:.0f} %; "
                f"machine {usages[-1].machine_percent:.0f} % busy")
    row.usage = merge(usages)
    return row


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="1 measured repetition, one short warm-up")
    parser.add_argument("--repeats", type=int, default=3, help="measured repetitions (median reported)")
    parser.add_argument("--fanout", type=int, default=2000, help="tasks per fan-out (default 2000)")
    parser.add_argument("--workers", default="1,2,4", help="worker process counts (default 1,2,4)")
    parser.add_argument("--planners", default="1,2", help="theodolite planner counts (default 1,2)")
    parser.add_argument("--ack-workers", default="1,2", help="ack-only stand-in counts for the planner alone "
                        "(default 1,2; empty: skip)")
    parser.add_argument("--only", help="comma list of families: theodolite, ack-only, celery, dask")
    parser.add_argument("--concurrency", type=int, default=4, help="slots per theodolite worker (default 4)")
    parser.add_argument("--isolation", choices=["process", "thread"], default="process",
                        help="where theodolite's workers run task code (default process, the workers' default)")
    parser.add_argument("--amqp-url", default=os.environ.get("THEODOLITE_AMQP_URL") or BenchConfig.amqp_url)
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--tables-from", type=Path, metavar="JSON", help="print the tables of a saved --json run, "
                        "measure nothing")
    args = parser.parse_args(argv)
    if args.tables_from:
        saved, meta = rows_from_json(args.tables_from)
        cfg_ = meta.get("config", {})
        print(report(saved, fanout=cfg_.get("fanout", 0), repeats=cfg_.get("repeats", 0),
                     cores=meta.get("cores") or os.cpu_count() or 1))
        return 0

    warmup = min(args.fanout, 1000)
    cfg = BenchConfig(amqp_url=args.amqp_url, fanout=args.fanout, repeats=1 if args.quick else args.repeats,
                      warmup_fanout=warmup // 2 if args.quick else warmup, warmup_rounds=1)
    opts = systems.TheodoliteOptions(concurrency=args.concurrency, isolation=args.isolation)
    families = set(args.only.split(",")) if args.only else {"theodolite", "ack-only", "celery", "dask"}
    todo = [c for c in cases(_ints(args.workers), _ints(args.planners), _ints(args.ack_workers), opts)
            if c.family in families]

    from urllib.parse import urlsplit

    amqp = urlsplit(cfg.amqp_url)
    if amqp.hostname in ("127.0.0.1", "localhost"):
        ensure_rabbitmq(amqp.hostname, amqp.port or 5672)
    cores = os.cpu_count() or 1
    busy, loadavg = machine_load()
    log(f"CPU busy before start: {busy:.0%} of {cores} CPUs; load average {loadavg[0]:.2f}")

    started, rows = time.perf_counter(), []
    sampler = CpuSampler()
    with MongoServer() as server:
        for case in todo:
            try:
                rows.append(measure(case, server.url, cfg, sampler))
            except Exception as exc:  # noqa: BLE001 - report, keep measuring the others
                traceback.print_exc()
                rows.append(Row(case.system, case.family, case.workers, case.planners, error=f"{type(exc).__name__}: {exc}"))
    elapsed = time.perf_counter() - started

    command = " ".join([Path(sys.executable).name, *sys.argv])
    print(report(rows, fanout=cfg.fanout, repeats=cfg.repeats, cores=cores))
    print(f"\n_{cores} CPUs, {busy:.0%} busy just before the run (load average {loadavg[0]:.2f}); theodolite workers "
          f"with {opts.concurrency} slots, {opts.isolation} isolation; total run time {elapsed:.0f} s; "
          f"command: `{command}`_")
    if args.json:
        args.json.write_text(to_json(rows, {
            "config": dataclasses.asdict(cfg), "cpu_busy_before": busy, "loadavg_before": loadavg, "cores": cores,
            "theodolite": dataclasses.asdict(opts), "elapsed_s": elapsed, "command": command,
        }))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
