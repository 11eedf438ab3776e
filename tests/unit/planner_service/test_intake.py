"""The planner's validation of submissions: concurrent, within a budget, never raising."""

from __future__ import annotations

import asyncio
import multiprocessing
import time
from pathlib import Path

import pytest

import services.planner_intake as intake_module
from services.planner_intake import Accepted, Intake, Rejected, plan_of
from shared.messages import JobSubmission
from tests.integration.documents import DIAMOND

PLUGINS = Path(__file__).resolve().parents[2] / "integration" / "testplugins"


def _chain(length: int) -> str:
    lines = ["graph:", "  c0:", "    plus: [0, 1]"]
    for i in range(1, length):
        lines += [f"  c{i}:", f"    plus: [{i}, 1]", f"    dependencies: [c{i - 1}]"]
    return "\n".join(lines) + "\n"


@pytest.fixture
def intake() -> Intake:
    checker = Intake([PLUGINS], timeout_s=30)
    yield checker  # type: ignore[misc]
    checker.close()


async def test_a_valid_document_is_accepted_with_its_bound_parameters_and_plan(intake: Intake) -> None:
    verdict = await intake.check(JobSubmission(document=DIAMOND, parameters={"x": 5}))
    assert isinstance(verdict, Accepted) and verdict.values == {"x": 5}
    plan = plan_of(verdict.document, fail_fast=False)
    assert plan.dependencies["bottom"] == ["left", "right"] and plan.devices["top"] == "cpu" and not plan.fail_fast


async def test_an_invalid_document_is_rejected_with_located_problems(intake: Intake) -> None:
    verdict = await intake.check(JobSubmission(document="graph:\n  a:\n    plus: [$nope, 1]\n", document_name="bad.yaml"))
    assert isinstance(verdict, Rejected) and verdict.problems and verdict.problems[0].startswith("bad.yaml:3:")


async def test_a_validator_that_raises_rejects_that_submission_only(intake: Intake, monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*_: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(intake_module, "check_text", explode)
    verdict = await intake.check(JobSubmission(document=DIAMOND, document_name="deep.yaml"))
    assert isinstance(verdict, Rejected)
    assert "validator failed" in verdict.problems[0] and "RecursionError" in verdict.problems[0]


async def test_a_large_document_over_budget_is_rejected_and_its_validator_killed_without_holding_up_others() -> None:
    checker = Intake([PLUGINS], timeout_s=0.5, inline_bytes=64 * 1024)
    try:
        big = JobSubmission(document=_chain(60_000), document_name="big.yaml")
        slow = asyncio.create_task(checker.check(big))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        small = await checker.check(JobSubmission(document=DIAMOND))
        assert isinstance(small, Accepted) and time.monotonic() - started < 0.4
        verdict = await slow
        assert isinstance(verdict, Rejected) and "budget of 0.5 s" in verdict.problems[0]
        assert verdict.problems[0].startswith("big.yaml:1:")
        assert not multiprocessing.active_children(), "the validation child outlived its budget"
    finally:
        checker.close()


async def test_a_large_valid_document_is_validated_in_a_child_and_accepted() -> None:
    checker = Intake([PLUGINS], timeout_s=60, inline_bytes=1024)
    try:
        verdict = await checker.check(JobSubmission(document=_chain(300)))
        assert isinstance(verdict, Accepted) and len(verdict.document.steps) == 300
    finally:
        checker.close()
