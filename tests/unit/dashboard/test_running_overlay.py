"""The job page shows a step running as soon as its ``step.running`` is heard: a worker stores
a short step only once it finished, so MongoDB alone would show it queued until then."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.dashboard.reads import status_with_running, with_running
from services.monitor_state import MonitorState
from services.monitor_tracks import StepTrack
from shared.states import JobState, StepState
from tests.unit.cli.test_monitor_state import JOB, Events, T, status


def test_the_state_knows_which_steps_it_heard_running_until_they_end() -> None:
    state, e = MonitorState(), Events()
    state.apply(e("job.running", T, steps=3))
    state.apply(e("step.running", T + 1, step="a", worker="cpu-w1"))
    state.apply(e("step.running", T + 1, step="b", worker="cpu-w2"))
    state.apply(e("step.succeeded", T + 2, step="b", worker="cpu-w2", duration_s=1.0))
    running = state.running(JOB)
    assert list(running) == ["a"] and running["a"].worker == "cpu-w1" and running["a"].running_since == T + 1
    assert state.running("no-such-job") == {}


def test_a_stored_queued_step_heard_running_is_shown_running_with_its_worker() -> None:
    stored = status(JobState.RUNNING, {"a": (StepState.QUEUED, None, "cpu"), "b": (StepState.SUCCEEDED, "cpu-w2", "cpu"),
                                       "c": (StepState.PENDING, None, "cpu")})
    heard = {"a": StepTrack(state=StepState.RUNNING, worker="cpu-w1", running_since=T + 1),
             "b": StepTrack(state=StepState.RUNNING, worker="cpu-w9", running_since=T)}
    shown = status_with_running(stored, heard, T + 5)
    assert shown.steps["a"].state is StepState.RUNNING and shown.steps["a"].worker == "cpu-w1"
    assert shown.steps["a"].duration_s == 4.0 and shown.steps["a"].started_at is not None
    assert shown.steps["b"] == stored.steps["b"], "a step stored finished is never taken back to running"
    assert shown.steps["c"] == stored.steps["c"]


@given(st.sampled_from(list(StepState)), st.booleans())
def test_only_steps_stored_as_not_started_change(stored_state: StepState, heard: bool) -> None:
    view = status(JobState.RUNNING, {"a": (stored_state, None, "cpu")}).steps["a"]
    track = StepTrack(state=StepState.RUNNING, worker="w", running_since=T) if heard else None
    shown = with_running(view, track, T + 1)
    if heard and stored_state in (StepState.PENDING, StepState.QUEUED, StepState.WAITING):
        assert shown.state is StepState.RUNNING and shown.worker == "w"
    else:
        assert shown == view
