"""Tables a script can parse and a person can read: nothing wrapped or cut when redirected."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from services.result_table import print_result, summarize
from shared.execution.result import JobResult, StepError, StepReport

LONG_STEP = "a_really_long_step_name_that_goes_on_and_on_and_on_forever_and_ever_more_than_eighty"
LONG_VALUE = "a string value that is rather long, longer than forty eight characters for sure, yes indeed, " * 2
DOCUMENT = f"""graph:
  {LONG_STEP}:
    echo: ["{LONG_VALUE}"]
  boom:
    fail_with: ["{'x' * 150}"]
    dependencies: [{LONG_STEP}]
"""


def test_tables_written_to_a_pipe_are_neither_wrapped_nor_cut(tmp_path: Path) -> None:
    doc = tmp_path / "long.yaml"
    doc.write_text(DOCUMENT)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    script = Path(sys.executable).with_name("theodolite")
    done = subprocess.run([str(script), "run", str(doc)], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert done.returncode == 1, done.stderr
    assert "…" not in done.stdout
    row = next(line for line in done.stdout.splitlines() if LONG_STEP in line)
    assert "echo" in row and LONG_VALUE.strip() in row  # one line: the name and the whole value
    assert f"RuntimeError: {'x' * 150}" in done.stdout.replace("\n", "") and f"{'x' * 150}" in done.stderr
    trace = done.stderr[done.stderr.index("Traceback"):]
    assert f"RuntimeError: {'x' * 150}\n" in trace  # the traceback's last line, not re-wrapped


def test_terminal_tables_keep_to_the_window() -> None:
    result = JobResult(status="succeeded", steps={LONG_STEP: StepReport(status="succeeded", outputs={"value": LONG_VALUE}, task="echo")})
    console = Console(width=80, force_terminal=True, record=True)
    print_result(result, console)
    text = console.export_text()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" in text  # long values are summarised on a terminal


def test_redirected_console_keeps_whole_lines() -> None:
    result = JobResult(status="failed", steps={"s": StepReport(status="failed", task="t", traceback="Traceback...\nValueError: " + "y" * 200)},
                       error=StepError(step="s", type="ValueError", message="y" * 200))
    console = Console(width=1 << 20, force_terminal=False, record=True, soft_wrap=True)
    print_result(result, console)
    assert f"ValueError: {'y' * 200}" in console.export_text()


def test_summaries_are_whole_without_a_limit() -> None:
    assert summarize("z" * 100, None) == repr("z" * 100)
    assert summarize("z" * 100).endswith("…") and len(summarize("z" * 100)) == 48


def test_submit_progress_is_driven_by_the_jobs_events(capsys) -> None:
    import asyncio

    from services.display import follow_with_progress
    from shared.messages import Event

    seen: list[object] = []

    async def wait(on_event):  # stands in for Client.wait
        seen.append(on_event)
        for state in ("running", "succeeded"):
            if on_event is not None:
                on_event(Event(type=f"step.{state}", job_id="j", step="s", state=state))
            await asyncio.sleep(0.15)
        return JobResult(status="succeeded", steps={"s": StepReport(status="succeeded")})

    result = asyncio.run(follow_with_progress(wait, total=1, show=True))
    assert result.status == "succeeded" and callable(seen[0])
    assert "1/1" in capsys.readouterr().err
    assert asyncio.run(follow_with_progress(wait, total=1, show=False)).status == "succeeded" and seen[1] is None
