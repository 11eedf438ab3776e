"""The fault suite's table: one row per scenario, printed at the end of the session.

``tests/faults/conftest.py`` imports :func:`fault_table` (the session's :data:`TABLE`) and
:func:`pytest_terminal_summary` (which prints it). Each row adds itself to the markdown file
named by ``THEODOLITE_FAULT_TABLE`` as soon as its scenario has run.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class RunResult:
    """The figures of one run of a scenario."""

    problems: list[str]
    faults: int
    jobs_total: int
    jobs_terminal: int
    lost: int
    duplicated: int
    recovery_s: float | None
    seconds: float

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class Row:
    scenario: str
    summary: str
    planned: int
    results: list[RunResult]
    seed: int

    @property
    def passed(self) -> bool:
        return len(self.results) == self.planned and all(r.passed for r in self.results)

    def cells(self) -> list[str]:
        recoveries = [r.recovery_s for r in self.results if r.recovery_s is not None]
        recovery = "—" if not recoveries else f"{_seconds(statistics.median(recoveries))} (max {_seconds(max(recoveries))})"
        runs = f"{len(self.results)}/{self.planned}"
        return [self.scenario, "pass" if self.passed else "FAIL", runs, str(sum(r.faults for r in self.results)),
                f"{sum(r.jobs_terminal for r in self.results)}/{sum(r.jobs_total for r in self.results)}",
                str(sum(r.lost for r in self.results)), str(sum(r.duplicated for r in self.results)), recovery,
                f"{sum(r.seconds for r in self.results):.0f} s"]

    def failure(self) -> str:
        failed = next((r for r in self.results if not r.passed), None)
        if failed is None:
            return ""
        return f"run {self.results.index(failed) + 1}: " + "; ".join(failed.problems)

    def report(self) -> str:
        return f"scenario {self.scenario} (seed {self.seed}) failed in {self.failure()}"


HEADERS = ["scenario", "result", "runs", "faults injected", "jobs completed", "results lost", "duplicated",
           "recovery time (median, max)", "wall time"]


@dataclass
class Table:
    rows: list[Row] = field(default_factory=list)

    def add(self, row: Row) -> None:
        self.rows.append(row)
        target = os.environ.get("THEODOLITE_FAULT_TABLE")
        if target:
            Path(target).write_text(self.markdown(), encoding="utf-8")

    def text(self) -> str:
        rows = [HEADERS, *(row.cells() for row in self.rows)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
        lines = ["  ".join(cell.ljust(width) for cell, width in zip(r, widths)).rstrip() for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        failures = [f"{row.scenario}: {row.failure()}" for row in self.rows if not row.passed]
        seeds = sorted({row.seed for row in self.rows})
        return "\n".join([*lines, "", f"seed(s): {', '.join(map(str, seeds))}", *failures])

    def markdown(self) -> str:
        lines = ["| " + " | ".join(HEADERS) + " |", "|" + "---|" * len(HEADERS)]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row.cells()) + " |" for row in self.rows]
        seeds = sorted({row.seed for row in self.rows})
        lines += ["", f"Seed(s): {', '.join(map(str, seeds))}."]
        failures = [row for row in self.rows if not row.passed]
        if failures:
            lines += ["", "Failures (first failing run of each scenario):", ""]
            lines += [f"* **{row.scenario}**: {_short(row.failure())}" for row in failures]
        return "\n".join(lines) + "\n"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 1 else f"{value * 1000:.0f} ms"


def _short(text: str, limit: int = 600) -> str:
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[:limit] + " …"


TABLE = Table()
"""The session's table (printed by tests/faults/conftest.py's pytest_terminal_summary)."""




@pytest.fixture(scope="session")
def fault_table() -> Table:
    """The session's table (imported by tests/faults/conftest.py)."""
    return TABLE


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the table after the tests (a hook of tests/faults/conftest.py, which imports it)."""
    if TABLE.rows:
        terminalreporter.write_sep("=", "fault suite")
        terminalreporter.write_line(TABLE.text())
