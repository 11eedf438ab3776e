"""Per-job event numbers (``Event.seq``): assigned by the book in effect order, reserved in
blocks before use, and never reused when another planner takes the job over."""

from __future__ import annotations

from shared.messages import Event, StepNotice
from shared.planner.book import JobBook, JobPlan, StoredStep
from shared.planner.effects import Effect, Emit, FinishJob, RejectJob, ReserveSeq, StartJob
from shared.planner.numbering import SEQ_BLOCK, EventNumbers, numbered
from shared.states import JobState, StepState

JOB = "j"
CHAIN = JobPlan({"a": [], "b": ["a"]}, {"a": "cpu", "b": "cpu"})


def _seqs(effects: list[Effect]) -> list[int | None]:
    out: list[int | None] = []
    for effect in effects:
        if isinstance(effect, Emit):
            out += [e.seq for e in effect.events]
        elif isinstance(effect, StartJob | FinishJob | RejectJob):
            out.append(effect.event.seq)
    return out


def _reservations(effects: list[Effect]) -> list[ReserveSeq]:
    return [e for e in effects if isinstance(e, ReserveSeq)]


def _succeeded(step: str, attempt: int = 1) -> StepNotice:
    return StepNotice(job_id=JOB, step=step, attempt=attempt, outcome=StepState.SUCCEEDED, worker_id="w")


def test_a_jobs_events_are_numbered_from_one_in_effect_order_across_inputs() -> None:
    book = JobBook()
    accepted = book.accept(JOB, CHAIN, 1.0)
    assert _reservations(accepted) == [ReserveSeq(JOB, 1, SEQ_BLOCK)] and isinstance(accepted[0], ReserveSeq)
    seqs = _seqs(accepted)
    seqs += _seqs(book.routed(JOB, ["a"], True, 2.0))
    seqs += _seqs(book.started(JOB, "a", 1, "w", 3.0))
    done = book.notices([_succeeded("a")], 4.0)
    seqs += _seqs(done)
    seqs += _seqs(book.routed(JOB, ["b"], True, 5.0))
    seqs += _seqs(book.notices([_succeeded("b")], 6.0))
    assert seqs == list(range(1, 8))  # running, queued a, running a, succeeded a, queued b, succeeded b, job.succeeded
    assert not _reservations(done)


def test_numbers_are_reserved_in_blocks_before_the_events_that_use_them() -> None:
    names = [f"s{i}" for i in range(2500)]
    book = JobBook()
    book.accept(JOB, JobPlan({name: [] for name in names}, dict.fromkeys(names, "cpu")), 1.0)
    effects = book.routed(JOB, names, True, 2.0)  # 2,500 step.queued events: numbers 2 to 2501
    assert isinstance(effects[0], ReserveSeq) and effects[0] == ReserveSeq(JOB, 1, 3 * SEQ_BLOCK)
    assert _seqs(effects) == list(range(2, 2502))


def test_a_restored_job_numbers_after_the_stored_reservation_a_gap_never_a_reuse() -> None:
    old = JobBook()
    accepted = old.accept(JOB, CHAIN, 1.0)
    used = _seqs(accepted) + _seqs(old.routed(JOB, ["a"], True, 2.0))
    stored = _reservations(accepted)[-1].upto  # what the job document's event_seq_reserved holds
    new = JobBook()  # a standby took over: it knows the job's event_seq_reserved (1000), not what was published
    effects = new.restore(JOB, CHAIN, {"a": StoredStep(StepState.QUEUED, 1)}, 10.0, event_seq=stored)
    assert _reservations(effects) == [ReserveSeq(JOB, stored + 1, stored + SEQ_BLOCK)]
    restored = _seqs(effects) + _seqs(new.notices([_succeeded("a")], 11.0))
    assert restored[0] == stored + 1 and restored == list(range(stored + 1, stored + 1 + len(restored)))
    assert not set(used) & set(restored), "a number was used twice"
    assert restored[0] - max(u for u in used if u is not None) > 1, "the consumer sees a gap: it may have missed events"
    again = JobBook()  # and a third planner starts after the second one's reservation
    assert _seqs(again.restore(JOB, CHAIN, {"a": StoredStep(StepState.SUCCEEDED, 1)}, 20.0, event_seq=stored + SEQ_BLOCK))[0] == (
        stored + SEQ_BLOCK + 1)


def test_a_rejected_submission_is_event_one_and_a_cancel_of_an_unknown_job_is_left_to_the_shell() -> None:
    book = JobBook()
    (reject,) = book.reject("bad", "bad.yaml", ["bad.yaml:1: nope"], 1.0)
    assert isinstance(reject, RejectJob) and reject.event.seq == 1
    (finish,) = book.cancel("unknown", 2.0)
    assert isinstance(finish, FinishJob) and finish.event.seq is None, "the shell takes a number from the store if it finishes it"


def test_numbered_keeps_numbers_already_given_and_leaves_jobs_it_does_not_know_alone() -> None:
    numbers = EventNumbers.after(41)
    given = Event(type="step.queued", job_id=JOB, step="a", seq=7)
    fresh = Event(type="step.queued", job_id=JOB, step="b")
    other = Event(type="step.queued", job_id="other", step="c")
    effects = numbered([Emit(JOB, (given, fresh)), Emit("other", (other,))], lambda job_id: numbers if job_id == JOB else None)
    assert effects[0] == ReserveSeq(JOB, 42, 41 + SEQ_BLOCK)
    assert _seqs(effects[1:]) == [7, 42, None]
    assert numbers.next == 43 and numbers.reserved_to == 41 + SEQ_BLOCK
    assert numbered([Emit(JOB, (fresh,))], lambda _: numbers)[0] == Emit(JOB, (fresh.model_copy(update={"seq": 43}),))


def test_finish_events_are_numbered_last() -> None:
    book = JobBook()
    book.accept(JOB, JobPlan({"a": []}, {"a": "cpu"}), 1.0)
    effects = book.notices([StepNotice(job_id=JOB, step="a", attempt=1, outcome=StepState.FAILED, worker_id="w")], 2.0)
    finish = effects[-1]
    assert isinstance(finish, FinishJob) and finish.state is JobState.FAILED and finish.event.seq == max(
        s for s in _seqs(effects) if s is not None)
