"""The loop of a child process that runs tasks for a runner or a worker (one child per slot).

Started by :mod:`shared.execution.process_pool` with ``forkserver`` (or ``spawn``), never
``fork``: the parent may hold JAX, threads and connections. The child takes the parent's
environment as it was when the child started (``XLA_PYTHON_CLIENT_PREALLOCATE`` set by a gpu
worker included), imports each plugin module once, on first use, and then serves requests one
at a time: decode the arguments (codec trees, no pickle), call the task under its memory limit,
name and encode its outputs, reply. A task's exception crosses as strings (type name, message,
formatted traceback); ``SystemExit`` and every other ``BaseException`` fail only that request.

The child ignores SIGINT (Ctrl-C in a terminal reaches the whole process group: the parent
decides what happens to running steps) and exits when its parent does, even in the middle of
a task (a thread watches a pipe only the parent holds).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

from shared import codec
from shared.errors import MemoryLimitError
from shared.execution import wire
from shared.execution.capture import Capture, capturing
from shared.execution.child_reports import ChildCancel, ChildReports
from shared.execution.invoke import error_message, format_traceback, name_outputs, retryable, with_context
from shared.plugin_api import OutputSpec
from shared.plugin_registry import PluginRegistry
from shared.retry_policy import type_names
from shared.task_context import ContextInfo, TaskContext

try:
    import resource
except ImportError:  # not on Unix: memory limits are not enforced
    resource = None  # type: ignore[assignment]

MIB = 1024 * 1024
ORPHAN_EXIT_CODE = 70
"""The exit code of a child whose parent went away while it was running a task."""


def serve(conn: Connection, lifeline: Connection, config: dict[str, Any]) -> None:
    """The child's main function: set up, say ready, serve until told to exit or orphaned."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _exit_with_parent(lifeline)
    os.environ.clear()
    os.environ.update(config["env"])
    if config.get("logging"):
        options = config["logging"]
        logging.basicConfig(level=options["level"], format=options["format"], datefmt=options["datefmt"], stream=sys.stderr)
    with contextlib.suppress(AssertionError, AttributeError):
        # Started as a daemon (so the parent's exit terminates it); tasks may still start
        # processes of their own (joblib, multiprocessing): only the parent's flag matters.
        multiprocessing.current_process().daemon = False
    _capture_info_logs()
    registry = PluginRegistry(list(config["plugin_dirs"]))
    cancel = ChildCancel()
    cancel.install()
    send_lock = threading.Lock()
    wire.send(conn, {"ready": os.getpid()})
    while True:
        try:
            request, blobs = wire.receive(conn)
        except (EOFError, OSError):
            return
        if request.get("op") != "run":
            return
        cancel.flag.clear()
        reports = ChildReports(conn, send_lock, cancel)
        with capturing() as capture:
            with reports.flushing(capture):
                reply, reply_blobs = run_request(registry, request, blobs, reports)
            reply_blobs = _with_reports(reply, reply_blobs, reports, capture, request)
        try:
            with send_lock:
                wire.send(conn, reply, reply_blobs)
        except (BrokenPipeError, EOFError):
            return
        except Exception as error:  # noqa: BLE001 - a reply that cannot be encoded fails the request
            with send_lock:
                wire.send(conn, failure(error, stage="reply"))


def _capture_info_logs() -> None:
    """Let INFO records of tasks reach the capture (:mod:`shared.execution.capture`) while the
    stream handlers inherited from the worker keep printing only what they printed before."""
    root = logging.getLogger()
    if root.level > logging.INFO or root.level == logging.NOTSET:
        before = root.getEffectiveLevel()
        for handler in root.handlers:
            handler.setLevel(max(handler.level, before))
        root.setLevel(logging.INFO)


def _with_reports(reply: dict[str, Any], blobs: list[codec.Blob], reports: ChildReports, capture: Capture,
                  request: dict[str, Any]) -> list[codec.Blob]:
    """Add what the task printed and logged to its reply; its artifacts' blobs after the outputs'."""
    reply["logs"] = capture.text()
    reply["logs_dropped"] = capture.dropped_bytes
    reply["metrics_dropped"] = reports.dropped_metrics
    if not reply.get("ok") or not reports.artifacts:
        return blobs
    try:
        artifacts = reports.encoded_artifacts(int(request["threshold_bytes"]), bool(request.get("for_storage")))
    except BaseException as error:  # noqa: BLE001 - an artifact the codec cannot carry fails the step
        reply.clear()
        reply.update(failure(error, stage="encode"), logs=capture.text(), logs_dropped=capture.dropped_bytes)
        return []
    assert artifacts is not None
    reply["artifacts"] = artifacts.tree
    reply["artifact_blobs"] = len(artifacts.blobs)
    return [*blobs, *artifacts.blobs]


def run_request(registry: PluginRegistry, request: dict[str, Any], blobs: list[codec.Blob],
                reports: ChildReports | None = None) -> tuple[dict[str, Any], list[codec.Blob]]:
    """One task call: its reply header and the large values the reply's tree refers to."""
    step = str(request["step"])
    try:
        function = registry.load(str(request["task"])).function
    except BaseException as error:  # noqa: BLE001 - sys.exit at import too: the step fails, not the child
        return failure(error, stage="load", retry=False), []
    try:
        call = wire.decode(request["call"], blobs)
        args, kwargs = list(call["args"]), dict(call["kwargs"])
        spec = OutputSpec(names=tuple(request["names"]), unpack=bool(request["unpack"]))
        if request.get("context_arg"):
            context = TaskContext(ContextInfo.model_validate(request["context"]), reports)
            args, kwargs = with_context(function, str(request["context_arg"]), args, kwargs, context)
    except BaseException as error:  # noqa: BLE001 - a malformed request fails its step
        return failure(error, stage="decode", retry=False), []
    memory_mb = request.get("memory_mb")
    try:
        with memory_limit(memory_mb):
            outputs = name_outputs(step, spec, function(*args, **kwargs))
    except MemoryError as error:
        if not memory_mb:
            return failure(error), []
        reply = failure(error, replace=True)
        reply.update(type="MemoryLimitError", types=[cls.__name__ for cls in MemoryLimitError.__mro__ if cls is not object],
                     message=f"memory limit {memory_mb} MB: {reply['message']}".rstrip(": "))
        return reply, []
    except BaseException as error:  # noqa: BLE001 - SystemExit in a task must not end the child
        return failure(error), []
    try:
        encoded = wire.encode(outputs, threshold_bytes=int(request["threshold_bytes"]), for_storage=bool(request.get("for_storage")))
    except BaseException as error:  # noqa: BLE001 - e.g. a CodecError naming the output's path
        return failure(error, stage="encode"), []
    return {"ok": True, "tree": encoded.tree, "inline_bytes": encoded.inline_bytes}, encoded.blobs


def failure(error: BaseException, *, stage: str = "call", retry: bool | None = None, replace: bool = False) -> dict[str, Any]:
    """A failed request as strings (never the exception object)."""
    return {
        "ok": False, "type": type(error).__name__, "message": error_message(error),
        "traceback": format_traceback(error), "retryable": retryable(error) if retry is None else retry,
        "stage": stage, "replace": replace, "types": type_names(error),
    }


@contextlib.contextmanager
def memory_limit(memory_mb: int | None) -> Iterator[None]:
    """Let the task map at most ``memory_mb`` more than this process already maps
    (``RLIMIT_AS``, soft limit only, restored afterwards)."""
    if not memory_mb or resource is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = mapped_bytes() + int(memory_mb) * MIB
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def mapped_bytes() -> int:
    """This process's address space now (``/proc/self/statm``; 0 where there is none)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _exit_with_parent(lifeline: Connection) -> None:
    """End this process when the parent is gone (its end of ``lifeline`` closes), even while a
    task runs: a killed worker or ``run`` leaves no child behind."""

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            while True:
                lifeline.recv_bytes()
        os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="theodolite-lifeline", daemon=True).start()
