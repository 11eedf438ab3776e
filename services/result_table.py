"""The result of a job as a person reads it: the step table, the metrics, the failure.

One printer for ``run`` and ``submit --wait``, fed by a :class:`JobResult` (whose reports
carry each step's task, duration and traceback besides the JSON fields). On a terminal the
tables fit the window and long values are shortened with ``…``; written to a pipe or a file
nothing is wrapped or cut, so ``theodolite run job.yaml | cat`` keeps every name and value.
A failed step's traceback is written as it is, never re-wrapped.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from rich.console import Console, OverflowMethod
from rich.table import Table

from shared.execution.result import JobResult, to_jsonable
from shared.states import StepState

STATUS_STYLES: dict[str, str] = {StepState.SUCCEEDED: "green", StepState.FAILED: "bold red", StepState.SKIPPED: "yellow", StepState.CANCELLED: "yellow"}
TERMINAL_VALUE_CHARS = 48
"""On a terminal, a step's output value is summarised in at most this many characters."""
MAX_ROWS = 60
"""Above this many steps the table shows the ones that did not succeed and the last ones."""
UNBOUNDED_WIDTH = 1 << 20
"""Console width used when writing to a pipe or file: wide enough that nothing wraps."""


def output_console(*, stderr: bool = False) -> Console:
    """A console for tables: the terminal's width, or no wrapping at all when redirected."""
    stream: TextIO = sys.stderr if stderr else sys.stdout
    if stream.isatty():
        return Console(file=stream)
    return Console(file=stream, width=UNBOUNDED_WIDTH, soft_wrap=True)


def print_result(result: JobResult, console: Console | None = None) -> None:
    """The step table, the metrics tables and, for a failed job, the error and its traceback."""
    console = console or output_console()
    limit = TERMINAL_VALUE_CHARS if console.is_terminal else None
    table = Table(title=f"job {result.status}", title_style=STATUS_STYLES.get(result.status, ""))
    overflow: OverflowMethod = "fold" if console.is_terminal else "ignore"
    for column in ("step", "task", "status", "time", "outputs"):
        table.add_column(column, overflow=overflow, no_wrap=not console.is_terminal)
    shown = list(result.steps.items())
    if len(shown) > MAX_ROWS:
        half = MAX_ROWS // 2
        shown = [item for item in shown if item[1].status != StepState.SUCCEEDED][:half] + shown[-half:]
    for name, report in shown:
        elapsed = "" if report.duration_s is None else f"{report.duration_s:.3f}s"
        outputs = ", ".join(f"{k}={summarize(v, limit)}" for k, v in report.outputs.items())
        status = f"[{STATUS_STYLES.get(report.status, '')}]{report.status}[/]"
        table.add_row(name, report.task or "", status, elapsed, outputs)
    console.print(table)
    print_metrics(result, console)
    if len(result.steps) > len(shown):
        console.print(f"({len(result.steps) - len(shown)} more succeeded steps not shown; use --json for all)")
    if result.error is not None:
        console.print(f"[bold red]step {result.error.step!r} failed[/]: {result.error.type}: {result.error.message}",
                      markup=True, highlight=False)
        failed = result.steps.get(result.error.step)
        if failed is not None and failed.traceback:
            sys.stderr.write(failed.traceback if failed.traceback.endswith("\n") else failed.traceback + "\n")
            sys.stderr.flush()


def print_metrics(result: JobResult, console: Console | None = None) -> None:
    """The figures a job reports: every ``metrics`` output, flattened, as a table."""
    console = console or output_console()
    limit = TERMINAL_VALUE_CHARS + 12 if console.is_terminal else None
    for step, report in result.steps.items():
        metrics = report.outputs.get("metrics")
        if not isinstance(metrics, dict):
            continue
        table = Table(title=f"metrics ({step})")
        table.add_column("metric", no_wrap=not console.is_terminal)
        table.add_column("value", justify="right", no_wrap=not console.is_terminal)
        for key, value in _flatten(metrics):
            table.add_row(key, summarize(value, limit))
        console.print(table)


def summarize(value: Any, limit: int | None = TERMINAL_VALUE_CHARS) -> str:
    """A one-glance summary: arrays by shape, mappings by keys, numbers to 4 digits.

    ``limit`` shortens the text with ``…`` (for terminals); ``None`` keeps it whole.
    """
    shape = getattr(value, "shape", None)
    dtype = getattr(value, "dtype", None)
    if shape is not None and dtype is not None:
        if getattr(value, "size", 2) == 1:
            return summarize(value.item() if hasattr(value, "item") else value, limit)
        return f"array{tuple(shape)}:{dtype}"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict):
        scalars = all(isinstance(v, (int, float, str, bool)) or v is None for v in value.values())
        text = ", ".join(f"{k}={summarize(v, limit)}" for k, v in value.items()) if scalars else ", ".join(map(str, value))
        text = "{" + text + "}"
    elif isinstance(value, (list, tuple)) and len(value) > 4:
        return f"{type(value).__name__}[{len(value)}]"
    else:
        text = repr(to_jsonable(value))
    if limit is None or len(text) <= limit:
        return text
    return text[: limit - 1] + "…"


def _flatten(mapping: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            rows.extend(_flatten(value, f"{name} "))
        else:
            rows.append((name, value))
    return rows
