"""A child's exit status read from several threads at once.

Multiprocessing polls every child it knows whenever any thread starts a process; a worker
thread reaping a crashed child at the same moment used to see ``exit code 255`` instead of the
child's own code (seen in CI as ``crashed: exit code 255`` for a task calling ``os._exit(1)``).
"""
from __future__ import annotations

import threading
import time

import pytest

from shared.execution.process_pool import process_class, start_context

ROUNDS = 25
THREADS = 8


def test_every_thread_reading_a_childs_exit_status_sees_its_own_code() -> None:
    context = start_context()
    if context.get_start_method() != "forkserver":
        pytest.skip("the race is in forkserver's status pipe")
    wrong: list[list[int | None]] = []
    for _ in range(ROUNDS):
        process = process_class(context)(target=time.sleep, args=(0.05,), daemon=True)
        process.start()
        barrier = threading.Barrier(THREADS)
        codes: list[int | None] = []

        def reap(process: object = process, barrier: threading.Barrier = barrier, codes: list[int | None] = codes) -> None:
            barrier.wait()
            codes.append(process._popen.wait(5))  # type: ignore[attr-defined]

        threads = [threading.Thread(target=reap) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if codes != [0] * THREADS or process.exitcode != 0:
            wrong.append([*codes, process.exitcode])
    assert not wrong, f"exit statuses misread (0 expected): {wrong}"
