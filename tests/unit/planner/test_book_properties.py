"""The job book under random interleavings (hypothesis), in the simulated world of
``book_world.py``: random DAGs on two devices; deliveries, successes and failures,
duplicate and late reports, worker deaths, dead letters, lease expiries, cancels and
planner restarts (a new book restored from what the old one's effects wrote).

Invariants, checked as the world runs (``Violation``) and at the end:

* nothing is dispatched after a fail-fast failure or a cancel except retries of steps
  that were running; no succeeded step is dispatched again (restores included);
* a step is never marked skipped or cancelled while a worker runs it, and no finished
  result is discarded because of such a mark;
* two workers never run one attempt of a step at once;
* the job finishes only when no step of it runs and every step is finished in the store,
  and, once everything has been delivered, it always finishes: in exactly one terminal
  state, the one its steps imply;
* with workers' "started" reports interleaved anywhere (late, stale, after a restart): every
  event of the job is numbered, within a reservation that was written before it, never twice
  (restarts included), each planner's numbers without a hole, and no step is reported
  running after its final event.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.planner.book import JobPlan
from shared.states import ErrorKind, JobState, StepState
from tests.unit.planner.book_world import World

ACTIONS = ("deliver", "succeed", "fail", "retry", "notice", "duplicate", "batch", "lose", "vanish", "claim", "dead", "lease", "tick",
           "restart", "cancel", "gpu", "started")


@st.composite
def plans(draw: st.DrawFn) -> JobPlan:
    size = draw(st.integers(min_value=1, max_value=12))
    names = [f"s{i}" for i in range(size)]
    deps = {name: sorted(set(draw(st.lists(st.sampled_from(names[:i]), max_size=3)))) if i else [] for i, name in enumerate(names)}
    devices = {name: draw(st.sampled_from(["cpu", "cpu", "gpu"])) for name in names}
    return JobPlan(deps, devices, fail_fast=draw(st.booleans()))


def _act(world: World, action: str, index: int) -> None:
    device = "gpu" if index % 3 == 0 else "cpu"
    match action:
        case "deliver":
            if device in world.queues and (device == "cpu" or world.queue_exists.get("gpu")):
                world.deliver(device, index)
        case "succeed" | "fail":
            world.finish(index, succeeded=action == "succeed")
        case "retry":
            world.finish(index, succeeded=False, retry=True)
        case "notice" | "duplicate":
            world.deliver_notice(index, duplicate=action == "duplicate")
        case "batch":
            world.deliver_all_notices(index)
        case "lose":
            world.lose_worker(index)
        case "vanish":
            world.vanish(index)
        case "claim":
            world.claim_after(index)
        case "dead":
            if device in world.queues:
                world.dead_letter(device, index, ErrorKind.LOST if index % 2 else ErrorKind.REJECTED)
        case "lease":
            world.expire_lease(index)
        case "tick":
            world.tick()
        case "restart":
            world.restart()
        case "cancel":
            world.cancel()
        case "started":
            world.report_started(index)
        case "gpu":
            if "gpu" in world.queue_exists:
                world.queue_exists["gpu"] = True


@given(plans(), st.booleans(), st.lists(st.tuples(st.sampled_from(ACTIONS), st.integers(0, 50)), max_size=80))
@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_book_keeps_its_invariants_under_any_interleaving(plan: JobPlan, gpu_up: bool, actions: list[tuple[str, int]]) -> None:
    world = World(plan)
    if "gpu" in world.queue_exists:
        world.queue_exists["gpu"] = gpu_up
    world.submit()
    for action, index in actions:
        _act(world, action, index)
    world.quiesce()
    assert len(world.finishes) == 1, world.finishes
    states = {name: world.docs[name].state for name in plan.dependencies}
    expected = (JobState.CANCELLED if world.cancelled and world.finishes[0] is JobState.CANCELLED
                else JobState.FAILED if StepState.FAILED in states.values() else JobState.SUCCEEDED)
    if world.cancelled and StepState.CANCELLED not in states.values():
        expected = world.finishes[0]  # the cancel came when nothing was left to cancel
    assert world.finishes[0] is expected, (world.finishes, states)
    assert len(world.book) == 0, "the finished job is still in the book"
    world.check_event_numbers()
    numbered = len(world.seqs)
    while world.progress:  # reports that come after the end change nothing
        world.report_started(0)
    assert len(world.seqs) == numbered, "a report after the job's end made an event"


@given(plans(), st.lists(st.tuples(st.sampled_from(("deliver", "succeed", "retry", "notice", "batch", "restart", "claim", "tick",
                                                     "lose")),
                                   st.integers(0, 50)),
                         max_size=60))
@settings(max_examples=200, deadline=None)
def test_without_failures_every_step_succeeds_once_and_nothing_is_skipped(plan: JobPlan, actions: list[tuple[str, int]]) -> None:
    world = World(plan)
    world.submit()
    for action, index in actions:
        _act(world, action, index)
    world.quiesce()
    assert world.finishes == [JobState.SUCCEEDED]
    assert all(world.docs[name].state is StepState.SUCCEEDED for name in plan.dependencies)
