"""CLI commands of the distributed mode: planner, worker, submit, up, schema.

Registered on the ``theodolite`` group by :mod:`services.cli`. Every command reads
``THEODOLITE_AMQP_URL`` / ``THEODOLITE_MONGO_URL`` (and the rest of :class:`Settings`);
planner, worker and submit fall back on the cluster file that a running ``theodolite up``
wrote in the current directory (:class:`shared.settings.CliSettings`), ``up`` writes it.
Exit codes of ``submit --wait`` are those of ``run``: 0 succeeded, 1 failed, 2 invalid.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from services.cli_options import params_option, plugins_option, seed_option

metrics_port_option = click.option(
    "--metrics-port", type=click.IntRange(0, 65535), default=None,
    help="Serve /metrics, /healthz and /readyz on this port (default THEODOLITE_METRICS_PORT; 0: none; "
         "address THEODOLITE_METRICS_HOST, default 127.0.0.1).")

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2  # those of `run` (services.job_input)


class _WarningLine(logging.Handler):
    """Shows a settings warning (a stale cluster file) as one ``warning:`` line on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        click.echo(f"warning: {record.getMessage()}", err=True)


def _settings(*, folder: bool = True, **overrides: Any) -> Any:
    """The command's settings. With ``folder``, first match wins: ``overrides``, THEODOLITE_*
    variables, the cluster file of a running ``theodolite up`` in the current directory, the
    defaults (:class:`~shared.settings.CliSettings`); without it, the cluster file is not read."""
    from shared.settings import CliSettings, Settings

    settings_log = logging.getLogger("theodolite.settings")
    if not any(isinstance(h, _WarningLine) for h in settings_log.handlers):
        settings_log.addHandler(_WarningLine())
        settings_log.propagate = False
    try:
        return (CliSettings if folder else Settings)(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as error:
        problems = "; ".join(f"THEODOLITE_{'_'.join(str(p) for p in e['loc']).upper()}: {e['msg']}" for e in error.errors())
        raise click.UsageError(f"bad configuration: {problems}") from None


def _logging(verbose: bool) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("aiormq").setLevel(logging.WARNING)
    logging.getLogger("aio_pika").setLevel(logging.WARNING)
    logging.getLogger("pymongo").setLevel(logging.WARNING)


async def _serve(run: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    """Run a service until SIGTERM or SIGINT, which start its drain."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await run(stop)


def _run_service(run: Callable[[asyncio.Event], Awaitable[None]]) -> int:
    """:func:`_serve` ``run``; RabbitMQ or MongoDB out of reach at start, or any other error of
    the distributed mode that ends the service (a planner that lost its lease), is one
    ``error:`` line (exit 1): its supervisor (``theodolite up``) restarts it."""
    from shared.distributed_errors import DistributedError

    try:
        asyncio.run(_serve(run))
    except DistributedError as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_FAILED
    return EXIT_OK


@click.command()
@plugins_option
@metrics_port_option
@click.option("-v", "--verbose", is_flag=True)
def planner(plugin_dirs: tuple[str, ...], metrics_port: int | None, verbose: bool) -> None:
    """Run the planner service: validate jobs, persist them, dispatch ready steps."""
    from services.planner import Planner

    _logging(verbose)
    settings = _settings(metrics_port=metrics_port)
    logging.getLogger("theodolite.planner").info("settings: %r", settings)
    sys.exit(_run_service(Planner(settings, plugin_dirs).run))


@click.command()
@click.option("--device", required=True, help="Device type this worker serves: cpu, gpu or any label tasks declare.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Steps run at once (default THEODOLITE_CONCURRENCY).")
@click.option("--prefetch", type=click.IntRange(min=1), default=None, help="Unacked deliveries (default: concurrency; 1 on gpu).")
@click.option("--isolation", type=click.Choice(["process", "thread"]), default=None, help="Where tasks that do not choose run: a child process per slot (killable; default THEODOLITE_ISOLATION or process) or a thread.")
@plugins_option
@metrics_port_option
@click.option("-v", "--verbose", is_flag=True)
def worker(device: str, concurrency: int | None, prefetch: int | None, isolation: str | None, plugin_dirs: tuple[str, ...],
           metrics_port: int | None, verbose: bool) -> None:
    """Run a worker consuming the steps of one device type."""
    from services.worker import prepare_device_environment

    _logging(verbose)
    description = prepare_device_environment(device)  # before anything imports JAX
    from services.worker import Worker

    settings = _settings(isolation=isolation, metrics_port=metrics_port)
    log = logging.getLogger("theodolite.worker")
    log.info("%s", description)
    instance = Worker(settings, device, concurrency=concurrency, prefetch=prefetch, plugin_dirs=plugin_dirs)
    sys.exit(_run_service(instance.run))


@click.command()
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@plugins_option
@click.option("--wait", is_flag=True, help="Follow the job to its end; exit 0 succeeded, 1 failed, 2 invalid.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: the job id, or with --wait the result as `run --json` does.")
@click.option("--keep-going", is_flag=True, help="After a failure, keep running branches that do not depend on it.")
@click.option("--timeout", "timeout_s", type=float, default=None, help="With --wait: stop waiting after this many seconds (exit 1; the job runs on).")
@click.option("--artifact", "artifacts", multiple=True, metavar="NAME=PATH", help="File for an artifact input (.npy, .npz, .json, .yaml, or raw bytes); stored in MongoDB.")
@click.option("--artifacts-dir", type=click.Path(file_okay=False), default=None, help="With --wait: where artifact outputs are written (default .theodolite/runs/TIME/).")
@click.option("--progress/--no-progress", default=None, help="With --wait: live progress on stderr (default: when stderr is a terminal).")
@click.option("--label", "labels", multiple=True, metavar="KEY=VALUE", help="Label the job (repeatable); `theodolite jobs --label` finds it.")
@seed_option
def submit(file: str, params: tuple[str, ...], plugin_dirs: tuple[str, ...], wait: bool, as_json: bool,
           keep_going: bool, timeout_s: float | None, artifacts: tuple[str, ...], artifacts_dir: str | None,
           progress: bool | None, labels: tuple[str, ...] = (), seed: int | None = None) -> None:
    """Send FILE to the planner as a job (validated here first).

    A plugin module this machine does not have is a warning: the cluster's workers may hold it.
    With --wait, prints what `run` prints (progress, the step table, the metrics); Ctrl-C detaches
    (the job runs on; `theodolite wait JOB` follows it again, exit 130).

    Which cluster: the THEODOLITE_* environment variables win; else the .theodolite/cluster.json
    that a running `theodolite up` wrote in the current directory; else the defaults
    (amqp://guest:guest@127.0.0.1:5672/, mongodb://127.0.0.1:27017). A service out of reach is
    one `error:` line after THEODOLITE_CONNECT_TIMEOUT_S (10 s), exit 1.
    """
    from services.display import stderr_is_terminal
    from services.job_input import PluginDemand, check_job, print_issues, refuse
    from shared.labels import parse_labels
    from shared.messages import JobSubmission

    try:
        job_labels = parse_labels(labels)
    except ValueError as problem:
        raise click.BadParameter(str(problem), param_hint="--label") from None
    settings = _settings()
    prepared, issues = check_job(file, params, plugin_dirs, PluginDemand.DOCUMENT_ONLY, artifacts=artifacts)
    if prepared is None:
        refuse(file, issues, as_json=as_json)
    print_issues(file, issues)
    text = Path(file).read_text(encoding="utf-8")
    submission = JobSubmission(document=text, document_name=file, parameters=prepared.given, fail_fast=not keep_going,
                               artifacts=sorted(prepared.artifact_values), labels=job_labels,
                               **({} if seed is None else {"seed": seed}))
    show = stderr_is_terminal() if progress is None else progress
    tasks = {name: step.task for name, step in prepared.document.steps.items()}
    total = len(tasks) + len(prepared.document.artifact_outputs)
    sys.exit(asyncio.run(_submit(settings, submission, wait=wait, as_json=as_json, timeout_s=timeout_s,
                                 artifacts_dir=artifacts_dir, artifact_values=prepared.artifact_values,
                                 show_progress=show, step_tasks=tasks, total_steps=total)))


async def _submit(settings: Any, submission: Any, *, wait: bool, as_json: bool, timeout_s: float | None,
                  artifacts_dir: str | None = None, artifact_values: dict[str, Any] | None = None,
                  show_progress: bool = False, step_tasks: dict[str, str] | None = None, total_steps: int = 0) -> int:
    from pymongo.errors import PyMongoError

    from services.client import Client
    from services.follow import follow_job
    from shared.distributed_errors import DistributedError

    try:
        async with Client(settings) as client:
            if artifact_values:
                await client.store.save_artifact_inputs(submission.job_id, artifact_values)
            job_id = await client.submit(submission)
            if not wait:
                click.echo(json.dumps({"job_id": job_id}) if as_json else job_id)
                return EXIT_OK
            click.echo(f"job {job_id} submitted (Ctrl-C detaches; the job runs on)", err=True)
            return await follow_job(client, job_id, as_json=as_json, timeout_s=timeout_s, show_progress=show_progress,
                                    total_steps=total_steps, artifacts_dir=artifacts_dir, step_tasks=step_tasks)
    except DistributedError as error:
        click.echo(f"error: {error}", err=True)
        return EXIT_FAILED
    except PyMongoError as error:  # an outage outlasting the retries: one line, not a traceback
        from shared.outages import short

        click.echo(f"error: MongoDB: {short(error)}", err=True)
        return EXIT_FAILED


@click.command()
@click.option("--workers", "workers_text", default="cpu=2,gpu=1", show_default=True, help="Workers per device type.")
@click.option("--planners", type=click.IntRange(min=1), default=1, show_default=True,
              help="Planner processes (one acts, the others stand by).")
@plugins_option
@click.option("--data-dir", type=click.Path(file_okay=False), default=".theodolite/cluster", show_default=True,
              help="Mongo-wire server data and process logs.")
def up(workers_text: str, planners: int, plugin_dirs: tuple[str, ...], data_dir: str) -> None:
    """Start a local cluster (Mongo-wire server unless THEODOLITE_MONGO_URL is set, planners, workers); Ctrl-C stops it.

    Each service serves /metrics, /healthz and /readyz on a free port of its own; the URLs are
    printed (`planner metrics http://127.0.0.1:PORT/metrics`).

    A planner or worker that exits is restarted, after 1 s doubling to 30 s for one that keeps
    exiting (back to 1 s once it had run a minute); each exit and restart is one line on stderr.

    While it runs, .theodolite/cluster.json in the current directory holds the cluster's
    connection settings (URLs, database, namespace) and this process's pid: submit, planner and
    worker run in this directory use them unless THEODOLITE_* variables say otherwise. The file
    is removed when the cluster stops. `up` itself reads only the THEODOLITE_* variables.
    """
    from services.cluster import LocalCluster, Supervisor, parse_workers
    from shared.distributed_errors import DistributedError
    from shared.settings import CLUSTER_FILE, ClusterFile, shown_path

    try:
        workers = parse_workers(workers_text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--workers") from None
    settings = _settings(folder=False)
    record = Path.cwd() / CLUSTER_FILE
    with contextlib.suppress(ValueError):  # not a cluster file: replaced below
        previous = ClusterFile.read(record)
        if previous is not None and previous.running:
            click.echo(f"error: a cluster is already up in this directory (pid {previous.pid}, started {previous.started_at}, "
                       f"see {shown_path(record)}); stop it with Ctrl-C in its terminal or kill -INT {previous.pid}, "
                       "or start this one in another directory", err=True)
            sys.exit(EXIT_FAILED)
    root = Path(data_dir)
    cluster = LocalCluster(settings, workers, plugin_dirs=plugin_dirs, mongo_data_dir=root / "mongo", log_dir=root / "logs",
                           planners=planners, metrics=True)
    stop = {"now": False}

    def request_stop(*_: Any) -> None:
        stop["now"] = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    code = EXIT_OK
    try:
        cluster.start()
        cluster.wait_ready()
        ClusterFile.of(cluster.settings).write(record)
        info = cluster.describe()
        click.echo(f"cluster up: namespace {info['namespace']}, MongoDB {info['mongo_url']}, logs in {root / 'logs'}", err=True)
        click.echo(f"  wrote {shown_path(record)}: submit, planner and worker run in this directory connect to this cluster", err=True)
        click.echo(f"  from another directory: export THEODOLITE_MONGO_URL={info['mongo_url']} "
                   f"THEODOLITE_NAMESPACE={info['namespace']} THEODOLITE_DB={cluster.settings.db}", err=True)
        for name, pid in info["processes"].items():
            click.echo(f"  {name}: pid {pid}", err=True)
        for name, url in info["metrics"].items():
            click.echo(f"  {name} metrics {url}", err=True)
        supervisor = Supervisor(cluster)
        while not stop["now"]:
            for line in supervisor.poll():
                click.echo(line, err=True)
            time.sleep(0.2)
    except (DistributedError, RuntimeError, TimeoutError, OSError) as error:  # start-up failed: one line
        click.echo(f"error: {error}", err=True)
        code = EXIT_FAILED
    finally:
        ClusterFile.remove(record)  # first: nothing in this directory points at a stopping cluster
        click.echo("stopping the cluster ...", err=True)
        codes = cluster.stop()
        click.echo("stopped: " + ", ".join(f"{n} exit {c}" for n, c in codes.items()), err=True)
    sys.exit(code)


@click.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default=None, help="Write one KIND.schema.json per message here.")
def schema(out_dir: str | None) -> None:
    """Print (or write) the JSON Schemas of the messages other systems may publish or read."""
    from shared.messages import json_schemas

    schemas = json_schemas()
    if out_dir is None:
        click.echo(json.dumps(schemas, indent=2))
        return
    target = Path(out_dir)
    target.mkdir(parents=True, exist_ok=True)
    for kind, body in schemas.items():
        (target / f"{kind}.schema.json").write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    click.echo(f"wrote {len(schemas)} schemas to {target}", err=True)


COMMANDS = [planner, worker, submit, up, schema]
