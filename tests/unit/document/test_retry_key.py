"""The step-level ``x-retry`` override and the retry policy it feeds (shared/retry_policy.py)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.document.model import JobDocument
from shared.retry_policy import RetryOverride, RetryPolicy, type_names
from tests.unit.conftest import check

FLAKY = """
graph:
  short:
    tp_flaky: [a]
    x-retry: {retries: 5, backoff_s: 0.5}
  long:
    task: tp_flaky
    args: [b]
    x-retry: {max_backoff_s: 2}
  plain:
    tp_flaky: [c]
"""


def test_a_step_overrides_its_tasks_retry_policy_in_either_form() -> None:
    result = check(FLAKY)
    assert not result.errors, [i.message for i in result.errors]
    document = result.document
    assert document is not None
    assert document.retry_policy("short") == RetryPolicy(retries=5, backoff_s=0.5, max_backoff_s=60.0)
    assert document.retry_policy("long") == RetryPolicy(retries=2, backoff_s=0.05, max_backoff_s=2.0)
    assert document.retry_policy("plain") == RetryPolicy(retries=2, backoff_s=0.05)  # @task(retries=2, backoff_s=0.05)
    again = JobDocument.model_validate_json(document.model_dump_json())  # as the planner stores it
    assert again.retry_policy("short") == document.retry_policy("short")


@pytest.mark.parametrize(("retry", "where", "words"), [
    ("{retries: -1}", "x-retry.retries", "at least 0"),
    ("{retries: 1.5}", "x-retry.retries", "whole number"),
    ("{backoff_s: fast}", "x-retry.backoff_s", "number of seconds"),
    ("{tries: 3}", "x-retry.tries", "unknown key"),
    ("{backoff_s: 5, max_backoff_s: 1}", "x-retry.max_backoff_s", "below"),
    ("3", "x-retry", "must be a mapping"),
])
def test_a_bad_override_is_a_located_problem(retry: str, where: str, words: str) -> None:
    result = check(f"graph:\n  s:\n    tp_flaky: [a]\n    x-retry: {retry}\n")
    assert result.document is None
    (problem,) = [i for i in result.errors if i.code == "step.retry"]
    assert ".".join(str(p) for p in problem.path) == f"graph.s.{where}" and words in problem.message


def test_the_default_wait_doubles_from_one_second_up_to_the_cap_with_a_quarter_of_jitter() -> None:
    policy = RetryPolicy(retries=10)
    rng = random.Random(7)
    for failed, base in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 32.0), (7, 60.0), (10, 60.0)]:
        delays = [policy.delay_s(failed, rng) for _ in range(200)]
        assert base * 0.75 <= min(delays) and max(delays) <= base * 1.25
        assert max(delays) - min(delays) > base * 0.3  # jittered, not constant


@given(st.integers(0, 5), st.integers(1, 8), st.sampled_from(["ValueError", "KeyError", "StepTimeoutError", "SystemExit"]))
def test_which_failures_run_again(retries: int, failed: int, error: str) -> None:
    policy = RetryPolicy(retries=retries, retry_on=("KeyError",))
    names = [error, "Exception", "BaseException"]
    expected = failed <= retries and error != "SystemExit" and error in ("KeyError", "StepTimeoutError")
    assert policy.retries_after(failed, names) is expected


def test_retry_on_matches_base_types_and_an_empty_list_retries_any_exception() -> None:
    assert type_names(KeyError("x"))[:3] == ["KeyError", "LookupError", "Exception"]
    assert RetryPolicy(retries=1, retry_on=("LookupError",)).retries_after(1, type_names(KeyError("x")))
    assert RetryPolicy(retries=1).retries_after(1, type_names(ValueError("x")))
    assert not RetryPolicy(retries=1).retries_after(2, type_names(ValueError("x")))
    assert RetryPolicy(retries=1).overridden(RetryOverride(retries=0)).retries == 0
