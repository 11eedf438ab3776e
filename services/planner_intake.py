"""Validating submissions for the planner: off the event loop, several at once, with a budget.

The planner validates every submitted document again with the validator of ``theodolite
validate`` (other systems publish jobs without our CLI). Validation runs on a small thread
pool, so one slow document neither blocks the event loop nor holds up other submissions;
past ``validation_timeout_s`` the submission is rejected. The validator bounds its own work
(document size, depth and alias expansion: see ``shared/document/compose.py``), so a
thread that overruns the budget still ends; the killable process pool of task execution
is where such work would move if that ever stops being true.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.document import catalog_for, check_text
from shared.document.artifact_steps import with_artifact_steps
from shared.document.issues import has_errors
from shared.document.model import JobDocument
from shared.document.parameters import bind_parameters
from shared.document.types import TypeRegistry
from shared.messages import JobSubmission
from shared.planner.book import JobPlan

log = logging.getLogger("theodolite.planner.intake")
VALIDATION_THREADS = 4


@dataclass(frozen=True)
class Accepted:
    document: JobDocument
    """With its artifact steps added: what the job runs."""
    values: dict[str, Any]
    """The parameters, bound and typed."""


@dataclass(frozen=True)
class Rejected:
    problems: list[str]
    """``FILE:LINE: path: message`` lines, as ``theodolite validate`` prints them."""


def plan_of(document: JobDocument, *, fail_fast: bool) -> JobPlan:
    """What the job book needs of a document: its DAG and each step's device."""
    return JobPlan(
        dependencies={name: list(step.dependencies) for name, step in document.steps.items()},
        devices={name: document.tasks[step.task].device for name, step in document.steps.items()},
        fail_fast=fail_fast,
    )


class Intake:
    """Owns the validation threads (``close`` releases them)."""

    def __init__(self, plugin_dirs: Sequence[Path], timeout_s: float, threads: int = VALIDATION_THREADS) -> None:
        self.timeout_s = timeout_s
        self._catalog = catalog_for(None, list(plugin_dirs))
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="theodolite-validate")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, submission: JobSubmission) -> Accepted | Rejected:
        name = submission.document_name
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(loop.run_in_executor(self._pool, self._check, submission), self.timeout_s)
        except TimeoutError:
            log.warning("job %s: validating %s took longer than %g s; rejected", submission.job_id, name, self.timeout_s)
            return Rejected([(f"{name}:1: validation took longer than its budget of {self.timeout_s:g} s "
                             "(THEODOLITE_VALIDATION_TIMEOUT_S); the job was not accepted")])

    def _check(self, submission: JobSubmission) -> Accepted | Rejected:
        """In a pool thread; never raises (a validator failure rejects the submission)."""
        name = submission.document_name
        try:
            return self._validate(submission)
        except Exception as error:
            log.exception("job %s: the validator failed on %s", submission.job_id, name)
            return Rejected([(f"{name}:1: the validator failed on this document ({type(error).__name__}: {error}); "
                             "please report it with the document")])

    def _validate(self, submission: JobSubmission) -> Accepted | Rejected:
        name = submission.document_name
        result = check_text(submission.document, name, self._catalog)
        problems = [issue.format(name) for issue in result.errors]
        document = result.document
        values: dict[str, Any] = {}
        if document is not None:
            values, issues = bind_parameters(document, submission.parameters, TypeRegistry(document.types))
            problems += [i.format(name) for i in issues if has_errors([i])]
            for artifact in document.artifact_inputs:
                if artifact not in submission.artifacts:
                    problems.append(f"{name}:1: artifact_inputs.{artifact}: artifact input {artifact!r} was not provided "
                                    "(submit --artifact NAME=PATH stores it before submitting)")
        if document is None or problems:
            return Rejected(problems or [f"{name}:1: the document could not be read"])
        return Accepted(with_artifact_steps(document), values)
