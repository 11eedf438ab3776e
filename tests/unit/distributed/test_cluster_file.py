"""Where CLI commands find their cluster: THEODOLITE_* variables > the live cluster file of
the current directory (written by `theodolite up`) > the defaults; and one-line connection errors."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from services.cli import main
from services.cluster import free_port
from shared.distributed_errors import BrokerUnreachable, StoreUnreachable, connection_reason
from shared.settings import (
    CLUSTER_FILE,
    CLUSTER_SETTINGS,
    ENV_PREFIX,
    CliSettings,
    ClusterFile,
    Settings,
    up_is_running,
)
from shared.store import Store
from shared.transport import Broker

DEFAULTS = Settings.model_fields
FILE_MONGO = "mongodb://127.0.0.1:40001"


@pytest.fixture(autouse=True)
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No THEODOLITE_* variables; the current directory is an empty temporary one."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def fake_up() -> Iterator[int]:
    """The pid of a live process whose arguments include ``up``, as `theodolite up`'s do."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "up"])
    deadline = time.monotonic() + 10
    while b"up" not in Path(f"/proc/{process.pid}/cmdline").read_bytes().split(b"\0") and time.monotonic() < deadline:
        time.sleep(0.01)  # until exec: a fresh child shows its parent's arguments
    try:
        yield process.pid
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass", "up"])
    process.wait()
    return process.pid


def write_cluster_file(folder: Path, pid: int) -> ClusterFile:
    record = ClusterFile.of(Settings(mongo_url=FILE_MONGO, amqp_url="amqp://u:p@rabbit:5672/", db="filedb",
                                     namespace="filens"), pid=pid)
    record.write(folder / CLUSTER_FILE)
    return record


def test_without_variables_or_file_the_defaults(tmp_path: Path) -> None:
    settings = CliSettings()
    assert settings.mongo_url == DEFAULTS["mongo_url"].default
    assert settings.amqp_url == DEFAULTS["amqp_url"].default


def test_the_live_cluster_file_beats_the_defaults(tmp_path: Path, fake_up: int) -> None:
    record = write_cluster_file(tmp_path, fake_up)
    settings = CliSettings()
    assert {name: getattr(settings, name) for name in CLUSTER_SETTINGS} == record.connection()
    assert settings.connect_timeout_s == DEFAULTS["connect_timeout_s"].default  # only connection settings come from it


def test_variables_beat_the_cluster_file_and_keywords_beat_both(tmp_path: Path, fake_up: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    write_cluster_file(tmp_path, fake_up)
    monkeypatch.setenv("THEODOLITE_MONGO_URL", "mongodb://from-env:27017")
    settings = CliSettings()
    assert settings.mongo_url == "mongodb://from-env:27017"
    assert settings.namespace == "filens" and settings.db == "filedb"  # the rest still from the file
    assert CliSettings(mongo_url="mongodb://keyword:1").mongo_url == "mongodb://keyword:1"


def test_plain_settings_never_read_a_cluster_file(tmp_path: Path, fake_up: int) -> None:
    write_cluster_file(tmp_path, fake_up)
    assert Settings().mongo_url == DEFAULTS["mongo_url"].default


def test_only_the_current_directory_counts(tmp_path: Path, fake_up: int, monkeypatch: pytest.MonkeyPatch) -> None:
    write_cluster_file(tmp_path, fake_up)
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path / "sub")
    assert CliSettings().mongo_url == DEFAULTS["mongo_url"].default


def test_a_stale_cluster_file_is_ignored_with_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    pid = dead_pid()
    write_cluster_file(tmp_path, pid)
    with caplog.at_level(logging.WARNING, logger="theodolite.settings"):
        settings = CliSettings()
    assert settings.mongo_url == DEFAULTS["mongo_url"].default
    [record] = caplog.records
    assert record.getMessage().startswith(f"ignoring {CLUSTER_FILE}: ") and f"pid {pid}" in record.getMessage()


def test_a_file_that_is_not_a_cluster_file_is_ignored_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / CLUSTER_FILE).parent.mkdir(parents=True)
    (tmp_path / CLUSTER_FILE).write_text("{not json")
    with caplog.at_level(logging.WARNING, logger="theodolite.settings"):
        assert CliSettings().mongo_url == DEFAULTS["mongo_url"].default
    assert "not a cluster file" in caplog.text


def test_when_the_environment_sets_every_connection_setting_the_file_is_not_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    write_cluster_file(tmp_path, dead_pid())
    for name, value in Settings(mongo_url="mongodb://m:1", namespace="n", db="d").child_environment().items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING, logger="theodolite.settings"):
        assert CliSettings().mongo_url == "mongodb://m:1"
    assert caplog.records == []  # services started by `up` do not warn about a stale file


def test_the_cluster_file_is_private_and_removed_only_by_its_writer(tmp_path: Path) -> None:
    path = tmp_path / CLUSTER_FILE
    record = write_cluster_file(tmp_path, os.getpid())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # the AMQP URL may carry a password
    assert ClusterFile.read(path) == record
    assert [p.name for p in path.parent.iterdir()] == ["cluster.json"]  # no temporary left behind
    assert not ClusterFile.remove(path, pid=os.getpid() + 1)
    assert path.exists()
    assert ClusterFile.remove(path)
    assert not path.exists() and ClusterFile.read(path) is None


def test_up_is_running_wants_a_live_up_process(fake_up: int) -> None:
    assert up_is_running(fake_up)
    assert not up_is_running(dead_pid())
    assert not up_is_running(os.getpid())  # alive, but not an `up` (a pid reused by another program)
    assert not up_is_running(0)


def test_up_refuses_to_start_where_a_cluster_is_up(tmp_path: Path, fake_up: int) -> None:
    write_cluster_file(tmp_path, fake_up)
    result = CliRunner().invoke(main, ["up", "--workers", "cpu=1"])
    assert result.exit_code == 1
    assert result.output.startswith("error: a cluster is already up in this directory") and f"kill -INT {fake_up}" in result.output
    assert ClusterFile.read(tmp_path / CLUSTER_FILE) is not None  # left alone


def test_precedence_is_in_the_help() -> None:
    runner = CliRunner()
    for args in ([], ["submit"], ["up"]):
        text = " ".join(runner.invoke(main, [*args, "--help"]).output.split())
        assert ".theodolite/cluster.json" in text, args
    assert "first match wins: the THEODOLITE_* environment variables" in " ".join(runner.invoke(main, ["--help"]).output.split())


# one-line connection errors ---------------------------------------------------------------------

@contextlib.contextmanager
def pymongo_socket_leak_tolerated() -> Iterator[None]:
    """PyMongo 4.20's async monitor leaks its socket when ``close()`` cancels it mid-connect
    (``_async_create_connection`` closes it on OSError and TimeoutError, not on cancellation);
    the ResourceWarning of that socket would fail a later test, so it is collected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


def test_connection_reasons_are_short() -> None:
    pymongo_text = ("127.0.0.1:1: [Errno 111] Connect call failed ('127.0.0.1', 1) (configured timeouts: socketTimeoutMS: "
                    "20000.0ms, connectTimeoutMS: 20000.0ms), Timeout: 1.0s, Topology Description: <TopologyDescription ...>")
    assert connection_reason(pymongo_text) == "connection refused"
    assert connection_reason("h:27017: [Errno -2] Name or service not known (configured timeouts: x)") == "name or service not known"
    assert connection_reason("127.0.0.1:27017: timed out, Timeout: 1.0s, Topology Description: <...>") == "timed out"


def test_an_unreachable_mongodb_is_one_line_naming_the_url_and_what_to_do() -> None:
    url = f"mongodb://127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pymongo_socket_leak_tolerated(), pytest.raises(StoreUnreachable) as info:
        asyncio.run(Store(Settings(mongo_url=url, connect_timeout_s=0.5)).open())
    text = str(info.value)
    assert text.startswith(f"cannot reach MongoDB at {url} (tried for ") and "s: connection refused); " in text
    assert "theodolite up" in text and "THEODOLITE_MONGO_URL" in text
    assert "\n" not in text and "Topology" not in text
    assert time.monotonic() - started < 5


def test_an_unreachable_rabbitmq_is_one_line_with_the_password_masked() -> None:
    port = free_port()
    with pytest.raises(BrokerUnreachable) as info:
        asyncio.run(Broker(Settings(amqp_url=f"amqp://guest:sesame@127.0.0.1:{port}/", connect_timeout_s=0.5), name="t").open())
    text = str(info.value)
    assert text.startswith(f"cannot reach RabbitMQ at amqp://guest:***@127.0.0.1:{port}/ (tried for 0.5 s: connection refused); ")
    assert "THEODOLITE_AMQP_URL" in text and "sesame" not in text and "\n" not in text


def test_submit_to_an_unreachable_mongodb_prints_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"mongodb://127.0.0.1:{free_port()}"
    monkeypatch.setenv("THEODOLITE_MONGO_URL", url)
    monkeypatch.setenv("THEODOLITE_CONNECT_TIMEOUT_S", "0.3")
    (tmp_path / "job.yaml").write_text("graph:\n  a:\n    square: [2]\n")
    with pymongo_socket_leak_tolerated():
        result = CliRunner().invoke(main, ["submit", "job.yaml"])
    assert result.exit_code == 1, result.output
    [line] = [line for line in result.output.splitlines() if line.strip()]
    assert re.fullmatch(rf"error: cannot reach MongoDB at {re.escape(url)} \(tried for [0-9.]+ s: connection refused\); "
                        r"start a cluster with 'theodolite up' in this directory or set THEODOLITE_MONGO_URL", line), line
