"""Test-only tasks for tests/faults/test_job_book_faults.py (passed with --plugins)."""

from __future__ import annotations

import time
from pathlib import Path

from plugins import task

TRACE_FILE = "trace.log"


def _trace(log_dir: str, line: str) -> None:
    with open(Path(log_dir) / TRACE_FILE, "a", encoding="utf-8") as handle:
        handle.write(line + "\n")


@task(outputs={"value": "number"})
def traced_sleep(seconds: float, log_dir: str, name: str, x: float = 0) -> float:
    """Appends ``start NAME TIME`` to ``LOG_DIR/trace.log``, sleeps, appends ``end NAME TIME``
    (TIME: ``time.time()``): every execution shows as soon as it starts, so a duplicate run is
    seen before it finishes, and the end says when the task really returned."""
    _trace(log_dir, f"start {name} {time.time():.6f}")
    time.sleep(seconds)
    _trace(log_dir, f"end {name} {time.time():.6f}")
    return x + 1
