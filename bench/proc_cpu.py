"""CPU time of the processes a benchmark started, by role, between two snapshots.

A *role* is one process the benchmark started directly (a planner, a worker, a Celery
worker, a Dask worker, nx-27017) together with every process below it (a theodolite worker's
task processes, a Celery worker's pool child): its time is user + system of the live ones
plus what they reaped (``children_user``/``children_system``), so a task process that exits
between the snapshots is still counted. Beside them: ``RabbitMQ`` (the broker's
``beam.smp``, only read, whoever started it) and ``client`` (this process, without its
children: the submitting client, and Dask's scheduler, which LocalCluster runs here).

    sampler = CpuSampler()
    before = sampler.snapshot()
    ...  # the measured work
    usage = sampler.since(before)      # {"planner": 0.61, "worker 1": 0.22, ...} in CPU seconds
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

BROKER_ROLE = "RabbitMQ"
CLIENT_ROLE = "client"


def role_of(cmdline: Iterable[str]) -> str:
    """The role of a process the benchmark started, from its command line (without a number)."""
    text = " ".join(cmdline)
    if "services.cli" in text:
        return "planner" if " planner" in text else "worker"
    rules = [("bench.ack_worker", "ack-only worker"), ("celery", "celery worker"), ("nx-27017", "nx-27017"),
             ("nx_27017", "nx-27017"), ("resource_tracker", "multiprocessing helper"), ("multiprocessing", "dask worker")]
    return next((role for marker, role in rules if marker in text), os.path.basename(text.split(" ")[0]) or "?")


def broker_processes() -> list[psutil.Process]:
    """RabbitMQ's Erlang VM on this machine (read only): the ``beam.smp`` that boots ``rabbit``,
    not the short-lived ones of ``rabbitmqctl``."""
    found = []
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "beam.smp" and "rabbit boot" in " ".join(proc.info["cmdline"] or []):
            found.append(proc)
    return found


def _tree_cpu_s(root: psutil.Process) -> float:
    total = 0.0
    for proc in [root, *root.children(recursive=True)]:
        try:
            t = proc.cpu_times()
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


def machine_busy_s() -> float:
    """CPU seconds all CPUs of the machine have been busy (not idle or waiting), from /proc/stat."""
    with open("/proc/stat") as fh:
        ticks = [int(x) for x in fh.readline().split()[1:8]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    at_s: float
    cpu_s: dict[tuple[int, float], tuple[str, float]]
    """(pid, create time) -> (role, CPU seconds so far)."""
    machine_s: float
    """:func:`machine_busy_s` at the snapshot."""


@dataclass(frozen=True)
class Usage:
    wall_s: float
    cpu_s: dict[str, float]
    """role (numbered when there are several: ``worker 1``, ``worker 2``) -> CPU seconds."""
    machine_s: float = 0.0
    """CPU seconds the whole machine was busy meanwhile (other users' processes included)."""

    @property
    def machine_percent(self) -> float:
        """The whole machine's busy CPU as % of one core (2 cores fully busy: 200 %)."""
        return 100.0 * self.machine_s / self.wall_s if self.wall_s else float("nan")

    def percent(self, role: str) -> float:
        """CPU of ``role`` as % of one core over the wall time."""
        return 100.0 * self.cpu_s.get(role, 0.0) / self.wall_s if self.wall_s else float("nan")

    def busiest(self) -> tuple[str, float]:
        role = max(self.cpu_s, key=lambda r: self.cpu_s[r])
        return role, self.percent(role)

    def total_percent(self, prefix: str = "") -> float:
        """CPU of every role starting with ``prefix`` (all: ``""``), as % of one core."""
        cpu = sum(v for r, v in self.cpu_s.items() if r.startswith(prefix))
        return 100.0 * cpu / self.wall_s if self.wall_s else float("nan")


class CpuSampler:
    """Snapshots of the CPU time used by this process's children (by role), RabbitMQ and itself."""

    def __init__(self) -> None:
        self._me = psutil.Process()

    def snapshot(self) -> Snapshot:
        cpu: dict[tuple[int, float], tuple[str, float]] = {}
        for child in self._me.children(recursive=False):
            try:
                cpu[(child.pid, child.create_time())] = (role_of(child.cmdline()), _tree_cpu_s(child))
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        for proc in broker_processes():  # looked up each time: someone may restart RabbitMQ
            try:
                t = proc.cpu_times()
                cpu[(proc.pid, proc.create_time())] = (BROKER_ROLE, t.user + t.system)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        mine = self._me.cpu_times()
        cpu[(self._me.pid, self._me.create_time())] = (CLIENT_ROLE, mine.user + mine.system)
        return Snapshot(time.perf_counter(), cpu, machine_busy_s())

    def since(self, before: Snapshot) -> Usage:
        after = self.snapshot()
        by_pid: list[tuple[int, str, float]] = []
        for key, (role, cpu_s) in after.cpu_s.items():
            if key not in before.cpu_s and role == BROKER_ROLE:
                continue  # a broker (re)started meanwhile: its time is mostly from before
            previous = before.cpu_s.get(key, (role, 0.0))[1]
            by_pid.append((key[0], role, max(0.0, cpu_s - previous)))
        counts = Counter(role for _, role, _ in by_pid)
        seen: Counter[str] = Counter()
        usage: dict[str, float] = {}
        for _pid, role, cpu_s in sorted(by_pid):
            seen[role] += 1
            name = role if counts[role] == 1 else f"{role} {seen[role]}"
            usage[name] = usage.get(name, 0.0) + cpu_s
        return Usage(after.at_s - before.at_s, usage, after.machine_s - before.machine_s)


def merge(usages: Iterable[Usage]) -> Usage:
    """Several measured intervals as one (CPU seconds and wall time added up)."""
    wall, machine, cpu = 0.0, 0.0, Counter[str]()
    for u in usages:
        wall += u.wall_s
        machine += u.machine_s
        cpu.update(u.cpu_s)
    return Usage(wall, dict(cpu), machine)


def short_role(name: str) -> str:
    """``worker 3`` -> ``worker`` (for grouping)."""
    return re.sub(r" \d+$", "", name)
