"""`theodolite up` then `theodolite submit` in the same folder, as the README shows (issue 7).

`up` records its cluster's connection settings in .theodolite/cluster.json; `submit`, run
with no THEODOLITE_* connection variables, finds them there. An unreachable service is one
`error:` line naming the URL and what to do.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cluster import free_port
from shared.settings import CLUSTER_FILE, ENV_PREFIX, Settings
from tests.integration import documents
from tests.support.distributed import TEST_PLUGINS, cleanup

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]

CLI = [sys.executable, "-m", "services.cli"]


def bare_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any THEODOLITE_* variable, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(ENV_PREFIX)}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


class Up:
    """A `theodolite up` subprocess whose stderr is read line by line in a thread."""

    def __init__(self, args: list[str], cwd: Path, env: dict[str, str]) -> None:
        self.process = subprocess.Popen([*CLI, "up", *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                                        stderr=subprocess.PIPE, text=True)
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, prefix: str, timeout_s: float) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.process.poll() is not None and self.lines.empty():
                    break
                continue
            self.seen.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f"no {prefix!r} line from `theodolite up`; its stderr:\n" + "\n".join(self.seen))

    def interrupt(self, timeout_s: float = 90.0) -> int:
        """SIGINT to the `up` process (by its pid), as Ctrl-C would; its exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:  # stuck: kill it and the services it listed by pid
            self.process.kill()
            code = self.process.wait()
            for line in self.seen:
                name, _, pid = line.strip().partition(": pid ")
                if pid.isdigit() and (name == "planner" or name.startswith("worker-")):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)
        self.reader.join(10)
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code


@pytest.fixture
def up_settings(amqp_url: str, mongo_url: str) -> Iterator[Settings]:
    """The namespace and database of one `up` cluster (its queues and exchanges removed afterwards)."""
    tag = uuid.uuid4().hex[:10]
    value = Settings(amqp_url=amqp_url, mongo_url=mongo_url, namespace=f"tup-{tag}", db=f"tup_{tag}")
    yield value
    cleanup(value)  # RabbitMQ side; the database lived in up's own Mongo-wire server


@pytest.mark.slow
def test_submit_finds_the_cluster_that_up_started_in_this_folder(up_settings: Settings, tmp_path: Path) -> None:
    job = tmp_path / "diamond.yaml"
    job.write_text(documents.DIAMOND)
    # `up` gets the broker, namespace and database as a user would export them; no Mongo URL,
    # so it starts its own Mongo-wire server on a free port.
    up_env = bare_environment(THEODOLITE_AMQP_URL=up_settings.amqp_url, THEODOLITE_NAMESPACE=up_settings.namespace,
                              THEODOLITE_DB=up_settings.db, THEODOLITE_TICK_S="0.3")
    up = Up(["--workers", "cpu=1", "--plugins", str(TEST_PLUGINS)], tmp_path, up_env)
    try:
        up.wait_for("cluster up", timeout_s=120)
        assert str(CLUSTER_FILE) in up.wait_for("  wrote", timeout_s=5)
        recorded = json.loads((tmp_path / CLUSTER_FILE).read_text())
        assert recorded["pid"] == up.process.pid
        assert recorded["namespace"] == up_settings.namespace and recorded["db"] == up_settings.db

        done = subprocess.run([*CLI, "submit", str(job), "--wait", "--json", "--plugins", str(TEST_PLUGINS)],
                              cwd=tmp_path, env=bare_environment(), capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        assert result["status"] == "succeeded"
        assert result["steps"]["bottom"]["outputs"] == {"total": 118.0}
    finally:
        code = up.interrupt()
    assert code == 0, "\n".join(up.seen)
    assert not (tmp_path / CLUSTER_FILE).exists()


def test_unreachable_mongo_is_one_line_naming_the_url_and_what_to_do(tmp_path: Path) -> None:
    job = tmp_path / "diamond.yaml"
    job.write_text(documents.DIAMOND)
    url = f"mongodb://127.0.0.1:{free_port()}"
    started = time.monotonic()
    done = subprocess.run([*CLI, "submit", str(job), "--plugins", str(TEST_PLUGINS)], cwd=tmp_path,
                          env=bare_environment(THEODOLITE_MONGO_URL=url, THEODOLITE_CONNECT_TIMEOUT_S="1"),
                          capture_output=True, text=True, timeout=60, check=False)
    elapsed = time.monotonic() - started
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert url in errors[0] and "THEODOLITE_MONGO_URL" in errors[0] and "theodolite up" in errors[0]
    assert "Traceback" not in done.stderr and "Topology" not in done.stderr
    assert done.stdout == ""
    assert elapsed < 30


def test_unreachable_rabbitmq_is_one_line_with_the_password_masked(mongo_url: str, tmp_path: Path) -> None:
    job = tmp_path / "diamond.yaml"
    job.write_text(documents.DIAMOND)
    port = free_port()
    done = subprocess.run([*CLI, "submit", str(job), "--plugins", str(TEST_PLUGINS)], cwd=tmp_path,
                          env=bare_environment(THEODOLITE_MONGO_URL=mongo_url, THEODOLITE_CONNECT_TIMEOUT_S="1",
                                               THEODOLITE_AMQP_URL=f"amqp://guest:sesame@127.0.0.1:{port}/"),
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert f"amqp://guest:***@127.0.0.1:{port}/" in errors[0] and "THEODOLITE_AMQP_URL" in errors[0]
    assert "sesame" not in done.stderr and "Traceback" not in done.stderr
