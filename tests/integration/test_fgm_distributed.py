"""The FGM example on a cluster: same metrics as `theodolite run`, gpu-typed steps on gpu workers."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pymongo import AsyncMongoClient

from services.client import Client
from services.cluster import LocalCluster
from shared.document import catalog_for, check_file
from tests.support.distributed import ROOT, make_settings, running_cluster

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo, pytest.mark.slow]
FGM = ROOT / "examples" / "fgm.yaml"
FAST = {"epochs": 3, "seed": 5}


@pytest.fixture(scope="module")
def ml_cluster(amqp_url: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    pytest.importorskip("jax")
    logs = tmp_path_factory.mktemp("ml-cluster-logs")
    with running_cluster(make_settings(amqp_url, mongo_url), {"cpu": 1, "gpu": 1}, logs, ready_s=120, worker_concurrency=2) as cluster:
        yield cluster


def test_fgm_gives_the_same_metrics_as_run_and_gpu_steps_run_on_gpu_workers(ml_cluster: LocalCluster, tmp_path: Path) -> None:
    params = [item for name, value in FAST.items() for item in ("-p", f"{name}={value}")]
    local = subprocess.run([sys.executable, "-m", "services.cli", "run", str(FGM), "--json", *params,
                            "--artifacts-dir", str(tmp_path / "run")],
                           capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert local.returncode == 0, local.stderr[-3000:]
    expected = json.loads(local.stdout)
    remote = subprocess.run([sys.executable, "-m", "services.cli", "submit", str(FGM), "--wait", "--json", *params,
                             "--artifacts-dir", str(tmp_path / "submit")], env=ml_cluster.environment(),
                            capture_output=True, text=True, cwd=ROOT, timeout=300, check=False)
    assert remote.returncode == 0, remote.stderr[-3000:]
    submitted = json.loads(remote.stdout)
    assert submitted["steps"]["report"] == expected["steps"]["report"]
    assert set(submitted["artifacts"]) == set(expected["artifacts"]) == {"distance_table", "adversarial_examples"}
    assert Path(submitted["artifacts"]["distance_table"]).read_bytes() == Path(expected["artifacts"]["distance_table"]).read_bytes()

    async def go():
        async with Client(ml_cluster.settings) as client:
            result = await client.submit_and_wait(FGM.read_text(), FAST, name="fgm.yaml", timeout_s=300)
            mongo = AsyncMongoClient(ml_cluster.settings.mongo_url)
            try:
                docs = [d async for d in mongo[ml_cluster.settings.db]["steps"].find({}, {"step": 1, "worker": 1})]
            finally:
                await mongo.close()
            return result, docs

    result, docs = asyncio.run(go())
    assert result.status == "succeeded", result.error
    ours = result.to_json_dict()
    metrics = ours["steps"]["report"]["outputs"]["metrics"]
    assert metrics == expected["steps"]["report"]["outputs"]["metrics"]
    assert metrics["clean_accuracy"] > metrics["adversarial_accuracy"]
    logged = {point["name"] for points in ours["metrics"].values() for point in points}
    assert {"loss", "train_accuracy", "success_rate"} <= logged, "the built-in training and attack tasks log through their context"
    assert [point["name"] for point in submitted["metrics"]["trained"]][:1] == ["loss"], "submit --wait --json has them too"

    document = check_file(FGM, catalog_for(FGM)).document
    devices = {name: document.tasks[step.task].device for name, step in document.steps.items()}
    assert "gpu" in devices.values() and "cpu" in devices.values()
    workers = {d["step"]: d["worker"] for d in docs if "." not in d["step"]}
    for step, device in devices.items():
        assert workers[step].startswith(f"{device}-"), (step, device, workers[step])
