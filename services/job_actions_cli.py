"""``theodolite wait JOB`` (follow a cluster job again), ``theodolite cancel JOB`` and
``theodolite resume JOB``.

All find the cluster as ``submit`` does. ``wait`` prints what ``submit --wait`` prints (live
progress, then the result; Ctrl-C detaches again). ``resume`` starts a finished job's next run (:mod:`shared.store.resume`). ``cancel`` sends the planner a cancel:
nothing new starts, running steps see ``context.cancelled()`` at once and are stopped after
``--grace`` seconds, and the job ends ``cancelled`` with each step's state as it was; a job
that has already ended is left alone (a clear no-op message, exit 0). What cancel and resume
decide lives in :mod:`services.job_actions` (the dashboard acts through it too); this module
prints its messages, follows the job and picks the exit code. Registered by :mod:`services.cli`.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import click

from services.cli_options import params_option
from services.distributed_cli import _settings
from services.job_actions import ActionCode, ActionOutcome, cancel_job, resume_job
from services.job_input import EXIT_FAILED, EXIT_OK
from shared.messages import DEFAULT_CANCEL_GRACE_S


async def _with_client(settings: Any, act: Any) -> int:
    from pymongo.errors import PyMongoError

    from services.client import Client
    from shared.distributed_errors import DistributedError
    from shared.outages import short

    try:
        async with Client(settings) as client:
            return int(await act(client))
    except DistributedError as error:
        click.echo(f"error: {error}", err=True)
    except PyMongoError as error:
        click.echo(f"error: MongoDB: {short(error)}", err=True)
    return EXIT_FAILED


async def _job_or_say(client: Any, job_id: str, namespace: str) -> dict[str, Any] | None:
    """The job's stored state, or None after saying there is no such job."""
    doc = await client.store.job_state(job_id)
    if doc is None:
        click.echo(f"error: no job named {job_id} in namespace {namespace}", err=True)
    return doc


def _say(outcome: ActionOutcome) -> None:
    """An action's message on stderr (``error:`` first when it was not done)."""
    click.echo(outcome.message if outcome.ok else f"error: {outcome.message}", err=True)


@click.command(name="wait")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the result as `run --json` does.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="Stop waiting after this many seconds (exit 1; the job runs on).")
@click.option("--progress/--no-progress", default=None, help="Live progress on stderr (default: when stderr is a terminal).")
@click.option("--artifacts-dir", type=click.Path(file_okay=False), default=None, help="Where artifact outputs are written.")
def wait_command(job_id: str, as_json: bool, timeout_s: float | None, progress: bool | None, artifacts_dir: str | None) -> None:
    """Follow JOB_ID to its end (again) and print its result; exit 0 succeeded, 1 failed or
    cancelled, 2 rejected, 130 detached with Ctrl-C (the job runs on)."""
    from services.display import stderr_is_terminal
    from services.follow import follow_job

    show = stderr_is_terminal() if progress is None else progress
    settings = _settings()

    async def act(client: Any) -> int:
        doc = await _job_or_say(client, job_id, settings.namespace)
        if doc is None:
            return EXIT_FAILED
        total = len(doc.get("step_names") or [])
        return await follow_job(client, job_id, as_json=as_json, timeout_s=timeout_s, show_progress=show, total_steps=total,
                                artifacts_dir=artifacts_dir)

    sys.exit(asyncio.run(_with_client(settings, act)))


@click.command()
@click.argument("job_id")
@click.option("--grace", "grace_s", type=click.FloatRange(min=0, max=86_400), default=DEFAULT_CANCEL_GRACE_S, show_default=True,
              help="Seconds running steps get to stop by themselves before they are stopped.")
@click.option("--wait", "wait_end", is_flag=True, help="Wait until the job has ended and print its result.")
@click.option("--json", "as_json", is_flag=True, help="With --wait: print the result as `run --json` does.")
def cancel(job_id: str, grace_s: float, wait_end: bool, as_json: bool) -> None:
    """Cancel JOB_ID: nothing new starts; running steps see `context.cancelled()` at once and
    are stopped after --grace seconds; the job ends `cancelled`. A job that has already ended
    is left as it is (exit 0). Cancelling again with a shorter --grace shortens it."""
    from services.follow import follow_job

    settings = _settings()

    async def act(client: Any) -> int:
        outcome = await cancel_job(client, job_id, grace_s)
        _say(outcome)
        if outcome.code is not ActionCode.SENT or not wait_end:
            return EXIT_OK if outcome.ok else EXIT_FAILED
        code = await follow_job(client, job_id, as_json=as_json, timeout_s=grace_s + 120, show_progress=False,
                                total_steps=outcome.steps_total)
        return EXIT_OK if code in (EXIT_OK, EXIT_FAILED) else code

    sys.exit(asyncio.run(_with_client(settings, act)))


RESUME_START_S = 60.0
"""How long ``resume --wait`` waits for a planner to start the new run."""


@click.command()
@click.argument("job_id")
@click.option("--from", "from_steps", multiple=True, metavar="STEP", help="Run this step and its descendants again too (repeatable).")
@params_option
@click.option("--wait", "wait_end", is_flag=True, help="Follow the new run to its end and print its result.")
@click.option("--json", "as_json", is_flag=True, help="With --wait: print the result as `run --json` does.")
@click.option("--progress/--no-progress", default=None, help="With --wait: live progress on stderr.")
def resume(job_id: str, from_steps: tuple[str, ...], params: tuple[str, ...], wait_end: bool, as_json: bool,
           progress: bool | None) -> None:
    """Run a failed or cancelled job again, as the same job's next run: steps that succeeded
    keep their outputs; failed, skipped and cancelled steps run again (with --from, also the
    named steps and their descendants, even in a job that succeeded). -p NAME=VALUE replaces
    a parameter's value for the steps that run. Exit 0 sent (or, with --wait, succeeded), 1
    refused or failed."""
    from services.display import stderr_is_terminal
    from services.follow import follow_job
    from services.job_input import parse_parameters

    settings = _settings()
    try:
        overrides = parse_parameters(params)
    except ValueError as problem:
        raise click.BadParameter(str(problem), param_hint="-p") from None

    async def act(client: Any) -> int:
        outcome = await resume_job(client, job_id, from_steps, overrides)
        _say(outcome)
        if not outcome.ok or not wait_end:
            return EXIT_OK if outcome.ok else EXIT_FAILED
        new_run = outcome.run or 2
        deadline = time.monotonic() + RESUME_START_S
        while int(((await client.store.job_state(job_id)) or {}).get("run") or 1) < new_run:
            if time.monotonic() > deadline:
                click.echo(f"error: no planner started run {new_run} of {job_id} within {RESUME_START_S:g} s", err=True)
                return EXIT_FAILED
            await asyncio.sleep(0.2)
        show = stderr_is_terminal() if progress is None else progress
        return await follow_job(client, job_id, as_json=as_json, timeout_s=None, show_progress=show,
                                total_steps=outcome.steps_total)

    sys.exit(asyncio.run(_with_client(settings, act)))


COMMANDS = [wait_command, cancel, resume]
