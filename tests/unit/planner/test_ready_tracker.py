"""The ready-step tracker (``shared/planner/readiness.py``) alone, and as the job book keeps it.

Alone: any sequence of publishes, starts, finishes and forgets leaves by_device equal to a
plain model (published, minus started, minus finished, minus forgotten jobs): counts never
negative, ages never negative and those of the oldest step, forget removing every step of a
job. In the book: under the random interleavings of ``book_world.py``, every ready step is
one the book's core holds queued (published, not finished), and nothing is left once the
job has finished.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.messages import StepNotice
from shared.planner.book import JobBook, JobPlan
from shared.planner.readiness import ReadyTracker
from shared.states import StepState
from tests.unit.planner.book_world import JOB, World
from tests.unit.planner.test_book_properties import ACTIONS, _act, plans

JOBS = ("a", "b", "c")
STEPS = ("s0", "s1", "s2", "s3")
DEVICES = ("cpu", "gpu")

operations = st.lists(st.one_of(
    st.tuples(st.just("publish"), st.sampled_from(JOBS), st.lists(st.sampled_from(STEPS), max_size=3), st.sampled_from(DEVICES)),
    st.tuples(st.just("start"), st.sampled_from(JOBS), st.sampled_from(STEPS), st.just("")),
    st.tuples(st.just("finish"), st.sampled_from(JOBS), st.sampled_from(STEPS), st.just("")),
    st.tuples(st.just("forget"), st.sampled_from(JOBS), st.just(""), st.just("")),
    st.tuples(st.just("wait"), st.just(""), st.just(""), st.just("")),
), max_size=60)


@given(operations)
@settings(max_examples=300, deadline=None)
def test_by_device_is_published_minus_started_minus_finished(ops: list[tuple[str, str, object, str]]) -> None:
    tracker = ReadyTracker()
    model: dict[tuple[str, str], tuple[str, float]] = {}
    now = 100.0
    for op, job, arg, device in ops:
        now += 1.5
        if op == "publish":
            assert isinstance(arg, list)
            tracker.published(job, arg, device, now)
            for step in arg:
                model.setdefault((job, step), (device, now))  # a step still ready keeps its first time
        elif op in ("start", "finish"):
            assert isinstance(arg, str)
            (tracker.started if op == "start" else tracker.finished)(job, arg)
            model.pop((job, arg), None)
        elif op == "forget":
            tracker.forget(job)
            for key in [k for k in model if k[0] == job]:
                del model[key]
        expected: dict[str, tuple[int, float]] = {}
        for step_device, since in model.values():
            count, age = expected.get(step_device, (0, 0.0))
            expected[step_device] = (count + 1, max(age, now - since))
        seen = tracker.by_device(now)
        assert seen == expected
        assert all(count > 0 and age >= 0 for count, age in seen.values())
        assert len(tracker) == len(model)
        for job_id in JOBS:
            for step in STEPS:
                assert tracker.is_ready(job_id, step) == ((job_id, step) in model)


def test_forget_removes_every_step_of_the_job_and_only_those() -> None:
    tracker = ReadyTracker()
    tracker.published("a", ["x", "y"], "cpu", 10.0)
    tracker.published("b", ["x"], "gpu", 12.0)
    tracker.forget("a")
    assert tracker.by_device(20.0) == {"gpu": (1, 8.0)}
    tracker.forget("a")  # twice: nothing more
    tracker.finished("b", "x")
    tracker.started("b", "x")  # after it finished: no negative count
    assert tracker.by_device(30.0) == {} and len(tracker) == 0


def test_the_book_publishes_into_the_tracker_and_notices_take_steps_out() -> None:
    book = JobBook()
    plan = JobPlan({"a": [], "b": [], "c": ["a", "b"]}, {"a": "cpu", "b": "gpu", "c": "cpu"})
    book.accept("j", plan, 100.0)
    assert book.ready.by_device(103.0) == {"cpu": (1, 3.0), "gpu": (1, 3.0)}
    book.notices([StepNotice(job_id="j", step="a", attempt=1, outcome=StepState.SUCCEEDED, worker_id="w")], 104.0)
    assert book.ready.by_device(105.0) == {"gpu": (1, 5.0)}
    book.notices([StepNotice(job_id="j", step="b", attempt=1, outcome=StepState.SUCCEEDED, worker_id="w")], 106.0)
    assert book.ready.by_device(107.0) == {"cpu": (1, 1.0)}, "c is ready from its own publish"
    book.cancel("j", 108.0)
    book.forget("j")
    assert book.ready.by_device(109.0) == {}


def test_a_requeued_step_is_ready_from_its_new_publish() -> None:
    book = JobBook()
    book.accept("j", JobPlan({"a": []}, {"a": "cpu"}), 100.0)
    book.requeued("j", "a", 2, 150.0)
    assert book.ready.by_device(151.0) == {"cpu": (1, 1.0)}


@given(plans(), st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 50)), max_size=60))
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_in_the_book_ready_steps_are_queued_ones_and_none_outlive_the_job(plan: JobPlan, actions: list[tuple[str, int]]) -> None:
    world = World(plan)
    world.submit()
    for action, index in actions:
        _act(world, action, index)
        job = world.book.job(JOB)
        for step in plan.dependencies:
            if world.book.ready.is_ready(JOB, step):
                assert job is not None and not job.finishing, f"{step} ready in a job the book no longer runs"
                assert job.core.state(step) is StepState.QUEUED, f"{step} ready but {job.core.state(step)} in the core"
        assert all(count > 0 and age >= 0 for count, age in world.book.ready.by_device(world.now).values())
    world.quiesce()
    assert world.book.ready.by_device(world.now) == {} and len(world.book.ready) == 0
