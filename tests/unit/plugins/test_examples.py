"""The example job documents validate and produce the promised ``metrics`` output."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
CLI = Path(sys.executable).parent / "theodolite"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), *args], check=False, cwd=ROOT, capture_output=True, text=True, timeout=240
    )


def final_metrics(name: str, artifacts: Path, *params: str) -> dict:
    flags = [item for param in params for item in ("-p", param)]
    done = run_cli("run", str(EXAMPLES / name), "--json", *flags, "--artifacts-dir", str(artifacts))
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)
    assert result["status"] == "succeeded", result.get("error")
    *_, last = result["steps"].values()
    return last["outputs"]["metrics"]


pytestmark = pytest.mark.skipif(not CLI.exists(), reason="theodolite CLI not installed")


@pytest.mark.parametrize(
    "name", ["fgm.yaml", "feature_squeeze.yaml", "eps_sweep.yaml", "adversarial_training.yaml"]
)
def test_example_validates(name):
    done = run_cli("validate", str(EXAMPLES / name))
    assert done.returncode == 0, done.stdout + done.stderr


def test_fgm_example_reports_clean_and_adversarial_accuracy(tmp_path):
    metrics = final_metrics("fgm.yaml", tmp_path, "epochs=10")
    assert metrics["clean_accuracy"] >= 0.9
    assert metrics["adversarial_accuracy"] < metrics["clean_accuracy"]
    assert metrics["distance_linf_max"] == pytest.approx(0.1, abs=1e-6)
    table = (tmp_path / "distance_table").read_text().splitlines()
    assert table[0] == "sample,linf,l2,l1" and len(table) == 1 + 450


def test_eps_sweep_accuracy_falls_with_eps(tmp_path):
    metrics = final_metrics("eps_sweep.yaml", tmp_path, "epochs=10")
    by_eps = metrics["adversarial_accuracy"]
    assert list(by_eps) == ["0.02", "0.05", "0.1", "0.2"]
    values = list(by_eps.values())
    assert all(a > b for a, b in itertools.pairwise(values))
    assert metrics["clean_accuracy"] > values[0]


def test_feature_squeezing_recovers_part_of_the_accuracy(tmp_path):
    metrics = final_metrics("feature_squeeze.yaml", tmp_path, "epochs=10")
    attacked, squeezed = metrics["adversarial_accuracy"], metrics["defended_adversarial_accuracy"]
    assert squeezed > attacked + 0.05


def test_same_seed_gives_identical_metrics_across_runs(tmp_path):
    first = final_metrics("fgm.yaml", tmp_path / "a", "epochs=5", "seed=7")
    second = final_metrics("fgm.yaml", tmp_path / "b", "epochs=5", "seed=7")
    other = final_metrics("fgm.yaml", tmp_path / "c", "epochs=5", "seed=8")
    assert first == second
    assert other != first
