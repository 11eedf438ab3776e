"""The ``theodolite`` command line.

Contract (kept exact; automated acceptance depends on it):
``validate`` exits 0 or 1 (one ``FILE:LINE:`` line per problem on stderr); ``run`` exits 0
succeeded, 1 failed at run time, 2 document invalid; ``--json`` prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

import click

from services.cli_options import params_option, plugins_option, seed_option
from services.dashboard.cli import COMMANDS as DASHBOARD_COMMANDS
from services.distributed_cli import COMMANDS as DISTRIBUTED_COMMANDS
from services.job_actions_cli import COMMANDS as ACTION_COMMANDS
from services.job_input import (
    EXIT_FAILED,
    EXIT_INVALID,
    EXIT_OK,
    PluginDemand,
    check_job,
    print_issues,
    refuse,
)
from services.jobs_cli import COMMANDS as JOB_COMMANDS
from services.logs_cli import COMMANDS as LOG_COMMANDS
from services.monitor_cli import COMMANDS as MONITOR_COMMANDS
from shared.document import catalog_for, check_file
from shared.document.issues import has_errors
from shared.states import JobState


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="theodolite")
def main() -> None:
    """Run Dioptra task graphs, in one process or on a RabbitMQ/MongoDB cluster.

    Which cluster submit, planner and worker use, first match wins: the THEODOLITE_*
    environment variables (THEODOLITE_AMQP_URL, THEODOLITE_MONGO_URL, THEODOLITE_DB,
    THEODOLITE_NAMESPACE); the .theodolite/cluster.json that a running `theodolite up` wrote
    in the current directory; the defaults (amqp://guest:guest@127.0.0.1:5672/,
    mongodb://127.0.0.1:27017).
    """


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@params_option
@plugins_option
@click.option("--strict", is_flag=True, help="Treat every warning as an error (exit 1), e.g. a plugin module not on this plugin path.")
def validate(file: str, params: tuple[str, ...], plugin_dirs: tuple[str, ...], strict: bool) -> None:
    """Check FILE without running anything; every problem as FILE:LINE: path: message.

    FILE is judged on its own, as Dioptra's validator judges it: a plugin module that is not
    on this machine's plugin path is a warning (workers elsewhere may hold it), an error with
    --strict. Exit 0 valid, 1 invalid.
    """
    demand = PluginDemand.STRICT if strict else PluginDemand.DOCUMENT_ONLY
    _, issues = check_job(file, params, plugin_dirs, demand, require_all=False)
    print_issues(file, issues)
    sys.exit(EXIT_FAILED if has_errors(issues) else EXIT_OK)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--local", is_flag=True, default=True, help="Run in this process (the default).")
@params_option
@plugins_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the result (or the problems) on stdout.")
@click.option("--concurrency", type=click.IntRange(min=1), default=None, help="Steps run at once (default: max(4, CPUs)).")
@click.option("--keep-going", is_flag=True, help="After a failure, keep running branches that do not depend on it.")
@click.option("--artifact", "artifacts", multiple=True, metavar="NAME=PATH", help="File for an artifact input (.npy, .npz, .json, .yaml, or raw bytes).")
@click.option("--artifacts-dir", type=click.Path(file_okay=False), default=None, help="Where artifact outputs are written (default .theodolite/runs/TIME/).")
@click.option("--progress/--no-progress", default=None, help="Live progress on stderr (default: when stderr is a terminal).")
@seed_option
def run(file: str, local: bool, params: tuple[str, ...], plugin_dirs: tuple[str, ...], as_json: bool,
        concurrency: int | None, keep_going: bool, artifacts: tuple[str, ...], artifacts_dir: str | None,
        progress: bool | None, seed: int | None) -> None:
    """Run FILE's whole graph in this process, independent steps concurrently.

    Exit 0 succeeded, 1 failed or cancelled at run time, 2 invalid (every plugin module must be found
    here). Ctrl-C cancels the job (running steps get 10 s to stop by themselves); a second Ctrl-C
    stops them at once.
    """
    from services.display import run_with_progress, stderr_is_terminal
    from services.interrupts import cancel_on_interrupt
    from services.result_table import print_result
    from shared.execution.artifact_files import write_artifact_outputs
    from shared.execution.local import DEFAULT_CONCURRENCY, DEFAULT_GRACE_S, LocalExecutor
    from shared.execution.options import ExecutionOptions
    from shared.execution.result import StepError
    from shared.plugin_registry import PluginRegistry

    try:
        ExecutionOptions.from_environ()  # read again by the executor: a bad value is one line here, not a traceback
    except ValueError as problem:
        raise click.UsageError(f"bad configuration: {problem}") from None
    prepared, issues = check_job(file, params, plugin_dirs, PluginDemand.RUN_HERE, artifacts=artifacts)
    if prepared is None:
        refuse(file, issues, as_json=as_json)
    print_issues(file, issues)
    document, catalog = prepared.document, prepared.catalog
    with PluginRegistry([*catalog.search_dirs, *catalog.extra_dirs]) as registry:
        executor = LocalExecutor(
            document, prepared.values, registry, concurrency=concurrency or DEFAULT_CONCURRENCY,
            fail_fast=not keep_going, artifact_values=prepared.artifact_values, seed=seed,
        )
        show = stderr_is_terminal() if progress is None else progress
        with cancel_on_interrupt(executor.cancel, grace_s=DEFAULT_GRACE_S, say=lambda text: click.echo(text, err=True)):
            outcome = asyncio.run(run_with_progress(executor, show=show))
        if outcome.status == JobState.SUCCEEDED and document.artifact_outputs:
            target = Path(artifacts_dir) if artifacts_dir else Path(".theodolite", "runs", time.strftime("%Y%m%d-%H%M%S"))
            try:
                outcome.artifacts = write_artifact_outputs(document, prepared.values, executor.job.outputs, registry, target)
            except Exception as error:  # noqa: BLE001 - reported as the run's failure
                outcome.status = JobState.FAILED
                outcome.error = StepError(step="artifact_outputs", type=type(error).__name__, message=str(error))
    if as_json:
        click.echo(json.dumps(outcome.to_json_dict(), allow_nan=False, default=str))
    else:
        print_result(outcome)
        for name, path in (outcome.artifacts or {}).items():
            click.echo(f"artifact {name}: {path}")
    sys.exit(EXIT_OK if outcome.status == JobState.SUCCEEDED else EXIT_FAILED)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--format", "fmt", type=click.Choice(["mermaid", "dot"]), default="mermaid", show_default=True)
@plugins_option
def graph(file: str, fmt: str, plugin_dirs: tuple[str, ...]) -> None:
    """Print FILE's step DAG as Mermaid or Graphviz DOT."""
    from shared.document.render import to_dot, to_mermaid

    result = check_file(file, catalog_for(file, plugin_dirs))
    print_issues(file, result.issues)
    if result.document is None:
        sys.exit(EXIT_INVALID)
    click.echo(to_mermaid(result.document) if fmt == "mermaid" else to_dot(result.document), nl=False)


@main.command()
@plugins_option
def tasks(plugin_dirs: tuple[str, ...]) -> None:
    """List the registered plugin tasks documents can call by short name."""
    catalog = catalog_for(None, plugin_dirs)
    for task in sorted(catalog.all_tasks(), key=lambda t: t.spec.name):
        outputs = ", ".join(task.spec.outputs.names) or "-"
        click.echo(f"{task.spec.name:28} {task.spec.device:5} outputs: {outputs:24} {task.spec.coordinate}")
    for problem in catalog.scan_problems():
        click.echo(f"warning: {problem.message}", err=True)


# distributed mode: planner, worker, submit, up, schema (services/distributed_cli.py); jobs, status (services/jobs_cli.py);
# monitor (services/monitor_cli.py); dashboard (services/dashboard/cli.py)
for _command in [*DISTRIBUTED_COMMANDS, *JOB_COMMANDS, *LOG_COMMANDS, *ACTION_COMMANDS, *MONITOR_COMMANDS, *DASHBOARD_COMMANDS]:
    main.add_command(_command)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
