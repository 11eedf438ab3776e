"""Planner, two cpu workers and one gpu worker as separate processes, end to end."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pymongo import AsyncMongoClient

from services.client import Client
from services.cluster import LocalCluster
from shared.execution.result import JobResult
from shared.messages import Event
from shared.settings import Settings
from tests.integration import documents
from tests.support.artifact_job import write_job
from tests.support.distributed import ROOT, TEST_PLUGINS, make_settings, running_cluster

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]
SEED = 7
"""The job seed of both runs compared (each step's task context seed derives from it)."""


@pytest.fixture(scope="module")
def cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    logs = tmp_path_factory.mktemp("cluster-logs")
    with running_cluster(make_settings(amqp_url, mongo_url), {"cpu": 2, "gpu": 1}, logs, plugin_dirs=[TEST_PLUGINS]) as cluster:
        yield cluster


def submit(settings: Settings, text: str, **kwargs: object):
    async def go():
        async with Client(settings) as client:
            return await client.submit_and_wait(text, timeout_s=120, seed=SEED, **kwargs)  # type: ignore[arg-type]
    return asyncio.run(go())


def run_locally(tmp_path: Path, text: str) -> dict:
    path = tmp_path / "job.yaml"
    path.write_text(text)
    done = subprocess.run([sys.executable, "-m", "services.cli", "run", str(path), "--json", "--plugins", str(TEST_PLUGINS),
                           "--seed", str(SEED)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120, check=False)
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


async def step_docs(settings: Settings, job_filter: dict | None = None) -> list[dict]:
    client = AsyncMongoClient(settings.mongo_url)
    try:
        return [d async for d in client[settings.db]["steps"].find(job_filter or {}, {"outputs": 0})]
    finally:
        await client.close()


def test_diamond_matches_embedded_run(cluster: LocalCluster, tmp_path: Path) -> None:
    result = submit(cluster.settings, documents.DIAMOND)
    assert result.status == "succeeded"
    assert result.to_json_dict() == run_locally(tmp_path, documents.DIAMOND)
    assert result.steps["bottom"].outputs == {"total": 118.0}


def test_fan_out_and_in_of_200_steps(cluster: LocalCluster, tmp_path: Path) -> None:
    text = documents.fan_out_in(200)
    result = submit(cluster.settings, text)
    assert result.status == "succeeded"
    assert result.steps["gather"].outputs["total"] == sum(1 + i for i in range(200))
    assert result.to_json_dict() == run_locally(tmp_path, text)


def test_arrays_and_pytrees_between_steps(cluster: LocalCluster, tmp_path: Path) -> None:
    result = submit(cluster.settings, documents.ARRAYS)
    assert result.status == "succeeded", result.error
    arr = result.steps["arr"].outputs["array"]
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32 and arr.shape == (40, 40)  # 6400 bytes: GridFS
    tree = result.steps["tree"].outputs["tree"]
    assert isinstance(tree["params"][0], tuple) and tree["params"][0][1].dtype == np.int16
    assert isinstance(tree["meta"]["scale"], np.float64) and tree["meta"]["tags"] == ("a", "b")
    assert tree["raw"] == b"\x00\x01bytes"
    kinds = result.steps["described"].outputs["leaf_kinds"]
    assert "tuple" in kinds and "ndarray:int16:(3,)" in kinds and "ndarray:float64:(5000,)" in kinds
    assert result.to_json_dict() == run_locally(tmp_path, documents.ARRAYS)


def test_gpu_steps_run_only_on_gpu_workers(cluster: LocalCluster) -> None:
    result = submit(cluster.settings, documents.gpu_mix(8))
    assert result.status == "succeeded"
    docs = asyncio.run(step_docs(cluster.settings))
    by_step = {d["step"]: d for d in docs if d["step"][0] in "gc" and d["step"][1:].isdigit()}
    for name, doc in by_step.items():
        expected = "gpu-" if name.startswith("g") else "cpu-"
        assert doc["worker"].startswith(expected), (name, doc["worker"])
    for i in range(8):
        assert result.steps[f"g{i}"].outputs["label"] == {"device": "gpu", "index": i}


def test_failing_step_fails_the_job_and_skips_dependents(cluster: LocalCluster, tmp_path: Path) -> None:
    result = submit(cluster.settings, documents.FAILING)
    assert result.status == "failed"
    assert result.error is not None and result.error.step == "boom" and result.error.type == "RuntimeError"
    assert "kaboom from the test" in result.error.message
    assert result.steps["after"].status == "skipped" and result.steps["last"].status == "skipped"
    assert result.to_json_dict() == run_locally(tmp_path, documents.FAILING)


def test_submit_cli_prints_run_json_and_exit_codes(cluster: LocalCluster, tmp_path: Path) -> None:
    env = {**os.environ, **cluster.settings.child_environment()}
    good, bad, failing = tmp_path / "diamond.yaml", tmp_path / "invalid.yaml", tmp_path / "failing.yaml"
    good.write_text(documents.DIAMOND)
    bad.write_text(documents.INVALID)
    failing.write_text(documents.FAILING)
    cli = [sys.executable, "-m", "services.cli", "submit", "--plugins", str(TEST_PLUGINS)]
    done = subprocess.run([*cli, str(good), "--wait", "--json", "-p", "x=5"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["steps"]["top"]["outputs"] == {"value": 6}
    done = subprocess.run([*cli, str(bad), "--wait", "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 2 and f"{bad}:6:" in done.stderr
    assert json.loads(done.stdout)["status"] == "invalid"  # as run --json prints an invalid document
    done = subprocess.run([*cli, str(failing), "--wait", "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 1 and json.loads(done.stdout)["error"]["step"] == "boom"


def test_planner_rejects_an_invalid_document_sent_without_the_cli(cluster: LocalCluster) -> None:
    from shared.distributed_errors import JobRejected

    with pytest.raises(JobRejected) as info:
        submit(cluster.settings, documents.INVALID, name="remote.yaml")
    assert any(p.startswith("remote.yaml:6:") for p in info.value.problems)


def test_task_retries_and_timeouts_are_honoured(cluster: LocalCluster, tmp_path: Path) -> None:
    result = submit(cluster.settings, f"graph:\n  retried:\n    flaky: [{tmp_path}]\n")
    assert result.status == "succeeded" and result.steps["retried"].outputs == {"value": 2.0}
    result = submit(cluster.settings, "graph:\n  slow:\n    too_slow: [3]\n")
    assert result.status == "failed" and result.error is not None and result.error.type == "StepTimeoutError"



def test_a_retry_waits_its_backoff_off_the_worker_and_every_attempt_is_recorded(cluster: LocalCluster, tmp_path: Path) -> None:
    events: list[Event] = []

    async def go() -> JobResult:
        async with Client(cluster.settings) as client:
            return await client.submit_and_wait(f"graph:\n  retried:\n    flaky_timed: [{tmp_path}]\n", timeout_s=120,
                                                on_event=events.append)

    result = asyncio.run(go())
    assert result.status == "succeeded" and result.steps["retried"].outputs == {"value": 3.0}
    first, second, third = (float(line) for line in (tmp_path / "flaky_timed.calls").read_text().split())
    # backoff_s=0.4 ±25 %, then 0.8 capped at max_backoff_s=0.6 ±25 %: never sooner; later by a hop (more on a busy machine)
    assert 0.3 <= second - first <= 0.5 + 3, second - first
    assert 0.45 <= third - second <= 0.75 + 3, third - second
    retrying = [e for e in events if e.type == "step.retrying"]
    assert [(e.attempt, e.detail["failed_attempt"], e.detail["error"]["type"]) for e in retrying] == [
        (2, 1, "ConnectionError"), (3, 2, "ConnectionError")]
    # delay_s is what was left of the wait when the planner heard of the failure: at most the backoff
    assert all(0 <= e.detail["delay_s"] <= 0.75 and e.detail["retry_at"] > 0 for e in retrying)
    (doc,) = asyncio.run(step_docs(cluster.settings, {"job": retrying[0].job_id, "step": "retried"}))
    assert (doc["state"], doc["attempt"]) == ("succeeded", 3)
    history = [doc["attempts"][key] for key in sorted(doc["attempts"], key=int)]
    assert [(a["attempt"], a["error"]["message"]) for a in history] == [(1, "flaky failure 1"), (2, "flaky failure 2")]


def test_a_timeout_is_retried_then_fails_the_step(cluster: LocalCluster) -> None:
    result = submit(cluster.settings, "graph:\n  slow_retried:\n    too_slow_retried: [3]\n")
    assert result.status == "failed" and result.error is not None and result.error.type == "StepTimeoutError"
    (doc,) = asyncio.run(step_docs(cluster.settings, {"step": "slow_retried"}))
    assert doc["attempt"] == 2 and [a["error"]["kind"] for a in doc["attempts"].values()] == ["timeout"]
    assert doc["error"]["kind"] == "timeout"


def test_artifact_inputs_and_outputs_through_submit_as_with_run(cluster: LocalCluster, tmp_path: Path) -> None:
    env = {**os.environ, **cluster.settings.child_environment()}
    doc, inputs = write_job(tmp_path)
    outputs = {}
    for command, extra in (("run", []), ("submit", ["--wait"])):
        done = subprocess.run([sys.executable, "-m", "services.cli", command, str(doc), "--json", *extra, *inputs,
                               "--artifacts-dir", str(tmp_path / command)],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        outputs[command] = json.loads(done.stdout)
    assert outputs["submit"]["steps"] == outputs["run"]["steps"]
    assert outputs["submit"]["steps"]["total"]["outputs"] == {"total": 30}
    for name in ("saved", "summary"):
        assert Path(outputs["submit"]["artifacts"][name]).read_bytes() == Path(outputs["run"]["artifacts"][name]).read_bytes()
    missing = subprocess.run([sys.executable, "-m", "services.cli", "submit", str(doc), "--wait"],
                             capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert missing.returncode == 2 and "--artifact weights=PATH" in missing.stderr


REPORTING = """
tasks:
  plus: {plugin: dist_testtasks.plus, inputs: [{x: number}, {name: k, type: number, required: false}], outputs: {value: number}}
  report: {plugin: plugins.basic.tasks.echo, inputs: [{value: any}], outputs: {metrics: any}}
graph:
  a_step_with_a_name_long_enough_to_be_wrapped_at_eighty_columns_in_a_table:
    plus: [1, 2]
  summary:
    report: [{clean_accuracy: $a_step_with_a_name_long_enough_to_be_wrapped_at_eighty_columns_in_a_table, adversarial_accuracy: 0.5}]
"""


def test_submit_wait_prints_what_run_prints(cluster: LocalCluster, tmp_path: Path) -> None:
    """The step table (task names, whole values) and the metrics table, the same in both modes."""
    import re

    env = {**os.environ, **cluster.settings.child_environment()}
    doc = tmp_path / "reporting.yaml"
    doc.write_text(REPORTING)
    printed = {}
    for command, extra in (("run", []), ("submit", ["--wait"])):
        done = subprocess.run([sys.executable, "-m", "services.cli", command, str(doc), *extra, "--plugins", str(TEST_PLUGINS)],
                              capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        printed[command] = re.sub(r"\d+\.\d{3}s", "T", done.stdout)
    assert printed["submit"] == printed["run"]
    assert "metrics (summary)" in printed["submit"] and "adversarial_accuracy" in printed["submit"]
    row = next(line for line in printed["submit"].splitlines() if "a_step_with_a_name_long_enough" in line)
    assert "a_step_with_a_name_long_enough_to_be_wrapped_at_eighty_columns_in_a_table" in row and "plus" in row


def test_a_task_calling_sys_exit_fails_its_step_and_the_worker_keeps_serving(cluster: LocalCluster) -> None:
    result = submit(cluster.settings, "graph:\n  quit:\n    exits: [3]\n")
    assert result.status == "failed" and result.error is not None
    assert (result.error.step, result.error.type, result.error.message) == ("quit", "SystemExit", "3")
    assert all(child.process.poll() is None for child in cluster.children), "a worker exited"
    assert submit(cluster.settings, documents.DIAMOND).status == "succeeded"


def test_a_plugin_only_other_machines_hold_is_accepted_and_fails_on_a_worker_without_it(cluster: LocalCluster, tmp_path: Path) -> None:
    """Dioptra's verdict at submit time (a warning), then the worker that cannot find the
    module fails the step, naming the plugin path it searched."""
    doc = tmp_path / "elsewhere.yaml"
    doc.write_text("tasks:\n  add: {plugin: lab_plugins.arith.add, inputs: [{a: number}, {b: number}], outputs: {sum: number}}\n"
                   "graph:\n  one: {add: [1, 2]}\n")
    env = {**os.environ, **cluster.settings.child_environment()}
    done = subprocess.run([sys.executable, "-m", "services.cli", "submit", str(doc), "--wait", "--json"],
                          capture_output=True, text=True, env=env, cwd=ROOT, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert f"{doc}:2: tasks.add.plugin: warning: no plugin module 'lab_plugins.arith'" in done.stderr
    error = json.loads(done.stdout)["error"]
    assert error["step"] == "one" and error["type"] == "PluginLoadError"
    assert "no plugin module 'lab_plugins.arith' on this plugin path" in error["message"]
