"""Results of the scaling benchmark (bench/scaling_bench.py): rows, Markdown tables, JSON.

A :class:`Row` is one system at one worker count: its fan-out rates and the CPU its
processes used meanwhile (:class:`bench.proc_cpu.Usage`, all measured repetitions together).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import median
from bench.proc_cpu import BROKER_ROLE, CLIENT_ROLE, Usage, short_role

WORKER_ROLES = {"theodolite": "worker", "ack-only": "ack-only worker", "celery": "celery worker", "dask": "dask worker"}
"""Family -> the role of its worker processes (bench/proc_cpu.py)."""


@dataclass
class Row:
    system: str
    family: str
    """``theodolite``, ``ack-only``, ``celery`` or ``dask`` (keys of :data:`WORKER_ROLES`)."""
    workers: int
    planners: int = 0
    fanout: int = 0
    """Tasks per measured fan-out."""
    rates: list[float] = field(default_factory=list)
    usage: Usage | None = None
    error: str = ""

    @property
    def rate(self) -> float:
        return median(self.rates)

    @property
    def cpu_ms_per_task(self) -> float:
        """CPU of every process of the benchmark (and RabbitMQ) per task, in milliseconds."""
        tasks = self.fanout * len(self.rates)
        return 1000.0 * sum(self.usage.cpu_s.values()) / tasks if self.usage and tasks else float("nan")


def _pct(x: float) -> str:
    return f"{x:.0f} %"


def _workers(n: int) -> str:
    return f"{n} worker{'s' * (n > 1)}"


def throughput_table(rows: Sequence[Row]) -> str:
    counts = sorted({r.workers for r in rows})
    lines = ["| system | " + " | ".join(_workers(n) for n in counts) + " |", "|---|" + "---:|" * len(counts)]
    for system in dict.fromkeys(r.system for r in rows):
        cells = []
        for n in counts:
            found = [r for r in rows if r.system == system and r.workers == n]
            cells.append("–" if not found else "failed" if found[0].error else f"{found[0].rate:,.0f}")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def cpu_table(rows: Sequence[Row], cores: int) -> str:
    """Where the CPU went during the measured fan-outs (% of one core; all cores = cores x 100 %)."""
    lines = [
        ("| system | workers | tasks/s | range | machine busy | the benchmark's processes (others) | CPU per task "
         f"| busiest process | planner(s) | workers (sum) | {BROKER_ROLE} | nx-27017 | client |"),
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r.error or r.usage is None:
            lines.append(f"| {r.system} | {r.workers} | failed: {r.error} |" + " |" * 10)
            continue
        u = r.usage
        name, pct = u.busiest()
        client = "client + scheduler" if r.family == "dask" else "client"
        name = client if name == CLIENT_ROLE else short_role(name)
        planners = " + ".join(_pct(x) for x in sorted((u.percent(k) for k in u.cpu_s if k.startswith("planner")),
                                                     reverse=True)) or "–"
        others = max(0.0, u.machine_percent - u.total_percent())
        lines.append(
            f"| {r.system} | {r.workers} | {r.rate:,.0f} | {min(r.rates):,.0f}–{max(r.rates):,.0f} "
            f"| {_pct(u.machine_percent)} of {cores * 100} % | {_pct(u.total_percent())} ({_pct(others)} others) "
            f"| {r.cpu_ms_per_task:.2f} ms | {name} {_pct(pct)} | {planners} | {_pct(u.total_percent(WORKER_ROLES[r.family]))} "
            f"| {_pct(u.percent(BROKER_ROLE))} | {_pct(u.percent('nx-27017'))} | {_pct(u.percent(CLIENT_ROLE))} |"
        )
    return "\n".join(lines)


def scaling_lines(rows: Sequence[Row]) -> list[str]:
    """Per system: throughput at each worker count relative to its smallest count."""
    out = []
    for system in dict.fromkeys(r.system for r in rows):
        mine = sorted((r for r in rows if r.system == system and not r.error), key=lambda r: r.workers)
        if len(mine) > 1:
            steps = ", ".join(f"{r.workers}: {r.rate / mine[0].rate:.2f}×" for r in mine)
            out.append(f"- {system}: {steps} (relative to {_workers(mine[0].workers)})")
    return out


def report(rows: Sequence[Row], *, fanout: int, repeats: int, cores: int) -> str:
    return "\n".join([
        f"\n### Fan-out throughput (tasks/s, {fanout:,} no-op tasks, median of {repeats})\n",
        throughput_table(rows),
        "\nRelative to the smallest worker count:\n",
        *scaling_lines(rows),
        "\n### Where the CPU went during the measured fan-outs (% of one core)\n",
        cpu_table(rows, cores),
    ])


def to_json(rows: Sequence[Row], meta: dict[str, Any]) -> str:
    return json.dumps({**meta, "rows": [{**dataclasses.asdict(r), "rate": r.rate} for r in rows]}, indent=2)


def rows_from_json(path: Path) -> tuple[list[Row], dict[str, Any]]:
    """The rows and the rest of a file :func:`to_json` wrote."""
    data = json.loads(path.read_text())
    rows = []
    for item in data.pop("rows"):
        item.pop("rate", None)
        item.setdefault("fanout", data.get("config", {}).get("fanout", 0))
        usage = item.pop("usage")
        rows.append(Row(**item, usage=Usage(**usage) if usage else None))
    return rows, data
