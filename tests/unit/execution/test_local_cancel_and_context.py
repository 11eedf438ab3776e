"""`theodolite run` with the task context: metrics in --json, logs per attempt, seeds, and
cancelling (LocalExecutor.cancel and Ctrl-C)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from shared.execution.local import LocalExecutor
from shared.plugin_registry import PluginRegistry
from shared.states import StepState
from shared.task_context import derive_seed
from tests.unit.conftest import FIXTURE_PLUGINS, check

pytestmark = pytest.mark.timeout(90)
ROOT = Path(__file__).resolve().parents[3]


def executor_for(text: str, **options: object) -> LocalExecutor:
    result = check(text)
    assert result.document is not None, [i.message for i in result.issues]
    return LocalExecutor(result.document, {}, PluginRegistry([FIXTURE_PLUGINS]), **options)  # type: ignore[arg-type]


def test_the_context_says_job_step_attempt_and_seed_and_metrics_reach_the_result() -> None:
    executor = executor_for("graph:\n  s: {iso_context: [a]}\n", job_id="job-9", seed=11)
    result = executor.run()
    assert result.status == "succeeded"
    assert result.steps["s"].outputs == {"job": "job-9", "step": "s", "attempt": 1, "seed": derive_seed(11, "s"), "cancelled": False}
    payload = result.to_json_dict()
    assert payload["seed"] == 11
    assert [(m["name"], m["step"]) for m in payload["metrics"]["s"]] == [("loss", 0), ("loss", 1), ("loss", 2)]
    assert "hello from a" in result.steps["s"].logs[1]
    assert result.steps["s"].logged_artifacts["weights"].tolist() == [0.0, 1.0, 2.0, 3.0]


def test_cancel_stops_what_has_not_started_and_running_steps_see_it() -> None:
    executor = executor_for("graph:\n  polite: {iso_wait_for_cancel: [20]}\n  after: {tp_add: [$polite, 1]}\n"
                            "  stubborn: {iso_ignore_cancel: [20]}\n", concurrency=2)
    threading.Timer(1.5, executor.cancel, kwargs={"grace_s": 1.0}).start()
    started = time.monotonic()
    result = executor.run()
    assert time.monotonic() - started < 8
    assert result.status == "cancelled"
    assert result.steps["polite"].status == "succeeded", "it returned as soon as it saw the cancel"
    assert result.steps["after"].status == "cancelled"
    assert result.steps["stubborn"].status == "cancelled" and "StepCancelledError" in (result.steps["stubborn"].traceback or "")


def test_cancel_ends_a_waiting_retry_at_once(tmp_path: Path) -> None:
    changes: list[tuple[str, StepState]] = []
    executor = executor_for(f"graph:\n  s:\n    tp_retry_on_key_error: [{tmp_path / 'calls'}, KeyError]\n"
                            "    x-retry: {backoff_s: 30, max_backoff_s: 30}\n", on_change=lambda n, s: changes.append((n, s)))
    threading.Timer(0.8, executor.cancel).start()
    started = time.monotonic()
    result = executor.run()
    assert time.monotonic() - started < 5 and result.steps["s"].status == "cancelled"
    assert changes[-1] == ("s", StepState.CANCELLED)


def run_cli(args: list[str], interrupts: int, after_s: float = 2.5) -> tuple[subprocess.CompletedProcess[str], float]:
    process = subprocess.Popen([sys.executable, "-m", "services.cli", "run", *args, "--json", "--plugins", str(FIXTURE_PLUGINS)],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    started = time.monotonic()
    for _ in range(interrupts):
        time.sleep(after_s)
        process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err), time.monotonic() - started


@pytest.mark.parametrize("interrupts", [1, 2])
def test_ctrl_c_in_run_cancels_with_grace_then_stops_now(tmp_path: Path, interrupts: int) -> None:
    doc = tmp_path / "job.yaml"
    doc.write_text("graph:\n  polite: {iso_wait_for_cancel: [30]}\n  stubborn: {iso_ignore_cancel: [30]}\n")
    done, elapsed = run_cli([str(doc), "--concurrency", "2"], interrupts, after_s=2.5)
    payload = json.loads(done.stdout)
    assert done.returncode == 1 and payload["status"] == "cancelled", done.stderr
    assert "cancelling" in done.stderr
    assert payload["steps"]["polite"]["status"] == "succeeded"
    assert payload["steps"]["stubborn"]["status"] == "cancelled"
    # one Ctrl-C: the stubborn step is stopped at the end of the 10 s grace; two: at once
    assert (elapsed > 11) if interrupts == 1 else (elapsed < 9), elapsed
