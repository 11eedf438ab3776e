"""Test-only tasks for the distributed tests (passed with --plugins)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from plugins import TaskContext, task


@task(outputs={"value": "number"})
def plus(x: float, k: float = 1) -> float:
    return x + k


@task(outputs={"total": "number"})
def total(values: list) -> float:
    return float(sum(values))


@task(outputs={"label": "any"}, device="gpu")
def device_label(index: int = 0) -> dict[str, Any]:
    """Which kind of worker ran this step (set by the worker process)."""
    return {"device": os.environ.get("THEODOLITE_WORKER_DEVICE", "local"), "index": index}


@task(outputs={"label": "any"}, device="tpu")
def tpu_label() -> str:
    return os.environ.get("THEODOLITE_WORKER_DEVICE", "local")


@task(outputs={"array": "any"})
def make_array(n: int, dtype: str = "float32") -> np.ndarray:
    return (np.arange(n * n) % 251).astype(dtype).reshape(n, n)


@task(outputs={"tree": "any"}, device="gpu")
def make_pytree(n: int) -> dict[str, Any]:
    return {
        "params": [(np.full((n, 3), 0.5, np.float32), np.arange(3, dtype=np.int16)), (np.eye(n), np.zeros(0))],
        "meta": {"n": n, "tags": ("a", "b"), "scale": np.float64(2.5), "big": np.ones(5000, np.float64)},
        "raw": b"\x00\x01bytes",
    }


@task(outputs=["array_sum", "leaf_kinds"])
def describe_tree(tree: Any, array: Any) -> tuple[float, list[str]]:
    kinds: list[str] = []
    total = float(np.asarray(array, dtype=np.float64).sum())

    def walk(node: Any) -> None:
        nonlocal total
        if isinstance(node, dict):
            for key in sorted(node):
                walk(node[key])
        elif isinstance(node, (list, tuple)):
            kinds.append(type(node).__name__)
            for item in node:
                walk(item)
        elif isinstance(node, np.ndarray):
            kinds.append(f"ndarray:{node.dtype}:{node.shape}")
            total += float(node.astype(np.float64).sum())
        else:
            kinds.append(type(node).__name__)

    walk(tree)
    return total, kinds


@task(outputs={"value": "number"})
def logged_sleep(seconds: float, log_dir: str, name: str, x: float = 0) -> float:
    """Sleeps, and appends ``name`` to a file per execution (to count re-runs)."""
    time.sleep(seconds)
    with open(Path(log_dir) / "executions.log", "a", encoding="utf-8") as handle:
        handle.write(f"{name}\n")
    return x + 1


@task(outputs={"value": "number"})
def crash_worker(x: float = 0) -> float:
    """Kills the worker process running it (a poison step). Tasks run in a child process of
    the worker (process isolation), where ``os._exit`` would only fail the step: the worker's
    pid is read from ``THEODOLITE_WORKER_ID`` (``DEVICE-HOST-PID-HEX``) and SIGKILLed."""
    worker = os.environ.get("THEODOLITE_WORKER_ID", "")
    pid = int(worker.split("-")[-2]) if worker.count("-") >= 3 else os.getpid()
    os.kill(pid, signal.SIGKILL)
    os._exit(17)


@task(outputs={"value": "number"}, retries=2)
def flaky(log_dir: str, failures: int = 2) -> float:
    """Fails ``failures`` times (counted in a file), then succeeds: exercises ``retries``."""
    counter = Path(log_dir) / "flaky.count"
    seen = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(seen + 1))
    if seen < failures:
        raise RuntimeError(f"flaky failure {seen + 1}")
    return float(seen)


@task(outputs={"value": "number"}, timeout=0.5)
def too_slow(seconds: float = 3) -> float:
    time.sleep(seconds)
    return seconds


@task(outputs={"value": "number"}, retries=2)
def exits(code: int = 3) -> float:
    """Calls sys.exit in the worker's thread: the step fails, the worker must keep serving."""
    raise SystemExit(code)


@task(outputs={"value": "number"}, retries=2, backoff_s=0.4, max_backoff_s=0.6)
def flaky_timed(log_dir: str, failures: int = 2) -> float:
    """Fails ``failures`` times, appending each call's ``time.time()`` to a file, then succeeds."""
    calls = Path(log_dir) / "flaky_timed.calls"
    with calls.open("a", encoding="utf-8") as file:
        file.write(f"{time.time()}\n")
    seen = len(calls.read_text().split())
    if seen <= failures:
        raise ConnectionError(f"flaky failure {seen}")
    return float(seen)


@task(outputs={"value": "number"}, timeout=0.5, retries=1, backoff_s=0.1)
def too_slow_retried(seconds: float = 3) -> float:
    """Always over its timeout: the timeout is retried once, then the step fails."""
    time.sleep(seconds)
    return seconds


@task(outputs=["seed", "worker", "attempt"])
def chatty(lines: int, ctx: TaskContext) -> tuple[int, str, int]:
    """Prints ``lines`` lines, logs a loss per line and an artifact; reports its context."""
    for index in range(lines):
        print(f"line {index + 1} of {lines}")
        ctx.log_metric("loss", 1.0 / 2**index, step=index)
    ctx.log_artifact("curve", np.linspace(0, 1, 5))
    return ctx.seed, ctx.worker_id, ctx.attempt


@task(outputs="never")
def chatty_then_fail(lines: int) -> None:
    for index in range(lines):
        print(f"about to fail ({index})")
    raise RuntimeError("chatty failure")


@task(outputs="ticks")
def print_slowly(seconds: int) -> int:
    for tick in range(int(seconds)):
        print(f"tick {tick}", flush=True)
        time.sleep(1)
    return int(seconds)


@task(outputs="waited")
def wait_for_cancel(seconds: float, ctx: TaskContext) -> float:
    """Polls ``cancelled()`` for up to ``seconds``; returns how long it waited (-1: never cancelled)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if ctx.cancelled():
            return time.monotonic() - started
        time.sleep(0.05)
    return -1.0


@task(outputs="slept")
def ignore_cancel(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@task(outputs={"value": "number"})
def fail_unless(ok: bool, x: float = 0) -> float:
    """Fails unless ``ok``: a job that a resume with ``-p ok=true`` completes."""
    if not ok:
        raise RuntimeError("not ok yet")
    return x + 100
