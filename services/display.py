"""What a person sees while a job runs: a live progress bar on stderr, for ``run`` (polling
the embedded runner) and ``submit --wait`` (driven by the job's events).

The tables printed after a job are in :mod:`services.result_table`."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from shared.execution.local import LocalExecutor
from shared.execution.result import JobResult
from shared.messages import Event
from shared.states import FINISHED_STEP_STATES, StepState

REFRESH_S = 0.1


async def run_with_progress(executor: LocalExecutor, *, show: bool) -> JobResult:
    """Run the job; while it runs, redraw a progress bar on stderr (when it is a terminal).

    A display that fails is logged once and given up: the job runs on and its result is returned."""
    if not show:
        return await executor.run_async()
    import logging

    console = Console(stderr=True)
    total = len(executor.job.document.steps)
    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        bar = progress.add_task("steps", total=total, detail="")

        def redraw() -> bool:
            try:
                progress.update(bar, completed=executor.job.done, detail=_detail(executor))
            except Exception:  # Ctrl-C (KeyboardInterrupt) still stops the run
                logging.getLogger("theodolite.display").warning("the progress display failed; the job runs on without it", exc_info=True)
                return False
            return True

        job_task = asyncio.create_task(executor.run_async())
        drawing = True
        while drawing and not job_task.done():
            await asyncio.wait({job_task}, timeout=REFRESH_S)
            drawing = redraw()
        if drawing:
            redraw()
        return await job_task


def _detail(executor: LocalExecutor) -> str:
    counts = Counter(executor.job.core.states().values())
    running = [name for name, state in executor.job.core.states().items() if state is StepState.RUNNING][:3]
    parts = [f"{counts.get(StepState.RUNNING, 0)} running"]
    if counts.get(StepState.FAILED):
        parts.append(f"[red]{counts[StepState.FAILED]} failed[/]")
    if running:
        parts.append(", ".join(running))
    return "  ".join(parts)


def stderr_is_terminal() -> bool:
    return sys.stderr.isatty()


async def follow_with_progress(wait: Callable[[Callable[[Event], None] | None], Coroutine[Any, Any, JobResult]], *,
                               total: int, show: bool) -> JobResult:
    """Await a cluster job (``wait(on_event)``) with the same progress bar as ``run``,
    driven by the job's step events."""
    if not show:
        return await wait(None)
    states: dict[str, str] = {}

    def on_event(event: Event) -> None:
        if event.step is not None and event.state is not None:
            states[event.step] = event.state

    columns = [TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
    with Progress(*columns, console=Console(stderr=True), transient=False) as progress:
        bar = progress.add_task("steps", total=total, detail="")
        job_task = asyncio.create_task(wait(on_event))
        while not job_task.done():
            await asyncio.wait({job_task}, timeout=REFRESH_S)
            counts = Counter(states.values())
            done = sum(counts[s] for s in FINISHED_STEP_STATES)
            running = [name for name, state in states.items() if state == StepState.RUNNING][:3]
            detail = "  ".join(filter(None, [f"{counts.get(StepState.RUNNING, 0)} running",
                                             f"[red]{counts[StepState.FAILED]} failed[/]" if counts.get(StepState.FAILED) else "",
                                             ", ".join(running)]))
            progress.update(bar, completed=min(done, total), detail=detail)
        result = job_task.result()
        progress.update(bar, completed=sum(1 for r in result.steps.values() if r.status in FINISHED_STEP_STATES))
        return result
