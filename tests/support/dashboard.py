"""``theodolite dashboard`` started as a user starts it: a separate process with a cluster's
environment, its address read from the line it prints once it listens."""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from tests.support.distributed import ROOT

LISTENING = re.compile(r"theodolite dashboard: (http://\S+?)/?\s*$", re.MULTILINE)


@dataclass(frozen=True)
class Dashboard:
    url: str
    """Its address without the trailing slash, e.g. ``http://127.0.0.1:40123``."""
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])


@contextmanager
def running_dashboard(env: Mapping[str, str], *args: str, start_s: float = 60.0) -> Iterator[Dashboard]:
    """The dashboard on a free port (``--port 0``) until the block ends; it must exit 0 on SIGINT."""
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "dashboard", "--port", "0", *args],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=dict(env), cwd=ROOT)
    try:
        url = _listening_url(process, start_s)
        # What it prints later is read on, so a chatty dashboard never blocks on a full pipe.
        threading.Thread(target=_drain, args=(process,), daemon=True, name="dashboard-stderr").start()
        yield Dashboard(url, process)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if process.stderr is not None:
            process.stderr.close()


def _listening_url(process: subprocess.Popen[bytes], start_s: float) -> str:
    assert process.stderr is not None
    deadline, said = time.monotonic() + start_s, b""
    while (found := LISTENING.search(said.decode(errors="replace"))) is None:
        ready, _, _ = select.select([process.stderr], [], [], max(0.0, deadline - time.monotonic()))
        data = os.read(process.stderr.fileno(), 65536) if ready else b""
        if not data:
            raise AssertionError(f"the dashboard did not say where it listens within {start_s:g} s "
                                 f"(exit {process.poll()}): {said.decode(errors='replace')!r}")
        said += data
    return found.group(1).rstrip("/")


def _drain(process: subprocess.Popen[bytes]) -> None:
    assert process.stderr is not None
    while os.read(process.stderr.fileno(), 65536):
        pass
