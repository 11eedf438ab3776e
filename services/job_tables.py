"""``theodolite jobs`` and ``theodolite status`` as a person reads them: rich tables.

Times are local (``2024-05-01 12:00:03``), durations short (``850 ms``, ``1.2 s``,
``3 m 04 s``, ``2 h 05 m``). Every stored text (names, labels, errors, worker ids) is drawn as
plain text, never as rich markup. Tables follow :func:`services.result_table.output_console`:
on a terminal they fit its width, written to a pipe or a file they are never cut.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import Console, OverflowMethod
from rich.table import Table
from rich.text import Text

from services.job_views import JobRow, JobStatus, StepErrorView
from services.result_table import STATUS_STYLES, output_console
from shared.states import StepState

STYLES: dict[str, str] = {**STATUS_STYLES, StepState.RUNNING: "cyan", StepState.WAITING: "magenta", "rejected": "bold red"}


def format_duration(seconds: float | None) -> str:
    """``850 ms``, ``1.2 s``, ``3 m 04 s``, ``2 h 05 m``, ``3 d 02 h``; empty for None."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 59.95:
        return f"{seconds:.1f} s"
    whole = round(seconds)
    if whole < 3600:
        return f"{whole // 60} m {whole % 60:02d} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60:02d} m"
    return f"{whole // 86400} d {whole % 86400 // 3600:02d} h"


def format_time(moment: datetime | None) -> str:
    """Local time to the second, or empty."""
    return "" if moment is None else moment.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def format_labels(labels: Mapping[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in labels.items())


def format_error(error: StepErrorView | None) -> str:
    if error is None:
        return ""
    return f"{error.kind}: {error.type}: {error.message}" if error.message else f"{error.kind}: {error.type}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """One output's summary (see :mod:`shared.store.summary`) in a few words."""
    kind = str(summary.get("type"))
    if kind == "ndarray":
        return f"ndarray {summary.get('dtype')} {tuple(summary.get('shape') or ())}"
    if kind in ("npscalar", "int", "float", "bool", "complex", "none"):
        return f"{summary.get('dtype') or kind} {summary.get('value')}"
    if kind == "str":
        return repr(summary.get("value"))
    if "length" in summary:
        return f"{kind}[{summary['length']}]"
    if "nbytes" in summary:
        return f"{kind} {summary['nbytes']} B"
    return kind


def format_outputs(outputs: Mapping[str, Mapping[str, Any]]) -> str:
    return ", ".join(f"{name}={format_summary(summary)}" for name, summary in outputs.items())


def _state(state: str) -> Text:
    return Text(str(state), style=STYLES.get(state, ""))


def _table(console: Console, columns: Sequence[str], title: str | None = None) -> Table:
    table = Table(title=title)
    overflow: OverflowMethod = "fold" if console.is_terminal else "ignore"
    for column in columns:
        table.add_column(column, overflow=overflow, no_wrap=not console.is_terminal)
    return table


def print_jobs(rows: Sequence[JobRow], console: Console | None = None) -> None:
    """The ``jobs`` table, newest first; a line saying so when there is none."""
    console = console or output_console()
    if not rows:
        console.print("no jobs", markup=False, highlight=False)
        return
    table = _table(console, ("job", "name", "state", "steps", "failed step", "submitted", "duration", "labels"))
    for row in rows:
        table.add_row(Text(row.job_id), Text(row.name or ""), _state(row.state), Text(f"{row.steps_done}/{row.steps_total}"),
                      Text(row.failed_step or ""), Text(format_time(row.submitted_at)), Text(format_duration(row.duration_s)),
                      Text(format_labels(row.labels)))
    console.print(table)


def print_status(status: JobStatus, console: Console | None = None) -> None:
    """The job's header lines, its step table and the earlier attempts of retried steps."""
    console = console or output_console()
    header = Text.assemble(("job ", "bold"), (status.job_id, "bold"), "  ", _state(status.state),
                           f"  {status.steps_done}/{status.steps_total} steps done")
    if status.name:
        header.append(f"  ({status.name})")
    console.print(header)
    times = [f"submitted {format_time(status.submitted_at)}"] if status.submitted_at else []
    if status.duration_s is not None:
        times.append(f"duration {format_duration(status.duration_s)}")
    if times:
        console.print(Text("  ".join(times)))
    if status.labels:
        console.print(Text(f"labels {format_labels(status.labels)}"))
    if status.error is not None and not status.problems:  # a rejected job's error repeats its problems
        where = f"step {status.error.step!r} failed: " if status.error.step else ""
        console.print(Text(f"error: {where}{status.error.type}: {status.error.message}", style="red"))
    for problem in status.problems:
        console.print(Text(problem))
    if status.steps:
        console.print(_step_table(status, console))
    measured = [(name, metric, summary) for name, step in status.steps.items() for metric, summary in step.metrics.items()]
    if measured:
        table = _table(console, ("step", "metric", "last", "at step", "points", "min", "max"), title="metrics")
        for name, metric, summary in measured:
            table.add_row(Text(name), Text(metric), Text(f"{summary.last:.6g}"), Text("" if summary.step is None else str(summary.step)),
                          Text(str(summary.points)), Text(f"{summary.min:.6g}"), Text(f"{summary.max:.6g}"))
        console.print(table)
    retried = [(name, attempt) for name, step in status.steps.items() for attempt in step.attempts]
    if retried:
        table = _table(console, ("step", "attempt", "worker", "finished", "duration", "error"), title="earlier attempts")
        for name, attempt in retried:
            table.add_row(Text(name), Text("" if attempt.attempt is None else str(attempt.attempt)), Text(attempt.worker or ""),
                          Text(format_time(attempt.finished_at)), Text(format_duration(attempt.duration_s)),
                          Text(format_error(attempt.error)))
        console.print(table)


def _step_table(status: JobStatus, console: Console) -> Table:
    table = _table(console, ("step", "task", "state", "attempt", "device", "worker", "started", "duration", "error", "outputs"))
    for name, step in status.steps.items():
        state = _state(step.state)
        if step.retry_at is not None:
            state.append(f" (retry at {format_time(step.retry_at)})")
        table.add_row(Text(name), Text(step.task or ""), state, Text("" if step.attempt is None else str(step.attempt)),
                      Text(step.device or ""), Text(step.worker or ""), Text(format_time(step.started_at)),
                      Text(format_duration(step.duration_s)), Text(format_error(step.error)), Text(format_outputs(step.outputs)))
    return table
