"""``theodolite logs JOB [STEP] [--follow]``: what a job's steps printed and logged, per attempt.

Reads MongoDB only (collection ``step_logs``, :mod:`shared.store.logs`). Each attempt is shown
under a header line; a failed attempt's traceback follows its output. ``--follow`` keeps
printing new output (workers store a running step's output every few seconds) until the job
has ended and every attempt's log is final. Registered by :mod:`services.cli`.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import click

from services.distributed_cli import _settings
from services.job_input import EXIT_FAILED, EXIT_OK
from services.jobs_cli import _reading
from shared.states import FINISHED_JOB_STATES

FOLLOW_POLL_S = 1.0


def header(log: Any) -> str:
    state = "" if log.final else ", running"
    return f"==> {log.step} attempt {log.attempt} (worker {log.worker or '?'}{state}) <=="


def footer(log: Any) -> str:
    lines = []
    if log.dropped_bytes:
        lines.append(f"[{log.dropped_bytes} bytes beyond the per-attempt cap were not kept]")
    if log.traceback:
        lines.append(log.traceback.rstrip("\n"))
    return "\n".join(lines)


class Follower:
    """Prints each attempt's log once, then only what was added to it."""

    def __init__(self) -> None:
        self.printed: dict[tuple[str, int], str] = {}
        self.finished: set[tuple[str, int]] = set()

    def show(self, log: Any) -> None:
        key = (log.step, log.attempt)
        if key in self.finished:
            return
        before = self.printed.get(key)
        if before is None:
            click.echo(header(log))
            new = log.text
        elif log.text.startswith(before):
            new = log.text[len(before):]
        else:  # past the cap the middle was dropped: show the kept end again
            new = "\n[... output beyond the cap dropped ...]\n" + log.text[-4096:]
        if new:
            click.echo(new, nl=not new.endswith("\n") and log.final)
        self.printed[key] = log.text
        if log.final:
            self.finished.add(key)
            tail = footer(log)
            if tail:
                click.echo(tail)


@click.command()
@click.argument("job_id")
@click.argument("step", required=False)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new output until the job has ended.")
def logs(job_id: str, step: str | None, follow: bool) -> None:
    """Print what JOB_ID's steps (or STEP's) printed and logged, attempt by attempt, with each
    failed attempt's traceback. Output is captured per attempt up to 1 MiB (its start and its
    end are kept; the size of what was dropped is shown)."""
    settings = _settings()
    sys.exit(asyncio.run(_reading(settings, lambda store: _logs(store, job_id, step, follow, settings.namespace))))


async def _logs(store: Any, job_id: str, step: str | None, follow: bool, namespace: str) -> int:
    state = await store.job_state_of(job_id)
    if state is None:
        click.echo(f"error: no job named {job_id} in namespace {namespace}", err=True)
        return EXIT_FAILED
    follower = Follower()
    since: float | None = None
    while True:
        found = await store.read_logs(job_id, step, since=since)
        for log in found:
            follower.show(log)
            since = max(since or 0.0, log.updated_at)
        if not follow:
            if not found:
                click.echo(f"no output recorded for {'step ' + step + ' of ' if step else ''}job {job_id} yet", err=True)
            return EXIT_OK
        if state in FINISHED_JOB_STATES and all(key in follower.finished for key in follower.printed):
            return EXIT_OK
        await asyncio.sleep(FOLLOW_POLL_S)
        state = await store.job_state_of(job_id)


COMMANDS = [logs]
