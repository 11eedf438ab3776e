"""``theodolite monitor`` as a person sees it: a :class:`~services.monitor_screen.Screen` drawn
with rich (pure: a screen in, a renderable out; :mod:`services.monitor_cli` shows it in a
``Live``).

From top to bottom: a loud line per device that steps wait for and no worker serves; per job
a progress bar (steps finished of all), its steps counted by state, its running steps with
their workers; the devices (workers online, busy slots, last heartbeat, queue depth, ready
steps and the age of the oldest); the workers. Stored texts (job ids, step names, errors) are
drawn as plain text, never as rich markup.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from services.job_tables import STYLES, format_duration
from services.monitor_screen import DeviceLine, JobLine, Screen, WorkerLine, WorkerStatus
from shared.states import StepState

BAR_WIDTH = 40
SHOWN_RUNNING = 10
"""Running steps listed per job; more are counted (``... and 12 more``)."""
SHOWN_METRICS = 3
"""Metrics shown per running step (the first its task logged)."""
SHOWN_WORKERS = 4
"""Workers named per job (those that ran most of its steps)."""
COUNT_ORDER = (StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED, StepState.RUNNING,
               StepState.QUEUED, StepState.WAITING, StepState.PENDING)
WORKER_STYLES = {WorkerStatus.ONLINE: "green", WorkerStatus.SILENT: "yellow", WorkerStatus.OFFLINE: "dim"}


def render(screen: Screen) -> RenderableType:
    parts: list[RenderableType] = [alarm_line(a.device, a.reason, a.steps, a.jobs) for a in screen.alarms]
    if not screen.jobs:
        parts.append(Text(f"job {screen.watching}: not seen yet, waiting for it" if screen.watching else "no jobs running",
                          style="dim"))
    for job in screen.jobs:
        parts.extend(job_block(job))
    if screen.devices:
        parts.append(device_table(screen.devices))
    if screen.workers:
        parts.append(worker_table(screen.workers))
    footer = f"{screen.events} events heard"
    if screen.rejected_messages:
        footer += f"; the planner rejected {screen.rejected_messages} message(s) that were not jobs"
    parts.append(Text(footer, style="dim"))
    return Group(*parts)


def alarm_line(device: str, reason: str, steps: Sequence[str], jobs: Sequence[str]) -> Text:
    names = ", ".join(steps[:5]) + (f" and {len(steps) - 5} more" if len(steps) > 5 else "")
    because = f" ({reason})" if reason else ""
    return Text(f"!! device {device}: no worker serves it{because}; {len(steps)} step(s) wait for it "
                f"(job {', '.join(jobs)}: {names})", style="bold red")


def change_lines(screen: Screen) -> list[str]:
    """The lines a monitor off a terminal prints as they first hold: each alarm, and each
    worker online (printed again if it comes back after going silent or offline)."""
    lines = [alarm_line(a.device, a.reason, a.steps, a.jobs).plain for a in screen.alarms]
    lines += [f"worker {w.worker_id} online ({w.device}, {w.slots} slot(s))"
              for w in screen.workers if w.status is WorkerStatus.ONLINE]
    return lines


def job_block(job: JobLine) -> list[RenderableType]:
    if job.state is None and job.total is None and not job.counts:
        return [Text(f"job {job.job_id}: not seen yet, waiting for it", style="dim")]
    head = Table.grid(padding=(0, 2))
    for _ in range(5):
        head.add_column(no_wrap=True)
    state = str(job.state) if job.state is not None else "unknown"
    total = f"{job.total}" if job.total is not None else "?"
    title = Text.assemble(("job ", "bold"), (job.job_id, "bold"), (f" ({job.name})" if job.name else "", ""))
    head.add_row(title, Text(state, style=STYLES.get(state, "")),
                 ProgressBar(total=max(job.total or job.done, 1), completed=job.done, width=BAR_WIDTH),
                 Text(f"{job.done}/{total} steps done"), Text(format_duration(job.elapsed_s)))
    lines: list[RenderableType] = [head]
    counts = [f"{state} {job.counts[state]}" for state in COUNT_ORDER if job.counts.get(state)]
    if counts:
        lines.append(Text("  " + " · ".join(counts)))
    if job.missed:
        lines.append(Text(f"  ! may have missed events ({job.gaps} gap(s) in its numbers): reading its state from MongoDB",
                          style="bold yellow"))
    elif job.gaps:
        lines.append(Text(f"  {job.gaps} gap(s) in its numbers, state re-read from MongoDB", style="yellow"))
    if job.joined_seq is not None:
        lines.append(Text(f"  joined at event {job.joined_seq}: earlier events read from MongoDB", style="dim"))
    if job.error:
        lines.append(Text(f"  error: {job.error}", style="red"))
    if job.ran_on:
        lines.append(Text("  ran on " + ", ".join(f"{worker} ({count} step{'s' if count > 1 else ''})"
                                                 for worker, count in job.ran_on[:SHOWN_WORKERS])
                          + (f" and {len(job.ran_on) - SHOWN_WORKERS} more" if len(job.ran_on) > SHOWN_WORKERS else "")))
    if job.running:
        lines.append(running_table(job))
    return lines


def running_table(job: JobLine) -> Table:
    table = Table("running step", "worker", "for", "metrics", box=None, padding=(0, 2), pad_edge=True, show_edge=False)
    for line in job.running[:SHOWN_RUNNING]:
        step = Text(line.step)
        if line.warned:
            step.append(" (past 80 % of its timeout)", style="yellow")
        metrics = ", ".join(f"{name} {value:.4g}" + ("" if at is None else f" (step {at})")
                            for name, value, at in line.metrics[:SHOWN_METRICS])
        table.add_row(step, Text(line.worker or "?"), Text(format_duration(line.for_s)), Text(metrics))
    if len(job.running) > SHOWN_RUNNING:
        table.add_row(Text(f"... and {len(job.running) - SHOWN_RUNNING} more", style="dim"), Text(""), Text(""), Text(""))
    return table


def device_table(devices: Sequence[DeviceLine]) -> Table:
    table = Table("device", "workers", "busy/slots", "held", "last heartbeat", "queue", "consumers", "ready", "oldest ready",
                  title="devices", title_justify="left", box=None, padding=(0, 2), show_edge=False)
    for line in devices:
        workers = f"{line.online}" + (f" (+{line.silent} silent)" if line.silent else "")
        queue = "" if not line.probed else ("no queue" if line.queue is None else str(line.queue.messages))
        consumers = "" if line.queue is None else str(line.queue.consumers)
        table.add_row(Text(line.device), Text(workers, style="" if line.online else "red"), Text(f"{line.busy}/{line.slots}"),
                      Text(str(line.held)), Text(_ago(line.last_beat_s)), Text(queue), Text(consumers), Text(str(line.ready)),
                      Text(format_duration(line.oldest_ready_s)))
    return table


def worker_table(workers: Sequence[WorkerLine]) -> Table:
    table = Table("worker", "device", "state", "busy/slots", "held", "completed", "last heard", title="workers",
                  title_justify="left", box=None, padding=(0, 2), show_edge=False)
    for line in workers:
        table.add_row(Text(line.worker_id), Text(line.device), Text(str(line.status), style=WORKER_STYLES[line.status]),
                      Text(f"{line.busy}/{line.slots}"), Text(str(line.held)), Text(str(line.completed)), Text(_ago(line.last_seen_s)))
    return table


def _ago(seconds: float | None) -> str:
    return "" if seconds is None else f"{format_duration(seconds)} ago"
