"""Cancel, wait, detach and --timeout on a cluster, through the CLI as people use it."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.cluster import LocalCluster
from tests.support.distributed import ROOT, TEST_PLUGINS, make_settings, running_cluster

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    with running_cluster(make_settings(amqp_url, mongo_url), {"cpu": 1}, logs, plugin_dirs=[TEST_PLUGINS],
                         worker_concurrency=3) as cluster:
        yield cluster


def cli(cluster: LocalCluster, *args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env=cluster.environment(), timeout=timeout_s, check=False)


def submit(cluster: LocalCluster, tmp_path: Path, text: str) -> str:
    path = tmp_path / f"job-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    done = cli(cluster, "submit", str(path), "--json", "--plugins", str(TEST_PLUGINS))
    assert done.returncode == 0, done.stderr
    return str(json.loads(done.stdout)["job_id"])


def wait_for_state(cluster: LocalCluster, job_id: str, step: str, state: str, within_s: float = 30) -> None:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        shown = cli(cluster, "status", job_id, "--json")
        if shown.returncode == 0 and json.loads(shown.stdout)["steps"][step]["state"] == state:
            return
        time.sleep(0.3)
    raise AssertionError(f"step {step} of {job_id} never became {state}")


def test_cancel_stops_new_work_tells_running_steps_and_enforces_the_grace(cluster: LocalCluster, tmp_path: Path) -> None:
    job_id = submit(cluster, tmp_path, "graph:\n  polite: {wait_for_cancel: [60]}\n  stubborn: {ignore_cancel: [60]}\n"
                                       "  later: {plus: [$polite]}\n")
    wait_for_state(cluster, job_id, "stubborn", "running")
    wait_for_state(cluster, job_id, "polite", "running")
    started = time.monotonic()
    done = cli(cluster, "cancel", job_id, "--grace", "2", "--wait", "--json")
    elapsed = time.monotonic() - started
    assert done.returncode in (0, 1), done.stderr
    assert "cancel of job" in done.stderr
    result = json.loads(done.stdout)
    assert result["status"] == "cancelled"
    steps = {name: step["status"] for name, step in result["steps"].items()}
    assert steps == {"polite": "succeeded", "stubborn": "cancelled", "later": "cancelled"}
    assert 0 < result["steps"]["polite"]["outputs"]["waited"] < 5, "the task saw cancelled() at once"
    assert elapsed < 20, f"the stubborn step outlived its 2 s grace ({elapsed:.1f} s)"
    again = cli(cluster, "cancel", job_id)
    assert again.returncode == 0 and "already ended (cancelled)" in again.stderr


def test_timeout_and_ctrl_c_leave_the_job_running_and_wait_follows_it_again(cluster: LocalCluster, tmp_path: Path) -> None:
    path = tmp_path / "slow.yaml"
    path.write_text("graph:\n  slow: {ignore_cancel: [6]}\n")
    timed = cli(cluster, "submit", str(path), "--wait", "--timeout", "1", "--plugins", str(TEST_PLUGINS))
    assert timed.returncode == 1
    assert "is still running after 1 s (it was not stopped)" in timed.stderr and "theodolite wait" in timed.stderr
    job_id = timed.stderr.split("job ", 1)[1].split()[0]
    resumed = cli(cluster, "wait", job_id, "--json")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout)["steps"]["slow"]["outputs"] == {"slept": 6}

    process = subprocess.Popen([sys.executable, "-m", "services.cli", "submit", str(path), "--wait", "--plugins", str(TEST_PLUGINS)],
                               cwd=ROOT, env=cluster.environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert process.returncode == 130, err
    assert "detached: job" in err and "keeps running" in err
    detached_id = err.split("detached: job ", 1)[1].split()[0]
    finished = cli(cluster, "wait", detached_id, "--json")
    assert finished.returncode == 0 and json.loads(finished.stdout)["status"] == "succeeded"


def test_wait_and_cancel_name_an_unknown_job(cluster: LocalCluster) -> None:
    for command in ("wait", "cancel"):
        done = cli(cluster, command, "no-such-job")
        assert done.returncode == 1 and "no job named no-such-job" in done.stderr


