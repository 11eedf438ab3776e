"""`theodolite monitor`'s view, rendered without a terminal: a recorded rich console of 120
columns, asserted line by line (services/monitor_view.py), and the command's two outputs."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from services.monitor_cli import JsonLines, LiveView
from services.monitor_screen import QueueDepth
from services.monitor_state import MonitorState
from services.monitor_view import render
from shared.events import Event
from shared.states import JobState, StepState
from tests.unit.cli.test_monitor_state import JOB, Events, T, beat, load, status


def text_of(state: MonitorState, now: float) -> list[str]:
    console = Console(record=True, width=120, color_system=None, file=io.StringIO())
    console.print(render(state.screen(now)))
    return [line.rstrip() for line in console.export_text().splitlines()]


def busy_cluster() -> MonitorState:
    state, e = MonitorState(), Events()
    request = load(state.apply(e("job.running", T, steps=5)).requests)
    devices = {"a": "cpu", "b": "cpu", "c": "cpu", "g": "gpu", "h": "cpu"}
    state.loaded(request, status(JobState.RUNNING, {n: (StepState.PENDING, None, d) for n, d in devices.items()}), T)
    state.apply(beat("cpu-host-11-aaaaaa", T + 1, seq=1, kind="worker.online"))
    state.apply(beat("cpu-host-12-bbbbbb", T + 1, seq=1, kind="worker.online"))
    for name in "abch":
        state.apply(e("step.queued", T + 1, step=name))
    state.apply(e("step.running", T + 2, step="a", worker="cpu-host-11-aaaaaa"))
    state.apply(e("step.succeeded", T + 4, step="a", worker="cpu-host-11-aaaaaa", duration_s=2.0))
    state.apply(e("step.running", T + 5, step="b", worker="cpu-host-12-bbbbbb"))
    state.apply(e("step.running", T + 6, step="c", worker="cpu-host-11-aaaaaa"))
    state.apply(e("step.metric", T + 7, step="c", state="running", worker="cpu-host-11-aaaaaa", name="loss", value=0.123456,
                  detail={"step": 4}))
    state.apply(e("step.waiting", T + 6, step="g", device="gpu", reason="waiting for a worker of type gpu: no queue"))
    state.apply(beat("cpu-host-11-aaaaaa", T + 8, seq=2, busy=1, held=1))
    state.apply(beat("cpu-host-12-bbbbbb", T + 9, seq=2, busy=1, held=2))
    state.queues({"cpu": QueueDepth(messages=1, consumers=2), "gpu": None})
    return state


def test_the_view_of_a_busy_cluster() -> None:
    lines = text_of(busy_cluster(), T + 10)
    assert lines[0] == (f"!! device gpu: no worker serves it (its queue does not exist); 1 step(s) wait for it (job {JOB}: g)")
    assert lines[1].startswith(f"job {JOB} (job.yaml)  running  ")
    assert lines[1].endswith("  1/5 steps done  10.0 s")
    assert lines[2] == "  succeeded 1 · running 2 · queued 1 · waiting 1"
    assert lines[3] == "  ran on cpu-host-11-aaaaaa (1 step)"
    table = lines[lines.index(next(line for line in lines if "running step" in line)):]
    assert table[1].split() == ["b", "cpu-host-12-bbbbbb", "5.0", "s"]
    assert table[2].split() == ["c", "cpu-host-11-aaaaaa", "4.0", "s", "loss", "0.1235", "(step", "4)"]
    devices = lines.index("devices")
    assert lines[devices + 1].split() == ["device", "workers", "busy/slots", "held", "last", "heartbeat", "queue", "consumers",
                                          "ready", "oldest", "ready"]
    assert lines[devices + 2].split() == ["cpu", "2", "2/4", "3", "1.0", "s", "ago", "1", "2", "1", "9.0", "s"]
    assert lines[devices + 3].split() == ["gpu", "0", "0/0", "0", "no", "queue", "1", "4.0", "s"]
    workers = lines.index("workers")
    assert lines[workers + 1].split() == ["worker", "device", "state", "busy/slots", "held", "completed", "last", "heard"]
    assert lines[workers + 2].split() == ["cpu-host-11-aaaaaa", "cpu", "online", "1/2", "1", "0", "2.0", "s", "ago"]
    assert lines[-1] == "15 events heard"


def test_gaps_late_joins_errors_and_timeouts_are_said() -> None:
    state, e = MonitorState(), Events()
    state.apply(e("job.running", T, steps=2))
    state.apply(e("step.running", T, step="a", worker="w1"))
    state.apply(e("step.timeout_warning", T + 8, step="a", state="running", worker="w1", elapsed_s=8, timeout_s=10))
    state.apply(e("step.running", T + 9, step="b", worker="w1", seq=9))
    text = "\n".join(text_of(state, T + 10))
    assert "! may have missed events (1 gap(s) in its numbers): reading its state from MongoDB" in text
    assert "a (past 80 % of its timeout)" in text

    late, f = MonitorState(), Events("job-late")
    late.apply(f("job.failed", T, seq=40, error={"step": "x", "type": "ValueError", "message": "bad [red]input[/]"}))
    text = "\n".join(text_of(late, T))
    assert "job job-late  failed" in text and "joined at event 40: earlier events read from MongoDB" in text
    assert "error: x: ValueError: bad [red]input[/]" in text, "stored texts are not markup"


def test_a_watched_job_not_seen_yet_and_an_idle_cluster() -> None:
    assert text_of(MonitorState(watch="j9"), T)[0] == "job j9: not seen yet, waiting for it"
    watching = MonitorState(watch="j9")
    (request,) = watching.begin(["j9"], replay=False)
    watching.loaded(request, None, T)  # no such job in MongoDB (yet)
    assert text_of(watching, T)[0] == "job j9: not seen yet, waiting for it"
    assert text_of(MonitorState(), T) == ["no jobs running", "0 events heard"]


def test_the_live_view_off_a_terminal_prints_the_final_screen_once() -> None:
    out = io.StringIO()
    view = LiveView(Console(file=out, width=200, color_system=None))
    state, e = MonitorState(watch=JOB), Events()
    for at in (T, T + 1):
        state.apply(e("job.running" if at == T else "step.queued", at, steps=1, step=None if at == T else "a"))
        view.draw(state.screen(at))
    assert out.getvalue() == "", "nothing is drawn while it runs"
    state.apply(e("step.running", T + 2, step="a", worker="cpu-w"))
    state.apply(e("step.succeeded", T + 3, step="a", worker="cpu-w"))
    state.apply(e("job.succeeded", T + 3))
    view.finish(state.screen(T + 4), None)
    printed = out.getvalue()
    assert printed.count(f"job {JOB}") == 1 and "1/1 steps done" in printed and "succeeded" in printed


def test_json_lines_print_each_event_as_published(capsys: pytest.CaptureFixture[str]) -> None:
    event = Event(type="step.queued", job_id=JOB, seq=2, step="a", state="queued", at=T)
    JsonLines().event(event)
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line) == event.model_dump(mode="json")
    assert list(json.loads(line)) == list(Event.model_fields)


def test_off_a_terminal_each_alarm_and_worker_is_noted_on_stderr_once(capsys: pytest.CaptureFixture[str]) -> None:
    view = LiveView(Console(file=io.StringIO(), width=120, color_system=None))
    state = busy_cluster()
    view.draw(state.screen(T + 10))
    view.draw(state.screen(T + 10.5))
    noted = capsys.readouterr().err.splitlines()
    assert noted == [f"!! device gpu: no worker serves it (its queue does not exist); 1 step(s) wait for it (job {JOB}: g)",
                     "worker cpu-host-11-aaaaaa online (cpu, 2 slot(s))", "worker cpu-host-12-bbbbbb online (cpu, 2 slot(s))"]
    state.apply(beat("cpu-host-13-cccccc", T + 11, seq=1, kind="worker.online"))
    view.draw(state.screen(T + 11))
    view.live.stop()
    assert capsys.readouterr().err.splitlines() == ["worker cpu-host-13-cccccc online (cpu, 2 slot(s))"]
