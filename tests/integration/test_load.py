"""Load and memory: 50 jobs of 100 no-op steps, submitted at once to 3 cpu workers.

All jobs must succeed. The planner's and workers' resident memory (RSS; a worker's counts
its task processes too) is sampled every 0.2 s: before the jobs, at its peak, and after they
all ended; the same 50 jobs then run twice more on the same processes. The planner must not keep finished jobs in memory: after a
wave its RSS is back within half of the wave's growth (``after - before < 50 % of peak -
before``), or, since CPython keeps freed memory for reuse rather than giving it back to the
system, the next two waves together add less than half the first wave's growth (a planner
that held finished jobs would add about as much again with every wave). Growth below 4 MiB
counts as noise. The figures are printed (``-s`` shows them) and, with
``THEODOLITE_LOAD_REPORT=FILE``, written to FILE as markdown; docs/fault-suite.md ("Load and
memory") records a run::

    THEODOLITE_LOAD_REPORT=/tmp/load.md .venv/bin/python -m pytest tests/integration/test_load.py -s -q
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import pytest

from services.cluster import LocalCluster
from shared.constants import JOB_SUBMIT_KEY
from shared.messages import JobSubmission, encode
from shared.settings import Settings
from shared.transport import Broker, Outgoing
from tests.faults.test_job_book_faults import Probe
from tests.support.distributed import TEST_PLUGINS, cleanup, make_settings

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo, pytest.mark.slow]

JOBS = 50
STEPS = 100
WORKERS = 3
WAVE_TIMEOUT_S = 240.0
WAVES = 3
NOISE_BYTES = 4 * 2**20


def chain(length: int = STEPS) -> str:
    lines = ["graph:", "  s0:", "    plus: [0, 1]"]
    for i in range(1, length):
        lines += [f"  s{i}:", f"    plus: [$s{i - 1}, 1]"]
    return "\n".join(lines) + "\n"


def fan_out(width: int = STEPS - 2) -> str:
    lines = ["graph:", "  source:", "    plus: [0, 1]"]
    for i in range(width):
        lines += [f"  f{i}:", f"    plus: [$source, {i}]"]
    lines += ["  gather:", "    total:", "      - [" + ", ".join(f"$f{i}" for i in range(width)) + "]"]
    return "\n".join(lines) + "\n"


def ladders(count: int = 10, length: int = STEPS // 10) -> str:
    """``count`` independent chains of ``length`` steps."""
    lines = ["graph:"]
    for c in range(count):
        lines += [f"  l{c}s0:", f"    plus: [{c}, 1]"]
        for i in range(1, length):
            lines += [f"  l{c}s{i}:", f"    plus: [$l{c}s{i - 1}, 1]"]
    return "\n".join(lines) + "\n"


SHAPES = {"chain": chain(), "fan-out": fan_out(), "ladders": ladders()}


def rss_bytes(pid: int) -> int:
    """Resident set size of ``pid`` (psutil when installed, else /proc/PID/status)."""
    try:
        import psutil
    except ImportError:
        psutil = None
    if psutil is not None:
        try:
            return int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            return 0
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return 0
    return 0


def descendants(pid: int) -> list[int]:
    """Children, grandchildren, ... of ``pid`` (a worker's task processes), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()  # after "(command name)": state, ppid, ...
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def tree_rss_bytes(pid: int) -> int:
    """RSS of ``pid`` and of every process below it (shared pages counted in each)."""
    return rss_bytes(pid) + sum(rss_bytes(child) for child in descendants(pid))


@dataclass
class Sampler:
    """Samples the RSS of some processes every ``every_s`` seconds in a thread; keeps peaks."""

    pids: dict[str, int]
    every_s: float = 0.2
    peaks: dict[str, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)

    def now(self) -> dict[str, int]:
        return {name: tree_rss_bytes(pid) for name, pid in self.pids.items()}

    def reset(self) -> None:
        self.peaks = self.now()

    def _loop(self) -> None:
        while not self._stop.wait(self.every_s):
            for name, value in self.now().items():
                self.peaks[name] = max(self.peaks.get(name, 0), value)

    def __enter__(self) -> Self:
        self.reset()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Wave:
    seconds: float
    states: dict[str, int]
    before: dict[str, int]
    peak: dict[str, int]
    after: dict[str, int]


async def run_wave(settings: Settings, sampler: Sampler, settle_s: float = 3.0) -> Wave:
    """Submit every job at once, await them all (MongoDB), let the services settle."""
    before = sampler.now()
    sampler.reset()
    texts = [SHAPES[name] for name in list(SHAPES) * (JOBS // len(SHAPES) + 1)][:JOBS]
    submissions = [JobSubmission(document=text, document_name=f"load-{i}.yaml") for i, text in enumerate(texts)]
    began = time.monotonic()
    async with Broker(settings, name="load-test") as broker:
        routed = await asyncio.gather(*(broker.publish(Outgoing(broker.names.jobs_exchange, JOB_SUBMIT_KEY, encode(s), s.kind,
                                                                message_id=s.job_id)) for s in submissions))
    assert all(routed), "some submissions were not routed"
    ids = [s.job_id for s in submissions]
    async with Probe(settings) as probe:
        deadline = time.monotonic() + WAVE_TIMEOUT_S
        while True:
            docs = [doc async for doc in probe.db["jobs"].find({"_id": {"$in": ids}}, {"state": 1})]
            states: dict[str, int] = {}
            for doc in docs:
                states[doc["state"]] = states.get(doc["state"], 0) + 1
            if sum(n for s, n in states.items() if s in ("succeeded", "failed", "cancelled", "rejected")) == len(ids):
                break
            assert time.monotonic() < deadline, f"jobs not finished after {WAVE_TIMEOUT_S:g} s: {states}"
            await asyncio.sleep(0.25)
    seconds = time.monotonic() - began
    await asyncio.sleep(settle_s)
    return Wave(seconds, states, before, dict(sampler.peaks), sampler.now())


def mib(value: int) -> str:
    return f"{value / 2**20:.0f}"


def report(waves: list[Wave], names: list[str]) -> str:
    lines = ["| wave | jobs × steps | wall time | steps/s | process | RSS before | RSS peak | RSS after |",
             "|---|---|---|---|---|---|---|---|"]
    for number, wave in enumerate(waves, 1):
        for name in names:
            lines.append(f"| {number} | {JOBS} × {STEPS} | {wave.seconds:.1f} s | {JOBS * STEPS / wave.seconds:.0f} | {name} "
                         f"| {mib(wave.before[name])} MiB | {mib(wave.peak[name])} MiB | {mib(wave.after[name])} MiB |")
    return "\n".join(lines) + "\n"


@pytest.fixture
def load_settings(amqp_url: str, mongo_url: str) -> Iterator[Settings]:
    value = make_settings(amqp_url, mongo_url, concurrency=2, lease_s=30.0, tick_s=0.5)
    yield value
    cleanup(value, ["cpu"])


@pytest.mark.timeout(900)
def test_fifty_jobs_of_a_hundred_steps_complete_and_the_planner_lets_them_go(load_settings: Settings, tmp_path: Path) -> None:
    with LocalCluster(load_settings, {"cpu": WORKERS}, plugin_dirs=[TEST_PLUGINS], start_mongo=False,
                      log_dir=tmp_path / "logs") as cluster:
        cluster.wait_ready(60)
        pids = {c.name: c.process.pid for c in cluster.children}
        names = sorted(pids, key=lambda n: (not n.startswith("planner"), n))
        with Sampler(pids) as sampler:
            waves = [asyncio.run(run_wave(load_settings, sampler)) for _ in range(WAVES)]
        dead = [c.name for c in cluster.children if c.process.poll() is not None]
    text = report(waves, names)
    print("\n" + text)
    target = os.environ.get("THEODOLITE_LOAD_REPORT")
    if target:
        Path(target).write_text(text, encoding="utf-8")
    assert not dead, f"services died under load: {dead}"
    for number, wave in enumerate(waves, 1):
        assert wave.states == {"succeeded": JOBS}, f"wave {number}: {wave.states}"
    planner = next(n for n in names if n.startswith("planner"))
    first, last = waves[0], waves[-1]
    grown = first.peak[planner] - first.before[planner]
    kept = first.after[planner] - first.before[planner]
    later = last.after[planner] - first.after[planner]
    released = kept < max(0.5 * grown, NOISE_BYTES)
    reused = later < max(0.5 * grown, NOISE_BYTES)
    assert released or reused, (
        f"the planner holds on to finished jobs: the first wave grew it by {mib(grown)} MiB and it kept {mib(kept)} MiB; "
        f"{WAVES - 1} more waves of the same jobs added {mib(later)} MiB:\n{text}")
