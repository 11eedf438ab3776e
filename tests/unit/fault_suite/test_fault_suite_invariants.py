"""The fault suite's invariant checks (tests/support/fault_suite.py) catch what they must.

No services: a run's observations (MongoDB documents, the execution trace, queue depths) are
built by hand, once healthy and then with one defect each, so that a scenario passing in the
suite means its checks looked, not that they could not see.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from shared import codec
from shared.settings import Settings
from tests.support.fault_scenarios import WorkerKill
from tests.support.fault_suite import Graph, Line, Observed, RunContext, invariants, read_trace
from tests.support.fault_table import Row, RunResult, Table


def _context(tmp_path: Path) -> RunContext:
    return RunContext(WorkerKill(), 0, random.Random(0), Settings(), None, tmp_path)  # type: ignore[arg-type]


def _outputs(value: float, token: str) -> Any:
    return codec.encode({"value": value, "token": token}, threshold_bytes=1 << 20).tree


def _healthy(tmp_path: Path) -> tuple[RunContext, Observed]:
    """A chain a -> b that ran once each, stored, with empty queues."""
    ctx = _context(tmp_path)
    job = Graph(ctx, "j1").traced("a", 0.1).traced("b", 0.1, after="a").job()
    ctx.jobs.append(job)
    trace = [Line("start", "j1/a", 1.0, "1", "ta", 10, 9), Line("end", "j1/a", 1.1, "1", "ta", 10, 9, "-"),
             Line("start", "j1/b", 1.2, "1", "tb", 10, 9), Line("end", "j1/b", 1.3, "1", "tb", 10, 9, "ta")]
    steps = {"a": {"state": "succeeded", "attempt": 1, "outputs": _outputs(1, "ta"), "finished_at": 1.15},
             "b": {"state": "succeeded", "attempt": 1, "outputs": _outputs(2, "tb"), "finished_at": 1.35}}
    jobs: dict[str, dict[str, Any] | None] = {"j1": {"state": "succeeded", "step_names": ["a", "b"], "finished_at": 1.4}}
    return ctx, Observed(jobs, {"j1": steps}, [], trace, {"ns.jobs": 0, "ns.completions": 0, "ns.steps.cpu": 0})


def test_a_healthy_run_has_no_problem(tmp_path: Path) -> None:
    ctx, seen = _healthy(tmp_path)
    assert invariants(ctx, seen) == ([], 0, 0)


def _defect(seen: Observed, name: str) -> str:
    """Break ``seen`` one way; the words the problem must contain."""
    steps = seen.steps["j1"]
    if name == "not terminal":
        seen.jobs["j1"]["state"] = "running"  # type: ignore[index]
        return "not terminal"
    if name == "unexpected end":
        seen.jobs["j1"]["state"] = "failed"  # type: ignore[index]
        return "expected 'succeeded'"
    if name == "no outputs":
        del steps["b"]["outputs"]
        return "no readable outputs"
    if name == "foreign token":
        steps["b"]["outputs"] = _outputs(2, "nobody")
        return "no completed execution produced"
    if name == "dropped result":
        steps["b"]["state"] = "skipped"
        return "completed its task"
    if name == "twice in one attempt":
        seen.trace.append(Line("end", "j1/a", 1.5, "1", "ta2", 11, 9, "-"))
        return "more than once in one attempt"
    if name == "twice, never re-queued":
        seen.trace.append(Line("end", "j1/a", 1.5, "?", "ta2", 11, 9, "-"))
        return "never re-queued"
    if name == "overwritten":
        steps["a"]["outputs"] = _outputs(1, "ta2")
        seen.trace.append(Line("end", "j1/a", 1.5, "2", "ta2", 11, 9, "-"))
        steps["a"]["attempt"] = 2
        return "recorded twice"
    if name == "stray message":
        seen.queues["ns.steps.cpu"] = 2
        return "messages left"
    raise AssertionError(name)


@pytest.mark.parametrize("defect", ["not terminal", "unexpected end", "no outputs", "foreign token", "dropped result",
                                    "twice in one attempt", "twice, never re-queued", "overwritten", "stray message"])
def test_each_defect_is_reported(tmp_path: Path, defect: str) -> None:
    ctx, seen = _healthy(tmp_path)
    words = _defect(seen, defect)
    problems, lost, duplicated = invariants(ctx, seen)
    assert any(words in problem for problem in problems), problems
    if defect in ("no outputs", "foreign token", "dropped result"):
        assert lost == 1
    if defect in ("twice in one attempt", "twice, never re-queued", "overwritten"):
        assert duplicated == 1


def test_the_trace_reader_skips_partial_lines(tmp_path: Path) -> None:
    (tmp_path / "fault-trace.log").write_text("start j/a 1 tok 5 4 1.5\nend j/a 1 tok 5 4 2.5 -\nend j/b 1 to\n"
                                              "fault j/c segfault 6 4 3.0\nbeat j/d 7 3.5\n")
    kinds = [(line.kind, line.name) for line in read_trace(tmp_path)]
    assert kinds == [("start", "j/a"), ("end", "j/a"), ("fault", "j/c"), ("beat", "j/d")]


def test_the_table_counts_runs_and_names_the_first_failure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "table.md"
    monkeypatch.setenv("THEODOLITE_FAULT_TABLE", str(target))
    table = Table()
    table.add(Row("ok", "", 2, [RunResult([], 1, 1, 1, 0, 0, 0.5, 3.0), RunResult([], 1, 1, 1, 0, 0, 1.5, 3.0)], 7))
    table.add(Row("bad", "", 3, [RunResult(["job j is not terminal"], 1, 1, 0, 0, 0, None, 9.0)], 7))
    text = target.read_text()
    assert "| ok | pass | 2/2 | 2 | 2/2 | 0 | 0 | 1.0 s (max 1.5 s) | 6 s |" in text
    assert "| bad | FAIL | 1/3 |" in text and "run 1: job j is not terminal" in text
    assert "Seed(s): 7." in text and "bad: run 1: job j is not terminal" in table.text()
