"""From the command line to a checked job: the document, ``-p`` values, ``--artifact`` files.

``validate``, ``run`` and ``submit`` read their input here, so they agree on every verdict,
differing only in what they demand of the plugin path (:class:`PluginDemand`):

* ``validate`` judges the document alone, as Dioptra's validator does: a plugin module that is
  not on this machine's plugin path is a warning (``--strict`` makes every warning an error);
* ``run`` executes here, so such a module is an error (exit 2) before anything runs;
* ``submit`` hands the job to workers that may hold the module, so it stays a warning.

Problems are printed as ``FILE:LINE: path: message`` lines, or as one JSON object
(``{"status": "invalid", "problems": [...]}``) with ``--json``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, NoReturn

import click

from shared.document import catalog_for, check_file
from shared.document.issues import Issue, Severity, error, has_errors
from shared.document.model import JobDocument
from shared.document.parameters import bind_parameters, parse_assignment
from shared.document.types import TypeRegistry
from shared.plugin_catalog import PluginCatalog

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
PLUGIN_NOT_FOUND = "tasks.plugin-not-found"


class PluginDemand(Enum):
    """What a command needs of the local plugin path."""

    DOCUMENT_ONLY = "document-only"
    """Judge the document alone (validate, submit): missing modules are warnings."""
    STRICT = "strict"
    """Every warning is an error (validate --strict)."""
    RUN_HERE = "run-here"
    """The job runs in this process: a module not found here is an error."""


@dataclass
class PreparedJob:
    """A valid document with its bound parameters and artifact input values."""

    file: str
    document: JobDocument
    catalog: PluginCatalog
    given: dict[str, Any]
    """``-p`` values as given (what a submission carries)."""
    values: dict[str, Any]
    """Every parameter bound (defaults filled in, types checked)."""
    artifact_values: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_parameters(values: Sequence[str]) -> dict[str, Any]:
    given: dict[str, Any] = {}
    for text in values:
        try:
            name, value = parse_assignment(text)
        except ValueError as problem:
            raise click.BadParameter(str(problem), param_hint="-p") from None
        given[name] = value
    return given


def parse_artifact_files(assignments: Sequence[str]) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for text in assignments:
        name, sep, path = text.partition("=")
        if not sep or not name:
            raise click.BadParameter(f"expected NAME=PATH, got {text!r}", param_hint="--artifact")
        files[name] = Path(path)
    return files


def apply_demand(issues: list[Issue], demand: PluginDemand) -> list[Issue]:
    """Raise the warnings the command cannot accept to errors."""
    if demand is PluginDemand.DOCUMENT_ONLY:
        return issues
    raised: list[Issue] = []
    for issue in issues:
        if issue.severity is Severity.WARNING and (demand is PluginDemand.STRICT or issue.code == PLUGIN_NOT_FOUND):
            message = issue.message
            if issue.code == PLUGIN_NOT_FOUND and demand is PluginDemand.RUN_HERE:
                message = message.split(";", 1)[0] + "; `run` executes every step here: add its folder with --plugins DIR"
            issue = issue.model_copy(update={"severity": Severity.ERROR, "message": message})
        raised.append(issue)
    return raised


def check_job(file: str, params: Sequence[str], plugin_dirs: Sequence[str], demand: PluginDemand, *,
              artifacts: Sequence[str] = (), require_all: bool = True) -> tuple[PreparedJob | None, list[Issue]]:
    """Check the document, the parameters and (when given) the artifact files.

    Returns the prepared job (None when anything is an error) and every problem found.
    """
    catalog = catalog_for(file, plugin_dirs)
    result = check_file(file, catalog)
    issues = apply_demand(list(result.issues), demand)
    document = result.document
    if document is None or has_errors(issues):
        return None, issues
    given = parse_parameters(params)
    values, bound = bind_parameters(document, given, TypeRegistry(document.types), require_all=require_all)
    issues += apply_demand(result.locate(bound), demand)
    if has_errors(issues):
        return None, issues
    artifact_values: dict[str, dict[str, Any]] = {}
    if require_all:
        from shared.execution.artifact_files import artifact_input_values

        artifact_values, problems = artifact_input_values(document, parse_artifact_files(artifacts))
        issues += [error("artifact_inputs.file", ("artifact_inputs",), problem).model_copy(update={"line": 1})
                   for problem in problems]
        if problems:
            return None, issues
    return PreparedJob(file, document, catalog, given, values, artifact_values), issues


def print_issues(file: str, issues: Sequence[Issue]) -> None:
    for issue in issues:
        click.echo(issue.format(file), err=True)


def problem_dicts(file: str, issues: Sequence[Issue]) -> list[dict[str, Any]]:
    """Problems for scripts: ``{"file", "line", "path", "code", "severity", "message"}``."""
    return [
        {"file": file, "line": issue.line or 1, "path": issue.dotted_path, "code": issue.code,
         "severity": issue.severity.value, "message": issue.message}
        for issue in issues
    ]


def refuse(file: str, issues: Sequence[Issue], *, as_json: bool) -> NoReturn:
    """Report an invalid job and exit 2: problem lines on stderr, and with ``--json`` the
    ``{"status": "invalid", "problems": [...]}`` object on stdout."""
    print_issues(file, issues)
    if as_json:
        click.echo(json.dumps({"status": "invalid", "problems": problem_dicts(file, issues)}))
    sys.exit(EXIT_INVALID)
