"""CLI commands that look at a cluster's jobs: ``theodolite jobs`` and ``theodolite status``.

Both read MongoDB only (no RabbitMQ), find the cluster as ``submit`` does (THEODOLITE_*
variables, then the .theodolite/cluster.json of a running ``theodolite up``, then the
defaults) and exit 0, or 1 with one ``error:`` line: MongoDB out of reach, or no such job.
The ``--json`` keys are described in docs/operations.md. Registered by :mod:`services.cli`.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any

import click

from services.distributed_cli import _settings
from services.job_input import EXIT_FAILED, EXIT_OK
from shared.labels import parse_label
from shared.states import JobState

DEFAULT_LIMIT = 50
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")


def parse_since(text: str, now: float) -> float:
    """``30m``, ``2h``, ``1d`` (s, m, h, d, w) before ``now``, or an ISO 8601 time (local time
    when it names no zone), as seconds since the epoch. Raises ValueError with one line."""
    match = _DURATION.match(text)
    if match:
        return now - float(match.group(1)) * UNIT_S[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"expected a duration like 30m, 2h or 1d, or a time like 2024-05-01T12:00, got {text!r}") from None
    return (moment if moment.tzinfo else moment.astimezone()).timestamp()


def parse_label_filters(texts: Sequence[str]) -> dict[str, str | None]:
    """``--label KEY=VALUE`` (the label has this value) or ``--label KEY`` (the job has the key)."""
    wanted: dict[str, str | None] = {}
    for text in texts:
        key, value = parse_label(text, bare_key=True)
        if key in wanted:
            raise ValueError(f"label {key!r} is given twice")
        wanted[key] = value
    return wanted


async def _reading(settings: Any, read: Callable[[Any], Awaitable[int]]) -> int:
    """``read(store)`` with an open store; MongoDB out of reach (or away longer than the
    read retries last) is one ``error:`` line, exit 1."""
    from pymongo.errors import PyMongoError

    from shared.distributed_errors import DistributedError
    from shared.outages import short
    from shared.store import Store

    try:
        async with Store(settings) as store:
            return await read(store)
    except DistributedError as error:
        click.echo(f"error: {error}", err=True)
    except PyMongoError as error:
        click.echo(f"error: MongoDB: {short(error)}", err=True)
    return EXIT_FAILED


@click.command()
@click.option("--state", "states", multiple=True, type=click.Choice([s.value for s in JobState]),
              help="Only jobs in this state (repeatable: any of them).")
@click.option("--label", "labels", multiple=True, metavar="KEY[=VALUE]",
              help="Only jobs with this label value, or with the key at all (repeatable: all of them).")
@click.option("--since", default=None, metavar="AGE|TIME", help="Only jobs submitted since: 30m, 2h, 1d, or an ISO time.")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True, help="At most this many jobs.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON list (keys in docs/operations.md).")
def jobs(states: tuple[str, ...], labels: tuple[str, ...], since: str | None, limit: int, as_json: bool) -> None:
    """List the cluster's jobs, newest first: state, steps done/total, the failed step, when
    submitted, how long they ran, labels."""
    from shared.store.queries import JobQuery

    now = time.time()
    try:
        wanted = parse_label_filters(labels)
    except ValueError as problem:
        raise click.BadParameter(str(problem), param_hint="--label") from None
    try:
        after = None if since is None else parse_since(since, now)
    except ValueError as problem:
        raise click.BadParameter(str(problem), param_hint="--since") from None
    query = JobQuery(states=[JobState(s) for s in states], labels=wanted, since=after, limit=limit)
    sys.exit(asyncio.run(_reading(_settings(), lambda store: _list(store, query, as_json))))


async def _list(store: Any, query: Any, as_json: bool) -> int:
    from services.job_tables import print_jobs
    from services.job_views import job_row

    docs = await store.find_jobs(query)
    counts = await store.step_counts([doc["_id"] for doc in docs])
    now = time.time()
    rows = [job_row(doc, counts.get(doc["_id"]), now) for doc in docs]
    if as_json:
        click.echo(json.dumps([row.model_dump(mode="json") for row in rows]))
    else:
        print_jobs(rows)
    return EXIT_OK


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (keys in docs/operations.md).")
def status(job_id: str, as_json: bool) -> None:
    """Show JOB_ID and each of its steps: state, attempt, device, worker, start, duration, error
    and a summary of its outputs (arrays by dtype and shape). Running or finished jobs alike."""
    settings = _settings()
    sys.exit(asyncio.run(_reading(settings, lambda store: _show(store, job_id, settings.namespace, as_json))))


async def _show(store: Any, job_id: str, namespace: str, as_json: bool) -> int:
    from services.job_tables import print_status
    from services.job_views import job_status

    found = await store.job_with_document(job_id)
    if found is None:
        click.echo(f"error: no job named {job_id} in namespace {namespace}", err=True)
        return EXIT_FAILED
    doc, document = found
    steps = await store.step_documents(job_id)
    dispatched = await store.dispatched_steps(job_id)
    view = job_status(doc, document, steps, dispatched, time.time())
    if as_json:
        click.echo(json.dumps(view.model_dump(mode="json")))
    else:
        print_status(view)
    return EXIT_OK


COMMANDS = [jobs, status]
