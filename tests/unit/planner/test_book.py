"""The job book, decision by decision: each defect of issue 8 as a scenario without services."""

from __future__ import annotations

import pytest

from shared.messages import StepNotice
from shared.planner.book import MAX_BATCH, MIN_MESSAGES, JobBook, JobPlan, StoredStep
from shared.planner.effects import (
    ControlJob,
    Emit,
    FailStep,
    FinishJob,
    Publish,
    RejectJob,
    ReserveSeq,
    StartJob,
    StopSteps,
)
from shared.states import ErrorKind, JobState, StepState
from tests.unit.planner.book_world import JOB, Violation, World

BESIDE = JobPlan({"boom": [], "long": [], "after_boom": ["boom"], "after_long": ["long"]},
                 dict.fromkeys(["boom", "long", "after_boom", "after_long"], "cpu"))


def _world(plan: JobPlan) -> World:
    world = World(plan)
    world.submit()
    return world


def _run(world: World, step: str, *, succeeded: bool) -> None:
    index = next(i for i, run in enumerate(world.runs) if run.step == step)
    world.finish(index, succeeded=succeeded)


def _deliver_all(world: World) -> None:
    for device, queue in world.queues.items():
        while queue:
            world.deliver(device, 0)


def test_a_failure_lets_a_running_step_finish_and_record_its_result() -> None:
    world = _world(BESIDE)
    _deliver_all(world)  # boom and long run (long unclaimed, on the fast path)
    _run(world, "boom", succeeded=False)
    world.deliver_notice(0)
    assert world.docs["after_boom"].state is StepState.SKIPPED and world.docs["after_long"].state is StepState.SKIPPED
    assert world.job_state is JobState.RUNNING, "the job finished while long still ran"
    _run(world, "long", succeeded=True)
    world.deliver_notice(0)
    assert world.docs["long"].state is StepState.SUCCEEDED
    assert world.finishes == [JobState.FAILED]


def test_a_restart_after_a_failure_lets_the_running_step_finish() -> None:
    world = _world(BESIDE)
    _deliver_all(world)
    _run(world, "boom", succeeded=False)
    world.deliver_notice(0)
    world.restart()
    assert world.docs["long"].state is StepState.RUNNING  # claimed when told to
    assert world.job_state is JobState.RUNNING
    _run(world, "long", succeeded=True)
    world.deliver_notice(0)
    assert world.docs["long"].state is StepState.SUCCEEDED and world.finishes == [JobState.FAILED]


def test_a_dispatched_step_not_yet_started_is_skipped_by_its_worker_and_reported() -> None:
    world = _world(BESIDE)
    world.deliver("cpu", 0)  # boom runs; long waits in its queue
    _run(world, "boom", succeeded=False)
    world.deliver_notice(0)
    assert world.control == (False, StepState.SKIPPED)
    assert "long" not in world.docs and world.job_state is JobState.RUNNING
    world.deliver("cpu", 0)  # the worker sees the stop word and does not run it
    assert not world.runs and world.docs["long"].state is StepState.SKIPPED
    world.deliver_notice(0)
    assert world.finishes == [JobState.FAILED]


def test_steps_released_in_the_batch_of_a_failure_are_never_sent() -> None:
    world = _world(JobPlan({"a": [], "b": [], "c": ["a"]}, dict.fromkeys("abc", "cpu")))
    _deliver_all(world)
    _run(world, "a", succeeded=True)
    _run(world, "b", succeeded=False)
    world.deliver_all_notices(0)  # a's success releases c in the same batch as b's failure
    assert world.docs["c"].state is StepState.SKIPPED and not world.queues["cpu"]
    assert world.finishes == [JobState.FAILED]


def test_a_dead_lettered_step_without_a_document_fails_and_the_job_moves_on() -> None:
    world = _world(JobPlan({"a": [], "b": ["a"]}, {"a": "cpu", "b": "cpu"}))
    world.dead_letter("cpu", 0, ErrorKind.REJECTED)
    assert world.docs["a"].state is StepState.FAILED
    assert world.finishes == [JobState.FAILED] and world.docs["b"].state is StepState.SKIPPED


def test_a_dead_letter_of_an_older_attempt_or_a_finished_step_changes_nothing() -> None:
    book = JobBook()
    book.accept(JOB, JobPlan({"a": []}, {"a": "cpu"}), 1.0)
    book.requeued(JOB, "a", 2, 2.0)
    effects = book.dead_letter(JOB, "a", 1, "delivery_limit", ErrorKind.LOST, 3.0)
    assert not any(isinstance(e, FailStep) for e in effects)
    (fail,) = [e for e in book.dead_letter(JOB, "a", 2, "delivery_limit", ErrorKind.LOST, 4.0) if isinstance(e, FailStep)]
    assert fail.error.kind is ErrorKind.LOST and "dead-lettered" in fail.error.message


def test_a_restart_never_runs_one_attempt_twice() -> None:
    plan = JobPlan({f"s{i}": [] for i in range(6)}, {f"s{i}": "cpu" for i in range(6)})
    world = _world(plan)
    world.deliver("cpu", 0)
    world.deliver("cpu", 0)  # two run unclaimed, four wait in the queue
    world.restart()  # republishes the unstarted ones with claim; the old copies are still queued
    assert len(world.queues["cpu"]) == 4 + 4
    assert all(message.claim for message in world.queues["cpu"][4:])
    _deliver_all(world)  # every copy: the claim decides; a Violation would be raised on a double run
    assert len(world.runs) == 6
    world.quiesce()
    assert world.finishes == [JobState.SUCCEEDED]


def test_a_restored_job_does_not_dispatch_what_succeeded() -> None:
    book = JobBook()
    plan = JobPlan({"a": [], "b": ["a"], "c": ["b"]}, dict.fromkeys("abc", "cpu"))
    effects = book.restore(JOB, plan, {"a": StoredStep(StepState.SUCCEEDED, 1), "b": StoredStep(StepState.RUNNING, 1)}, 5.0)
    assert not [e for e in effects if isinstance(e, Publish)]
    assert book.job(JOB).core.state("b") is StepState.RUNNING  # type: ignore[union-attr]
    effects = book.notices([StepNotice(job_id=JOB, step="b", attempt=1, outcome=StepState.SUCCEEDED, worker_id="w")], 6.0)
    (publish,) = [e for e in effects if isinstance(e, Publish)]
    assert publish.steps == (("c", 1),) and publish.claim


def test_cancel_ends_the_unstarted_lets_running_steps_finish_and_ends_cancelled() -> None:
    world = _world(JobPlan({"a": [], "b": [], "c": ["a"]}, dict.fromkeys("abc", "cpu")))
    world.deliver("cpu", 0)  # a runs, b is queued
    world.cancel()
    assert world.docs["c"].state is StepState.CANCELLED and world.control[1] is StepState.CANCELLED
    world.deliver("cpu", 0)
    assert world.docs["b"].state is StepState.CANCELLED
    assert world.job_state is JobState.RUNNING
    _run(world, "a", succeeded=True)
    world.quiesce()
    assert world.finishes == [JobState.CANCELLED] and world.docs["a"].state is StepState.SUCCEEDED


def test_cancel_of_an_unknown_job_asks_the_store_to_cancel_it_if_pending() -> None:
    (finish,) = JobBook().cancel("other", 1.0)
    assert isinstance(finish, FinishJob) and finish.state is JobState.CANCELLED


def test_steps_for_a_device_without_a_queue_wait_then_go_once_it_exists() -> None:
    world = World(JobPlan({"g": []}, {"g": "gpu"}))
    world.queue_exists["gpu"] = False
    effects = world.book.accept(JOB, world.plan, 1.0)
    world.apply(effects)
    assert world.docs["g"].state is StepState.WAITING and not world.queues["gpu"]
    world.queue_exists["gpu"] = True
    world.tick()
    assert [m.step for m in world.queues["gpu"]] == ["g"]
    world.tick({"gpu": 1})
    assert world.docs["g"].state is StepState.QUEUED  # no longer waiting


def test_waiting_steps_of_a_stopping_job_end_without_a_worker() -> None:
    world = World(JobPlan({"a": [], "g": []}, {"a": "cpu", "g": "gpu"}))
    world.queue_exists["gpu"] = False
    world.submit()
    world.deliver("cpu", 0)
    _run(world, "a", succeeded=False)
    world.deliver_notice(0)
    assert world.docs["g"].state is StepState.SKIPPED and world.finishes == [JobState.FAILED]


def test_effects_are_ordered_writes_then_events_then_the_finish() -> None:
    book = JobBook()
    accept = book.accept(JOB, JobPlan({"a": []}, {"a": "cpu"}), 1.0)
    assert [type(e) for e in accept] == [ReserveSeq, StartJob, Publish, type(accept[3])]  # numbers reserved first
    effects = book.notices([StepNotice(job_id=JOB, step="a", attempt=1, outcome=StepState.FAILED, worker_id="w")], 2.0)
    kinds = [type(e) for e in effects]
    assert kinds.index(Emit) < kinds.index(FinishJob)
    finish = effects[-1]
    assert isinstance(finish, FinishJob) and finish.state is JobState.FAILED and finish.error is not None
    assert finish.error["step"] == "a" and finish.error["kind"] == ErrorKind.TASK
    assert finish.event.type == "job.failed"
    assert book.notices([StepNotice(job_id=JOB, step="a", attempt=1, outcome=StepState.FAILED, worker_id="w")], 3.0) == []


def test_a_rejected_submission_is_one_effect_with_its_problems_and_event() -> None:
    (reject,) = JobBook().reject("j9", "bad.yaml", ["bad.yaml:3: graph: missing"], 7.0)
    assert isinstance(reject, RejectJob) and reject.problems == ("bad.yaml:3: graph: missing",)
    assert reject.event.type == "job.rejected" and reject.event.job_id == "j9" and reject.event.state == JobState.REJECTED


def test_wide_fan_outs_go_in_batches_and_restored_jobs_ask_for_claims() -> None:
    book = JobBook()
    names = [f"s{i}" for i in range(2000)]
    effects = book.accept(JOB, JobPlan({key: [] for key in names}, dict.fromkeys(names, "cpu")), 1.0)
    publishes = [e for e in effects if isinstance(e, Publish)]
    assert len(publishes) >= MIN_MESSAGES and max(len(p.steps) for p in publishes) <= MAX_BATCH
    assert sum(len(p.steps) for p in publishes) == 2000 and not any(p.claim for p in publishes)
    assert JobBook.restoring("j", None) == [ControlJob("j", claim=True, stop=None)]


def test_the_world_catches_a_book_that_marks_a_running_step_skipped() -> None:
    """The simulated world is a real check: a stop mark over a running step is a violation."""
    world = _world(JobPlan({"a": []}, {"a": "cpu"}))
    world.deliver("cpu", 0)
    with pytest.raises(Violation):
        world.apply([StopSteps(JOB, ("a",), StepState.SKIPPED)])


def test_a_redelivered_old_copy_never_takes_over_the_claim_of_a_restarted_planners_copy() -> None:
    """Found by the property test: a worker dies running a step (its message comes back
    redelivered), the restarted planner republishes the step, a worker claims that copy, and
    the redelivered old copy must not take the running claim over."""
    world = _world(JobPlan({"s0": []}, {"s0": "cpu"}))
    world.deliver("cpu", 0)
    world.lose_worker(0)
    world.restart()
    world.deliver("cpu", 1)  # the restarted planner's copy: claimed, running
    world.deliver("cpu", 0)  # the redelivered old copy: its take-over must fail
    assert len(world.runs) == 1
    world.quiesce()
    assert world.finishes == [JobState.SUCCEEDED]


def test_a_retried_attempt_waits_for_its_time_without_a_message_then_goes_as_the_next_attempt() -> None:
    book = JobBook()
    book.accept(JOB, JobPlan({"a": [], "b": ["a"]}, {"a": "cpu", "b": "cpu"}), 1.0)
    from shared.messages import StepErrorInfo

    flaky = StepNotice(job_id=JOB, step="a", attempt=1, outcome=StepState.FAILED, worker_id="w",
                       error=StepErrorInfo(type="Flaky", message="try again"), retry_at=11.0)
    effects = book.notices([flaky], 2.0)
    (emit,) = [e for e in effects if isinstance(e, Emit)]
    assert [(e.type, e.attempt, e.detail["delay_s"]) for e in emit.events] == [("step.retrying", 2, 9.0)]
    assert not [e for e in effects if isinstance(e, (Publish, FinishJob))]
    assert book.due(10.0) == [] and book.tick(10.0).devices == frozenset()  # not waiting for a worker meanwhile
    assert book.next_due() == 11.0
    assert not [e for e in book.notices([flaky], 10.5) if isinstance(e, Emit)], "the same report again (found in MongoDB)"
    assert book.next_due() == 11.0
    (publish, _) = book.due(11.0)
    assert isinstance(publish, Publish) and publish.steps == (("a", 2),)
    assert book.due(12.0) == [] and book.next_due() is None
    assert book.notices([flaky], 13.0) == [] and book.due(20.0) == [], "a late copy of the report must not send attempt 2 again"


def test_a_pending_retry_of_a_stopping_job_ends_unstarted() -> None:
    world = _world(JobPlan({"a": [], "b": []}, {"a": "cpu", "b": "cpu"}))
    _deliver_all(world)
    _run(world, "a", succeeded=False)
    world.finish(0, succeeded=False, retry=True)  # b fails but will retry
    world.deliver_all_notices(1)  # b's retry report first, then a's failure
    assert world.docs["b"].state is StepState.SKIPPED and world.finishes == [JobState.FAILED]


def test_a_restored_retry_keeps_its_time() -> None:
    book = JobBook()
    effects = book.restore(JOB, JobPlan({"a": []}, {"a": "cpu"}), {"a": StoredStep(StepState.QUEUED, 2, retry_at=50.0)}, 40.0)
    assert not [e for e in effects if isinstance(e, Publish)]
    assert [e.steps for e in book.due(50.0) if isinstance(e, Publish)] == [(("a", 2),)]


# workers' progress (issue 10, item 4) ---------------------------------------------------------

CHAIN = JobPlan({"a": [], "b": ["a"]}, {"a": "cpu", "b": "cpu"})


def _events(effects: list) -> list:
    return [event for effect in effects if isinstance(effect, Emit) for event in effect.events]


def test_a_publish_confirm_naming_steps_the_job_never_had_changes_nothing() -> None:
    """Once a KeyError: a confirm is the broker's word about a message, not a step's state."""
    book = JobBook()
    book.accept(JOB, CHAIN, 1.0)
    assert book.routed(JOB, ["nope"], True, 1.5) == []
    assert book.routed(JOB, ["nope"], False, 1.6) == []
    assert book.job(JOB).core.state("a") is StepState.QUEUED  # type: ignore[union-attr]


def test_a_started_report_becomes_the_jobs_next_numbered_running_event() -> None:
    book = JobBook()
    book.accept(JOB, CHAIN, 1.0)  # job.running: 1
    book.routed(JOB, ["a"], True, 1.5)  # step.queued: 2
    assert book.ready.is_ready(JOB, "a")
    effects = book.started(JOB, "a", 1, "cpu-w1", 2.0)
    (event,) = _events(effects)
    assert (event.type, event.step, event.attempt, event.worker_id, event.state, event.at) == (
        "step.running", "a", 1, "cpu-w1", StepState.RUNNING, 2.0)
    assert event.seq == 3 and not any(isinstance(e, ReserveSeq) for e in effects), "within the first reserved block"
    assert not book.ready.is_ready(JOB, "a"), "a started step is no longer waiting to start"
    assert book.job(JOB).core.state("a") is StepState.QUEUED  # type: ignore[union-attr]  # decides nothing


def test_started_reports_of_unknown_jobs_and_steps_of_past_attempts_or_finished_steps_are_dropped() -> None:
    book = JobBook()
    book.accept(JOB, CHAIN, 1.0)
    assert book.started("other", "a", 1, "w", 2.0) == []
    assert book.started(JOB, "nope", 1, "w", 2.0) == []
    assert book.started(JOB, "b", 1, "w", 2.0) == [], "b was never dispatched"
    assert book.lease_expired(JOB, "a", 1, "w-old", 3.0)
    book.requeued(JOB, "a", 2, 3.0)
    assert book.started(JOB, "a", 1, "w-old", 4.0) == [], "attempt 1 lost its lease: its report is stale"
    assert [e.worker_id for e in _events(book.started(JOB, "a", 2, "w-new", 4.0))] == ["w-new"]
    book.notices([StepNotice(job_id=JOB, step="a", attempt=2, outcome=StepState.SUCCEEDED, worker_id="w-new")], 5.0)
    assert book.started(JOB, "a", 2, "w-new", 6.0) == [], "a report that comes after the step's end"


def test_progress_reports_come_out_as_one_emit_per_job_in_their_order() -> None:
    from shared.messages import Progress, StepProgress

    book = JobBook()
    for job_id in ("j1", "j2"):
        book.accept(job_id, JobPlan({"a": []}, {"a": "cpu"}), 1.0)
    reports = [StepProgress(job_id="j1", step="a", attempt=1, worker_id="w1", progress=Progress.RUNNING),
               StepProgress(job_id="j2", step="a", attempt=1, worker_id="w2", progress=Progress.RUNNING),
               StepProgress(job_id="j1", step="a", attempt=1, worker_id="w1", progress=Progress.TIMEOUT_WARNING, elapsed_s=8.0,
                            timeout_s=10.0),
               StepProgress(job_id="j3", step="a", attempt=1, worker_id="w3", progress=Progress.RUNNING)]
    emits = [e for e in book.progress(reports, 3.0) if isinstance(e, Emit)]
    assert [(e.job_id, [(ev.type, ev.seq) for ev in e.events]) for e in emits] == [
        ("j1", [("step.running", 2), ("step.timeout_warning", 3)]), ("j2", [("step.running", 2)])]
    assert emits[0].events[1].detail == {"elapsed_s": 8.0, "timeout_s": 10.0}
    (warning,) = _events(book.timeout_warning("j2", "a", 1, "w2", 9.5, 10.0, 4.0))
    assert warning.type == "step.timeout_warning" and warning.seq == 3 and warning.detail["elapsed_s"] == 9.5


def test_in_the_world_fast_steps_are_reported_running_before_their_end() -> None:
    world = _world(CHAIN)
    _deliver_all(world)
    world.report_started(0)
    _run(world, "a", succeeded=True)
    world.deliver_notice(0)
    world.quiesce()
    assert [(e.step, e.attempt) for e in world.running_events] == [("a", 1), ("b", 1)]
    assert all(e.worker_id and e.worker_id.startswith("w") for e in world.running_events)
    world.check_event_numbers()
    assert sorted(world.seqs) == list(range(1, len(world.seqs) + 1))
