"""Shared pieces of the distributed benchmark: configuration, result record, timing, tables.

Every system under test (theodolite and its peers) is measured by a callable

    measure(mongo_url: str, cfg: BenchConfig) -> BenchResult

so ``bench/peers.py`` can put them in one table and compute ratios between them.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672//"


@dataclass(frozen=True)
class BenchConfig:
    amqp_url: str = DEFAULT_AMQP_URL
    chain_len: int = 200  # steps in the chain (each depends on the previous one)
    fanout: int = 5000  # independent steps in the fan-out
    workers: int = 2  # worker processes executing tasks
    repeats: int = 5  # measured repetitions of each pattern; the median is reported
    warmup_chain: int = 50  # warm-up chain length (run before measuring)
    warmup_fanout: int = 2000  # warm-up fan-out size
    warmup_rounds: int = 2  # how many warm-up chain+fan-out rounds
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:10])

    def name(self, prefix: str) -> str:
        """A broker/database name unique to this run, so nothing collides with other users."""
        return f"{prefix}.{self.run_id}"


QUICK = {"repeats": 1, "warmup_chain": 20, "warmup_fanout": 1000, "warmup_rounds": 1}


@dataclass
class BenchResult:
    system: str
    hop_ms: float  # median over repeats of chain wall time / chain length
    fanout_tasks_per_s: float  # median over repeats of fan-out size / fan-out wall time
    hop_ms_samples: list[float] = field(default_factory=list)
    fanout_samples: list[float] = field(default_factory=list)
    notes: str = ""
    chain_variant: str = "chain"  # which way of chaining gave hop_ms (see measure_patterns)
    chain_variants: dict[str, float] = field(default_factory=dict)  # variant -> median ms/hop


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Stopwatch:
    def __enter__(self) -> Self:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.elapsed = time.perf_counter() - self.start


def measure_patterns(
    name: str,
    cfg: BenchConfig,
    run_chain: Callable[[int], None] | Mapping[str, Callable[[int], None]],
    run_fanout: Callable[[int], None],
    notes: str = "",
    log: Callable[[str], None] | None = None,
) -> BenchResult:
    """Warm up, then time the chain and the fan-out ``cfg.repeats`` times each.

    ``run_chain(n)`` runs an n-step chain, ``run_fanout(n)`` n independent tasks; each returns only
    once every result is known to the submitting client. ``run_chain`` may be a mapping of variant
    name -> callable (for example two idiomatic ways to chain in one system): every variant is
    measured and the one with the lowest median is reported, the others are kept in
    ``chain_variants``. Chain and fan-out repetitions alternate, so drift hits both alike.
    """
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    chains = dict(run_chain) if isinstance(run_chain, Mapping) else {"chain": run_chain}
    for _ in range(cfg.warmup_rounds):
        for fn in chains.values():
            fn(cfg.warmup_chain)
        run_fanout(cfg.warmup_fanout)
    hops: dict[str, list[float]] = {k: [] for k in chains}
    rates: list[float] = []
    for i in range(cfg.repeats):
        for key, fn in chains.items():
            with Stopwatch() as sw:
                fn(cfg.chain_len)
            hops[key].append(sw.elapsed / cfg.chain_len * 1000.0)
        with Stopwatch() as sw:
            run_fanout(cfg.fanout)
        rates.append(cfg.fanout / sw.elapsed)
        hop_txt = ", ".join(f"{v[-1]:.2f} ms/hop ({k})" for k, v in hops.items())
        log(f"  {name} rep {i + 1}/{cfg.repeats}: {hop_txt}; {rates[-1]:,.0f} tasks/s")
    best = min(hops, key=lambda k: median(hops[k]))
    return BenchResult(
        name,
        median(hops[best]),
        median(rates),
        hops[best],
        rates,
        notes,
        chain_variant=best,
        chain_variants={k: median(v) for k, v in hops.items()},
    )


def machine_load(sample_s: float = 1.0) -> tuple[float, tuple[float, float, float]]:
    """(busy fraction of all CPUs over ``sample_s``, 1/5/15-min load averages) from /proc."""

    def snap() -> tuple[int, int]:
        with open("/proc/stat") as fh:
            vals = [int(x) for x in fh.readline().split()[1:]]
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
        return sum(vals), idle

    try:
        t0, i0 = snap()
        time.sleep(sample_s)
        t1, i1 = snap()
        busy = 1.0 - (i1 - i0) / max(1, t1 - t0)
        return busy, os.getloadavg()
    except OSError:
        return float("nan"), (float("nan"),) * 3


# -- RabbitMQ ---------------------------------------------------------------------------------------
def amqp_answering(host: str = "127.0.0.1", port: int = 5672, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def ensure_rabbitmq(host: str = "127.0.0.1", port: int = 5672, wait: float = 60.0) -> None:
    """Start ``rabbitmq-server -detached`` if nothing answers on the AMQP port."""
    if amqp_answering(host, port):
        return
    exe = shutil.which("rabbitmq-server")
    if not exe:
        raise RuntimeError(f"RabbitMQ not answering on {host}:{port} and rabbitmq-server not found")
    subprocess.run([exe, "-detached"], check=False)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if amqp_answering(host, port):
            time.sleep(2)  # the port opens slightly before the broker accepts logins
            return
        time.sleep(0.5)
    raise RuntimeError(f"RabbitMQ did not come up on {host}:{port} within {wait:.0f} s")


def child_env() -> dict[str, str]:
    """Environment for child processes (Celery workers, Dask workers) that can import ``bench``."""
    env = dict(os.environ)
    paths = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env


# -- tables -----------------------------------------------------------------------------------------
def _fmt_hop(x: float) -> str:
    return f"{x:.2f}"


def _fmt_rate(x: float) -> str:
    return f"{x:,.0f}"


def results_table(results: Sequence[BenchResult]) -> str:
    lines = [
        "| system | ms per hop (chain) | tasks/s (fan-out) | hop range | tasks/s range | runs |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        hop_rng = f"{min(r.hop_ms_samples):.2f}–{max(r.hop_ms_samples):.2f}" if r.hop_ms_samples else ""
        rate_rng = f"{min(r.fanout_samples):,.0f}–{max(r.fanout_samples):,.0f}" if r.fanout_samples else ""
        lines.append(
            f"| {r.system} | {_fmt_hop(r.hop_ms)} | {_fmt_rate(r.fanout_tasks_per_s)} | {hop_rng} | "
            f"{rate_rng} | {len(r.hop_ms_samples)} |"
        )
    return "\n".join(lines)


def ratio_table(subject: BenchResult, peers: Sequence[BenchResult]) -> str:
    """Ratios of ``subject`` vs each peer.

    hop ratio = subject ms/hop / peer ms/hop (below 1 is better for the subject);
    throughput ratio = subject tasks/s / peer tasks/s (above 1 is better for the subject).
    """
    lines = [
        (
            f"| {subject.system} vs | hop latency ratio (lower is better) "
            "| fan-out throughput ratio (higher is better) |"
        ),
        "|---|---:|---:|",
    ]
    for p in peers:
        hop = subject.hop_ms / p.hop_ms if p.hop_ms else float("nan")
        thr = subject.fanout_tasks_per_s / p.fanout_tasks_per_s if p.fanout_tasks_per_s else float("nan")
        lines.append(f"| {p.system} | {hop:.2f}× | {thr:.2f}× |")
    return "\n".join(lines)
