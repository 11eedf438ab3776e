"""What a person sees during and after ``theodolite run``: live progress and a result table."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.execution.local import LocalExecutor
from shared.execution.result import JobResult, to_jsonable

STATUS_STYLES = {"succeeded": "green", "failed": "bold red", "skipped": "yellow", "cancelled": "yellow"}
REFRESH_S = 0.1


async def run_with_progress(executor: LocalExecutor, *, show: bool) -> JobResult:
    """Run the job; while it runs, redraw a progress bar on stderr (when it is a terminal)."""
    if not show:
        return await executor.run_async()
    console = Console(stderr=True)
    total = len(executor.job.document.steps)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("steps", total=total, detail="")
        job_task = asyncio.create_task(executor.run_async())
        while not job_task.done():
            await asyncio.wait({job_task}, timeout=REFRESH_S)
            progress.update(bar, completed=executor.job.done, detail=_detail(executor))
        progress.update(bar, completed=executor.job.done, detail=_detail(executor))
        return job_task.result()


def _detail(executor: LocalExecutor) -> str:
    counts = Counter(state.value for state in executor.job.core.states().values())
    running = [name for name, state in executor.job.core.states().items() if state.value == "running"][:3]
    parts = [f"{counts.get('running', 0)} running"]
    if counts.get("failed"):
        parts.append(f"[red]{counts['failed']} failed[/]")
    if running:
        parts.append(", ".join(running))
    return "  ".join(parts)


def print_table(result: JobResult, executor: LocalExecutor, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"job {result.status}", title_style=STATUS_STYLES.get(result.status, ""))
    for column in ("step", "task", "status", "time", "outputs"):
        table.add_column(column, overflow="fold")
    records = executor.job.records
    shown = list(result.steps.items())
    if len(shown) > 60:
        shown = [item for item in shown if item[1].status != "succeeded"][:30] + shown[-30:]
    for name, report in shown:
        record = records[name]
        elapsed = ""
        if record.started_s is not None and record.finished_s is not None:
            elapsed = f"{record.finished_s - record.started_s:.3f}s"
        task = executor.job.document.steps[name].task
        outputs = ", ".join(f"{k}={_short(v)}" for k, v in report.outputs.items())
        table.add_row(name, task, f"[{STATUS_STYLES.get(report.status, '')}]{report.status}[/]", elapsed, outputs)
    console.print(table)
    print_metrics(result, console)
    if len(result.steps) > len(shown):
        console.print(f"({len(result.steps) - len(shown)} more succeeded steps not shown; use --json for all)")
    if result.error is not None:
        console.print(f"[bold red]step {result.error.step!r} failed[/]: {result.error.type}: {result.error.message}")
        trace = records[result.error.step].traceback if result.error.step in records else None
        if trace:
            Console(stderr=True).print(trace, markup=False, highlight=False)


def _short(value: Any, limit: int = 48) -> str:
    """A one-glance summary: arrays by shape, mappings by keys, numbers to 4 digits."""
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        if getattr(value, "size", 2) == 1:
            return _short(value.item() if hasattr(value, "item") else value, limit)
        return f"array{tuple(shape)}:{dtype}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        scalars = all(isinstance(v, (int, float, str, bool)) or v is None for v in value.values())
        text = ", ".join(f"{k}={_short(v)}" for k, v in value.items()) if scalars else ", ".join(map(str, value))
        text = "{" + text + "}"
    elif isinstance(value, (list, tuple)) and len(value) > 4:
        return f"{type(value).__name__}[{len(value)}]"
    else:
        text = repr(to_jsonable(value))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def print_metrics(result: JobResult, console: Console | None = None) -> None:
    """The figures a job reports: every ``metrics`` output, flattened, as a table."""
    console = console or Console()
    for step, report in result.steps.items():
        metrics = report.outputs.get("metrics")
        if not isinstance(metrics, dict):
            continue
        table = Table(title=f"metrics ({step})")
        table.add_column("metric")
        table.add_column("value", justify="right")
        for key, value in _flatten(metrics):
            table.add_row(key, _short(value, 60))
        console.print(table)


def _flatten(mapping: dict, prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{name} "))
        else:
            rows.append((name, value))
    return rows


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()
