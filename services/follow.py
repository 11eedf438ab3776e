"""Following a cluster job from the CLI (``submit --wait`` and ``theodolite wait``): the same
live progress as ``run``, then the same result, and the ways out people expect.

* Ctrl-C **detaches**: the job runs on (it belongs to the cluster, not to this terminal); the
  command says so, prints how to reattach and how to cancel, and exits 130.
* ``--timeout`` gives up waiting, not on the job: it says the job is still running and how to
  follow or cancel it, and exits 1.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import click

from services.job_input import EXIT_FAILED, EXIT_INVALID, EXIT_OK
from shared.states import JobState

EXIT_DETACHED = 130
"""Ctrl-C detached from a job that runs on (128 + SIGINT, as shells report an interrupt)."""


def how_to_continue(job_id: str) -> str:
    return f"follow it again with `theodolite wait {job_id}`, cancel it with `theodolite cancel {job_id}`"


async def follow_job(client: Any, job_id: str, *, as_json: bool, timeout_s: float | None, show_progress: bool,
                     total_steps: int, artifacts_dir: str | None = None, step_tasks: dict[str, str] | None = None) -> int:
    """Follow ``job_id`` to its end and print its result as ``run`` does; the exit code."""
    from services.display import follow_with_progress
    from shared.distributed_errors import JobRejected

    loop = asyncio.get_running_loop()
    detach = asyncio.Event()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread: no Ctrl-C handling
        loop.add_signal_handler(signal.SIGINT, detach.set)
    following = asyncio.ensure_future(follow_with_progress(
        lambda on_event: client.wait(job_id, timeout_s=timeout_s, on_event=on_event), total=total_steps, show=show_progress))
    detached = asyncio.ensure_future(detach.wait())
    try:
        await asyncio.wait({following, detached}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
        detached.cancel()
    if not following.done():
        following.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await following
        click.echo(f"\ndetached: job {job_id} keeps running on the cluster; {how_to_continue(job_id)}", err=True)
        return EXIT_DETACHED
    try:
        outcome = following.result()
    except JobRejected as rejected:
        for problem in rejected.problems:
            click.echo(problem, err=True)
        return EXIT_INVALID
    except TimeoutError:
        click.echo(f"error: job {job_id} is still running after {timeout_s:g} s (it was not stopped); "
                   f"{how_to_continue(job_id)}", err=True)
        return EXIT_FAILED
    print_outcome(outcome, job_id, as_json=as_json, artifacts_dir=artifacts_dir, step_tasks=step_tasks)
    return EXIT_OK if outcome.status == JobState.SUCCEEDED else EXIT_FAILED


def print_outcome(outcome: Any, job_id: str, *, as_json: bool, artifacts_dir: str | None, step_tasks: dict[str, str] | None) -> None:
    from services.result_table import print_result

    if outcome.artifact_payloads:
        from shared.execution.artifact_files import write_artifact_payload

        target = Path(artifacts_dir) if artifacts_dir else Path(".theodolite", "runs", time.strftime("%Y%m%d-%H%M%S"))
        outcome.artifacts = {name: write_artifact_payload(target, name, payload) for name, payload in outcome.artifact_payloads.items()}
    if as_json:
        click.echo(json.dumps(outcome.to_json_dict(), allow_nan=False, default=str))
        return
    for name, report in outcome.steps.items():
        report.task = report.task or (step_tasks or {}).get(name)
    print_result(outcome)
    click.echo(f"job {job_id}: {outcome.status}", err=True)
    for name, path in (outcome.artifacts or {}).items():
        click.echo(f"artifact {name}: {path}")
