"""The worker's decision for a step, over every combination of flags (no services)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.worker_control import ControlFlags, Decision, decide, stronger_stop
from shared.messages import StepDispatch
from shared.states import StepState

STOPS = (None, StepState.SKIPPED, StepState.CANCELLED)
FLAGS = [ControlFlags(claim, stop) for claim in (False, True) for stop in STOPS]


def dispatch(claim: bool = False) -> StepDispatch:
    return StepDispatch(job_id="j1", step="s", attempt=1, device="cpu", claim=claim)


def oracle(claim: bool, redelivered: bool, record: ControlFlags, control: ControlFlags | None) -> Decision:
    """The protocol, written out independently of the implementation."""
    stops = {record.stop} | ({control.stop} if control else set())
    if StepState.CANCELLED in stops:
        return Decision.CANCEL
    if StepState.SKIPPED in stops:
        return Decision.SKIP
    if claim or redelivered or record.claim or (control is not None and control.claim):
        return Decision.CLAIM
    return Decision.RUN


@pytest.mark.parametrize(("claim", "redelivered", "record", "control"),
                         list(itertools.product((False, True), (False, True), FLAGS, [None, *FLAGS])))
def test_every_combination_follows_the_protocol(claim: bool, redelivered: bool, record: ControlFlags,
                                                control: ControlFlags | None) -> None:
    assert decide(dispatch(claim), redelivered, record, control) is oracle(claim, redelivered, record, control)


@pytest.mark.parametrize(("claim", "redelivered", "record", "control", "expected"), [
    (False, False, ControlFlags(), None, Decision.RUN),
    (True, False, ControlFlags(), None, Decision.CLAIM),
    (False, True, ControlFlags(), None, Decision.CLAIM),
    (False, False, ControlFlags(claim=True), None, Decision.CLAIM),
    (False, False, ControlFlags(), ControlFlags(claim=True), Decision.CLAIM),
    (False, False, ControlFlags(), ControlFlags(), Decision.RUN),
    (False, False, ControlFlags(stop=StepState.SKIPPED), None, Decision.SKIP),
    (False, False, ControlFlags(), ControlFlags(stop=StepState.CANCELLED), Decision.CANCEL),
    (True, True, ControlFlags(claim=True, stop=StepState.SKIPPED), None, Decision.SKIP),
    (False, False, ControlFlags(stop=StepState.SKIPPED), ControlFlags(stop=StepState.CANCELLED), Decision.CANCEL),
    (False, False, ControlFlags(stop=StepState.CANCELLED), ControlFlags(stop=StepState.SKIPPED), Decision.CANCEL),
    (False, False, ControlFlags(stop=StepState.SKIPPED), ControlFlags(claim=True), Decision.SKIP),
])
def test_decision_table(claim: bool, redelivered: bool, record: ControlFlags, control: ControlFlags | None,
                        expected: Decision) -> None:
    assert decide(dispatch(claim), redelivered, record, control) is expected


flags = st.builds(ControlFlags, st.booleans(), st.sampled_from(STOPS))


@given(st.booleans(), st.booleans(), flags, st.none() | flags)
def test_stop_wins_and_only_the_fast_path_runs_unclaimed(claim: bool, redelivered: bool, record: ControlFlags,
                                                        control: ControlFlags | None) -> None:
    decision = decide(dispatch(claim), redelivered, record, control)
    effective = record.merged(control)
    assert decision.stop == effective.stop
    if decision is Decision.RUN:
        assert not (claim or redelivered or effective.claim or effective.stop)
    # the OR of both sources: which one carries a flag does not matter
    if control is not None:
        assert decide(dispatch(claim), redelivered, control, record) is decision


def test_stop_states_of_decisions() -> None:
    assert Decision.SKIP.stop is StepState.SKIPPED
    assert Decision.CANCEL.stop is StepState.CANCELLED
    assert Decision.RUN.stop is None and Decision.CLAIM.stop is None


@pytest.mark.parametrize(("first", "second", "expected"), [
    (None, None, None),
    (StepState.SKIPPED, None, StepState.SKIPPED),
    (None, StepState.CANCELLED, StepState.CANCELLED),
    (StepState.SKIPPED, StepState.CANCELLED, StepState.CANCELLED),
    (StepState.RUNNING, None, None),  # not a stop state: ignored
    (StepState.FAILED, StepState.SKIPPED, StepState.SKIPPED),
])
def test_stronger_stop(first: StepState | None, second: StepState | None, expected: StepState | None) -> None:
    assert stronger_stop(first, second) is expected
