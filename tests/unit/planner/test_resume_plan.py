"""Which steps a resume runs again (shared/planner/resume_plan.py)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from shared.planner.resume_plan import descendants, plan_resume
from shared.states import JobState, StepState

DIAMOND = {"a": [], "b": ["a"], "c": ["a"], "d": ["b", "c"], "e": []}


def test_a_failed_job_reruns_what_did_not_succeed() -> None:
    stored = {"a": StepState.SUCCEEDED, "b": StepState.FAILED, "c": StepState.SUCCEEDED, "d": StepState.SKIPPED}
    plan = plan_resume(JobState.FAILED, DIAMOND, stored)
    assert plan.ok and plan.rerun == ["b", "d", "e"]  # e never ran (absent)


def test_from_adds_named_steps_and_descendants_even_in_a_succeeded_job() -> None:
    stored = {name: StepState.SUCCEEDED for name in DIAMOND}
    assert plan_resume(JobState.SUCCEEDED, DIAMOND, stored, ["c"]).rerun == ["c", "d"]
    assert plan_resume(JobState.SUCCEEDED, DIAMOND, stored).problems == ["the job succeeded: name steps to run again with --from"]


def test_problems_are_named() -> None:
    assert plan_resume(JobState.RUNNING, DIAMOND, {}).problems == ["the job is running: only a job that has ended can be resumed"]
    assert "rejected" in plan_resume(JobState.REJECTED, DIAMOND, {}).problems[0]
    plan = plan_resume(JobState.FAILED, DIAMOND, {}, ["zz"], ["n", "k"], ["k"])
    assert plan.problems == ["no step named 'zz' in the job", "no parameter named 'n' in the job's document (it has k)"]


names = st.sampled_from(list("abcdefgh"))


@st.composite
def graphs(draw: st.DrawFn) -> dict[str, list[str]]:
    order = draw(st.permutations(list("abcdefgh")))
    return {name: sorted(set(draw(st.lists(st.sampled_from(order[:index]), max_size=3)))) if index else []
            for index, name in enumerate(order)}


@given(graphs(), st.dictionaries(names, st.sampled_from(list(StepState))), st.lists(names, max_size=3),
       st.sampled_from([JobState.FAILED, JobState.CANCELLED]))
def test_the_rerun_set_is_what_did_not_succeed_plus_the_from_closure(graph: dict[str, list[str]], stored: dict[str, StepState],
                                                                     from_steps: list[str], state: JobState) -> None:
    plan = plan_resume(state, graph, stored, from_steps)
    assert plan.ok
    rerun = set(plan.rerun)
    assert {n for n in graph if stored.get(n) is not StepState.SUCCEEDED} <= rerun
    assert set(from_steps) | descendants(graph, from_steps) <= rerun
    kept = set(graph) - rerun
    assert all(stored.get(n) is StepState.SUCCEEDED for n in kept), "only succeeded steps keep their outputs"
    assert plan.rerun == [n for n in graph if n in rerun], "document order"
    # every step that runs again has every upstream step either kept (with outputs) or running again
    assert all(parent in kept or parent in rerun for n in rerun for parent in graph[n])
