"""Test-only tasks of the fault suite (tests/faults/test_fault_suite.py, passed with --plugins).

Every traced task appends lines to ``TRACE_DIR/fault-trace.log`` (one ``write`` of one short
line in append mode, so lines of concurrent processes never interleave)::

    start NAME ATTEMPT TOKEN PID PPID TIME
    end   NAME ATTEMPT TOKEN PID PPID TIME AFTER
    fault NAME KIND PID PPID TIME              (a crashing task, just before it crashes)
    beat  NAME PID TIME                        (a task that hangs, every 0.2 s while it runs)

NAME is ``JOB/STEP``; TOKEN is new for every execution and is also the step's ``token``
output, so the stored result names the execution that produced it; AFTER is the token the
step received from its upstream step (``-`` when none): a downstream step that saw another
result than the stored one shows an overwritten result. ATTEMPT is the step's attempt as
MongoDB holds it when the task starts (its step document; no document yet means attempt 1;
``?`` when MongoDB cannot be read within a second), PID the process running the task and
PPID its parent (the worker, once tasks run in child processes).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from plugins import task

TRACE_FILE = "fault-trace.log"
_mongo: dict[str, Any] = {}
_mongo_lock = threading.Lock()


def _line(trace_dir: str, text: str) -> None:
    with open(Path(trace_dir) / TRACE_FILE, "a", encoding="utf-8") as handle:
        handle.write(text + "\n")


def _attempt(job: str, step: str) -> str:
    """The step's attempt as MongoDB holds it (see the module docstring)."""
    url, db = os.environ.get("THEODOLITE_MONGO_URL"), os.environ.get("THEODOLITE_DB")
    if not url or not db or not job:
        return "?"
    try:
        from pymongo import MongoClient

        with _mongo_lock:
            key = f"{os.getpid()} {url}"
            client = _mongo.get(key)
            if client is None:
                client = _mongo[key] = MongoClient(url, serverSelectionTimeoutMS=1000, connectTimeoutMS=1000,
                                                   socketTimeoutMS=1000)
        doc = client[db]["steps"].find_one({"_id": f"{job}:{step}"}, {"attempt": 1})
    except Exception:  # noqa: BLE001 - an unreadable attempt is shown as "?"
        return "?"
    return str(int(doc.get("attempt") or 1)) if doc else "1"


def _ids() -> str:
    return f"{os.getpid()} {os.getppid()}"


@task(outputs=["value", "token"])
def fs_traced(seconds: float, trace: str, job: str, step: str, x: float = 0, after: Any = "-") -> tuple[float, str]:
    """Sleeps ``seconds``, traced (start, end); returns ``x + 1`` and a new token."""
    token = uuid.uuid4().hex[:12]
    name = f"{job}/{step}"
    attempt = _attempt(job, step)
    _line(trace, f"start {name} {attempt} {token} {_ids()} {time.time():.6f}")
    time.sleep(seconds)
    _line(trace, f"end {name} {attempt} {token} {_ids()} {time.time():.6f} {after or '-'}")
    return x + 1, token


@task(outputs={"value": "number"})
def fs_fail(message: str = "fails on purpose") -> float:
    raise RuntimeError(message)


def _fault(trace: str, job: str, step: str, kind: str, delay: float) -> None:
    time.sleep(delay)
    _line(trace, f"fault {job}/{step} {kind} {_ids()} {time.time():.6f}")


@task(outputs={"value": "number"})
def fs_segfault(trace: str, job: str, step: str, delay: float = 0.0) -> float:
    """Dies of SIGSEGV (the process running it) after ``delay`` seconds."""
    _fault(trace, job, step, "segfault", delay)
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(5)  # the signal is delivered before this returns
    return 0.0


@task(outputs={"value": "number"})
def fs_exit(trace: str, job: str, step: str, delay: float = 0.0, code: int = 1) -> float:
    """Calls ``os._exit(code)`` after ``delay`` seconds: no cleanup, no exception."""
    _fault(trace, job, step, "exit", delay)
    os._exit(code)


@task(outputs={"value": "number"}, timeout=1.5)
def fs_hang(trace: str, job: str, step: str, delay: float = 0.0) -> float:
    """Never returns (timeout 1.5 s from its start, the ``fault`` line): sleeps ``delay``,
    then writes a ``beat`` line every 0.2 s for as long as it runs."""
    _fault(trace, job, step, "hang", 0.0)
    time.sleep(delay)
    while True:
        _line(trace, f"beat {job}/{step} {os.getpid()} {time.time():.6f}")
        time.sleep(0.2)


HOG_LIMIT_MB = 128


@task(outputs={"value": "number"}, memory_mb=128, timeout=30)
def fs_hog(trace: str, job: str, step: str, delay: float = 0.0, megabytes: int = 768) -> float:
    """Allocates and touches ``megabytes`` MB (far above its 128 MB limit) in 16 MB pieces."""
    _fault(trace, job, step, "memory", delay)
    pieces = []
    for _ in range(max(1, megabytes // 16)):
        piece = bytearray(16 * 1024 * 1024)
        piece[::4096] = b"\x01" * len(piece[::4096])  # touch every page: resident, not just reserved
        pieces.append(piece)
    return float(sum(len(p) for p in pieces) // (1024 * 1024))


@task(outputs={"value": "number"})
def fs_kill_worker(trace: str, job: str, step: str, delay: float = 0.0) -> float:
    """SIGKILLs the worker service running it (its pid is in THEODOLITE_WORKER_ID,
    ``DEVICE-HOST-PID-HEX``), wherever the task itself runs: a message that kills workers."""
    _fault(trace, job, step, "kill-worker", delay)
    worker = os.environ.get("THEODOLITE_WORKER_ID", "")
    try:
        pid = int(worker.split("-")[-2])
    except (IndexError, ValueError):
        pid = os.getpid()
    os.kill(pid, signal.SIGKILL)
    time.sleep(5)
    return 0.0


class _Opaque:
    """A value the codec refuses to store (not an array, scalar, string or container)."""


@task(outputs={"value": "any"})
def fs_unstorable() -> Any:
    return {"fine": 1, "not storable": _Opaque()}
