"""Validating submissions for the planner: off the event loop, several at once, with a budget.

The planner validates every submitted document again with the validator of ``theodolite
validate`` (other systems publish jobs without our CLI). One slow document must not stall
the others, and none may run past ``validation_timeout_s``:

* a document up to ``INLINE_BYTES`` (nearly every job) is validated on a small thread pool:
  it takes milliseconds, and the validator bounds its own work (size, depth, alias expansion:
  ``shared/document/compose.py``);
* a larger one is validated in a child process of its own (``forkserver``: never ``fork``
  from a process with threads), which is killed when the budget runs out, so a huge document
  neither holds the GIL the other validations and the event loop need nor outlives its budget.
  The child returns the validated document through a pipe as a pickle: produced by our own
  code in our own child, never bytes from the broker or the database.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
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
INLINE_BYTES = 256 * 1024
"""Documents larger than this are validated in a killable child process."""
_PRELOAD = ["services.planner_intake"]


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
    """Owns the validation threads (``close`` releases them; children die with their budget)."""

    def __init__(self, plugin_dirs: Sequence[Path], timeout_s: float, threads: int = VALIDATION_THREADS,
                 inline_bytes: int = INLINE_BYTES) -> None:
        self.timeout_s = timeout_s
        self.inline_bytes = inline_bytes
        self.plugin_dirs = [Path(d) for d in plugin_dirs]
        self._catalog = catalog_for(None, self.plugin_dirs)
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="theodolite-validate")
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(_PRELOAD)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def check(self, submission: JobSubmission) -> Accepted | Rejected:
        name = submission.document_name
        try:
            if len(submission.document) <= self.inline_bytes:
                loop = asyncio.get_running_loop()
                return await asyncio.wait_for(loop.run_in_executor(self._pool, checked, submission, self._catalog), self.timeout_s)
            return await self._check_in_child(submission)
        except TimeoutError:
            log.warning("job %s: validating %s took longer than %g s; rejected", submission.job_id, name, self.timeout_s)
            return Rejected([(f"{name}:1: validation took longer than its budget of {self.timeout_s:g} s "
                              "(THEODOLITE_VALIDATION_TIMEOUT_S); the job was not accepted")])

    async def _check_in_child(self, submission: JobSubmission) -> Accepted | Rejected:
        """Validate in a child process, killed if it overruns the budget."""
        receiver, sender = self._context.Pipe(duplex=False)
        child = self._context.Process(target=_child_main, args=(sender, submission, [str(d) for d in self.plugin_dirs]),
                                      name=f"theodolite-validate-{submission.job_id}", daemon=True)
        started = time.monotonic()
        await asyncio.to_thread(child.start)  # hands the document to the forkserver: not on the loop
        sender.close()
        try:
            result = await asyncio.to_thread(_receive, receiver, self.timeout_s)
        finally:
            receiver.close()
            if child.is_alive():
                child.kill()
            await asyncio.to_thread(child.join, 5.0)
        if result is None:
            if time.monotonic() - started >= self.timeout_s:
                raise TimeoutError
            return Rejected([(f"{submission.document_name}:1: the validator's process ended without an answer "
                             f"(exit code {child.exitcode}); the job was not accepted")])
        return result


def checked(submission: JobSubmission, catalog: Any) -> Accepted | Rejected:
    """Validate one submission; never raises (a validator failure rejects the submission)."""
    name = submission.document_name
    try:
        return _validate(submission, catalog)
    except Exception as error:
        log.exception("job %s: the validator failed on %s", submission.job_id, name)
        return Rejected([(f"{name}:1: the validator failed on this document ({type(error).__name__}: {error}); "
                          "please report it with the document")])


def _validate(submission: JobSubmission, catalog: Any) -> Accepted | Rejected:
    name = submission.document_name
    result = check_text(submission.document, name, catalog)
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


def _child_main(sender: Connection, submission: JobSubmission, plugin_dirs: list[str]) -> None:
    """In the validation child: validate, send the verdict, exit."""
    try:
        sender.send(checked(submission, catalog_for(None, [Path(d) for d in plugin_dirs])))
    finally:
        sender.close()


def _receive(receiver: Connection, timeout_s: float) -> Accepted | Rejected | None:
    """In a helper thread: the child's verdict, or None if none came within the budget."""
    try:
        if receiver.poll(timeout_s):
            verdict: Accepted | Rejected = receiver.recv()
            return verdict
    except (EOFError, OSError):
        return None
    return None
