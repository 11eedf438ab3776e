"""The planner core's transitions and invariants (pure: no threads, no I/O)."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from shared.planner.core import JobState, PlannerCore, StepState, topological_order

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"]}


def test_diamond_releases_steps_as_dependencies_complete() -> None:
    core = PlannerCore(DIAMOND)
    assert core.job_state is JobState.PENDING
    assert core.start() == ["a"]
    assert core.job_state is JobState.RUNNING
    assert core.running("a")
    assert sorted(core.succeeded("a")) == ["b", "c"]
    assert core.succeeded("b") == []
    assert core.succeeded("c") == ["d"]
    assert core.succeeded("d") == []
    assert core.finished and core.job_state is JobState.SUCCEEDED


def test_failure_skips_what_was_never_dispatched_and_stops_the_queued_when_they_would_start() -> None:
    core = PlannerCore(DIAMOND)
    core.start()
    core.succeeded("a")
    assert core.failed("b") == ["d"]  # fail-fast: c was dispatched, so it keeps its own outcome
    assert core.state("d") is StepState.SKIPPED
    assert core.state("c") is StepState.QUEUED and not core.finished
    assert core.stop_state is StepState.SKIPPED
    assert core.begin("c") is StepState.SKIPPED  # whoever holds it does not start it
    assert core.finished and core.job_state is JobState.FAILED


def test_a_queued_step_reported_skipped_by_its_worker_finishes_the_job() -> None:
    core = PlannerCore({"a": [], "b": []})
    core.start()
    core.failed("a")
    assert not core.finished
    assert core.stopped("b", StepState.SKIPPED)
    assert not core.stopped("b", StepState.SKIPPED)  # a duplicate report changes nothing
    assert core.finished and core.job_state is JobState.FAILED


def test_keep_going_skips_only_descendants() -> None:
    core = PlannerCore({"a": [], "b": ["a"], "c": [], "d": ["c"]}, fail_fast=False)
    assert sorted(core.start()) == ["a", "c"]
    assert core.failed("a") == ["b"]
    assert core.succeeded("c") == ["d"]
    core.succeeded("d")
    assert core.finished and core.job_state is JobState.FAILED
    assert core.state("d") is StepState.SUCCEEDED


def test_running_step_may_finish_after_a_failure_elsewhere() -> None:
    core = PlannerCore({"a": [], "b": [], "c": ["b"]})
    core.start()
    core.running("a")
    core.running("b")
    core.failed("a")
    assert core.succeeded("b") == []  # nothing new is released after a failure
    assert core.state("c") is StepState.SKIPPED
    assert core.finished


def test_skipped_step_is_not_started() -> None:
    core = PlannerCore({"a": [], "b": []})
    core.start()
    core.failed("a")
    assert core.running("b") is False
    assert core.state("b") is StepState.SKIPPED


def test_duplicate_completion_is_ignored() -> None:
    core = PlannerCore(DIAMOND)
    core.start()
    assert sorted(core.succeeded("a")) == ["b", "c"]
    assert core.succeeded("a") == []


def test_cancel_stops_unstarted_steps() -> None:
    core = PlannerCore(DIAMOND)
    core.start()
    core.running("a")
    assert sorted(core.cancel()) == ["b", "c", "d"]
    assert not core.finished  # a still runs
    core.succeeded("a")
    assert core.job_state is JobState.CANCELLED


def test_restore_resumes_without_rerunning_completed_steps() -> None:
    core = PlannerCore(DIAMOND)
    restored = core.restore({"a": StepState.SUCCEEDED, "b": StepState.SUCCEEDED, "c": StepState.RUNNING, "d": StepState.PENDING})
    assert (restored.publish, restored.running, restored.stopped) == ([], ["c"], [])
    assert core.succeeded("c") == ["d"]


def test_restore_republishes_queued_and_waiting_steps_and_publishes_newly_ready_ones() -> None:
    core = PlannerCore(DIAMOND)
    restored = core.restore({"a": StepState.SUCCEEDED, "b": StepState.WAITING})
    assert sorted(restored.publish) == ["b", "c"]
    assert core.state("d") is StepState.PENDING


def test_restore_of_a_failed_job_finishes_it() -> None:
    core = PlannerCore(DIAMOND)
    restored = core.restore({"a": StepState.SUCCEEDED, "b": StepState.FAILED})
    assert restored.publish == [] and sorted(restored.stopped) == ["c", "d"]
    assert core.finished and core.job_state is JobState.FAILED


def test_restore_of_a_failure_beside_a_running_step_lets_it_finish() -> None:
    """The defect: restore skipped the running step and finished the job under it."""
    core = PlannerCore({"boom": [], "long": [], "after": ["boom"], "later": ["long"]})
    restored = core.restore({"boom": StepState.FAILED, "long": StepState.RUNNING})
    assert restored.running == ["long"] and sorted(restored.stopped) == ["after", "later"]
    assert core.state("long") is StepState.RUNNING and not core.finished
    assert core.succeeded("long") == []
    assert core.finished and core.job_state is JobState.FAILED


@st.composite
def dags(draw: st.DrawFn) -> dict[str, list[str]]:
    size = draw(st.integers(min_value=1, max_value=40))
    names = [f"s{i}" for i in range(size)]
    deps: dict[str, list[str]] = {}
    for index, name in enumerate(names):
        deps[name] = sorted(set(draw(st.lists(st.sampled_from(names[:index]), max_size=4)))) if index else []
    order = draw(st.permutations(names))
    return {name: deps[name] for name in order}


@given(dags(), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_any_completion_order_respects_every_edge(deps: dict[str, list[str]], rnd: random.Random) -> None:
    core = PlannerCore(deps)
    ready = core.start()
    finished: set[str] = set()
    released_once: set[str] = set(ready)
    while ready:
        step = ready.pop(rnd.randrange(len(ready)))
        assert all(parent in finished for parent in deps[step])
        assert core.running(step)
        finished.add(step)
        new = core.succeeded(step)
        assert not released_once & set(new), "a step was released twice"
        released_once |= set(new)
        ready.extend(new)
    assert finished == set(deps)
    assert core.job_state is JobState.SUCCEEDED


@given(dags(), st.data())
@settings(max_examples=150, deadline=None)
def test_a_failure_never_lets_a_descendant_run(deps: dict[str, list[str]], data: st.DataObject) -> None:
    core = PlannerCore(deps, fail_fast=data.draw(st.booleans()))
    ready = core.start()
    failing = data.draw(st.sampled_from(sorted(deps)))
    failed: set[str] = set()
    ran: set[str] = set()
    while ready:
        step = ready.pop(0)
        if not core.running(step):
            continue
        assert not any(parent in failed for parent in deps[step])
        ran.add(step)
        if step == failing:
            failed.add(step)
            core.failed(step)
        else:
            ready.extend(core.succeeded(step))
    assert core.finished
    assert core.job_state is (JobState.FAILED if failing in ran else JobState.SUCCEEDED)


def test_topological_order_handles_long_chains() -> None:
    deps = {f"s{i}": [f"s{i - 1}"] if i else [] for i in range(100_000)}
    order = topological_order(deps)
    assert order[0] == "s0" and order[-1] == "s99999"


def test_restore_without_fail_fast_skips_the_descendants_of_a_stored_failure() -> None:
    """Found by the book's property test: the live run skipped them when the failure came."""
    core = PlannerCore({"a": [], "b": ["a"], "c": ["b"], "d": []}, fail_fast=False)
    restored = core.restore({"a": StepState.FAILED})
    assert sorted(restored.skipped) == ["b", "c"] and restored.publish == ["d"]
    core.succeeded("d")
    assert core.finished and core.job_state is JobState.FAILED
