"""Options of `theodolite jobs` / `submit --label`: ages, times, labels and their limits."""

from __future__ import annotations

import contextlib
import gc
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from click.testing import CliRunner

from services.cli import main
from services.cluster import free_port
from services.jobs_cli import parse_label_filters, parse_since
from shared.labels import MAX_LABELS, parse_labels
from shared.messages import JobSubmission
from shared.states import JobState
from shared.store.queries import JobQuery

NOW = 1_700_000_000.0


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("2h", 7200), ("1d", 86400), ("45s", 45), ("1.5h", 5400),
                                               ("2w", 14 * 86400), (" 10 m ", 600)])
def test_since_ages(text: str, seconds: float) -> None:
    assert parse_since(text, NOW) == NOW - seconds


def test_since_times() -> None:
    assert parse_since("2024-05-01T12:00:00Z", NOW) == datetime(2024, 5, 1, 12, tzinfo=UTC).timestamp()
    assert parse_since("2024-05-01T12:00:00+02:00", NOW) == datetime(2024, 5, 1, 10, tzinfo=UTC).timestamp()
    assert parse_since("2024-05-01T12:00", NOW) == datetime(2024, 5, 1, 12).astimezone().timestamp()  # local time
    assert parse_since("2024-05-01", NOW) == datetime(2024, 5, 1).astimezone().timestamp()


@pytest.mark.parametrize("text", ["yesterday", "30", "5y", "m30", "", "2024-13-01"])
def test_bad_since_is_one_line(text: str) -> None:
    with pytest.raises(ValueError, match="expected a duration like 30m") as caught:
        parse_since(text, NOW)
    assert "\n" not in str(caught.value)


def test_label_filters_take_values_or_bare_keys() -> None:
    assert parse_label_filters(["team=vision", "run", "empty="]) == {"team": "vision", "run": None, "empty": ""}
    with pytest.raises(ValueError, match="given twice"):
        parse_label_filters(["a=1", "a=2"])
    with pytest.raises(ValueError, match="label key 'a.b'"):
        parse_label_filters(["a.b=1"])


def test_submission_labels_are_checked() -> None:
    assert parse_labels(["team=vision", "eps=0.1=x"]) == {"team": "vision", "eps": "0.1=x"}
    for bad, message in [(["team"], "expected KEY=VALUE"), (["a=1", "a=2"], "given twice"), (["-a=1"], "label key '-a'"),
                         (["$where=1"], "label key"), ([f"{'k' * 64}=1"], "longer than 63"), (["a=" + "v" * 257], "longer than 256"),
                         (["a=x\ty"], "control character"), ([f"k{i}=v" for i in range(MAX_LABELS + 1)], "at most 32")]:
        with pytest.raises(ValueError, match=message):
            parse_labels(bad)


def test_job_submission_enforces_the_same_limits() -> None:
    assert JobSubmission(document="x", labels={"team": "vision"}).labels == {"team": "vision"}
    assert JobSubmission(document="x").labels == {}
    for bad in [{"a.b": "x"}, {"a": "v" * 257}, {f"k{i}": "v" for i in range(MAX_LABELS + 1)}, {"a": "line\nbreak"}]:
        with pytest.raises(ValueError):
            JobSubmission(document="x", labels=bad)


def test_query_filter() -> None:
    query = JobQuery(states=[JobState.RUNNING, JobState.FAILED], labels={"team": "vision", "run": None}, since=NOW)
    assert query.match() == {"state": {"$in": ["running", "failed"]}, "labels.team": "vision",
                             "labels.run": {"$exists": True}, "created_at": {"$gte": NOW}}
    assert JobQuery().match() == {} and JobQuery().limit == 50


def test_bad_options_are_usage_errors_before_any_connection() -> None:
    runner = CliRunner()
    result = runner.invoke(main, ["jobs", "--since", "soon"])
    assert result.exit_code == 2 and "Invalid value for --since" in result.stderr
    result = runner.invoke(main, ["jobs", "--state", "lost"])
    assert result.exit_code == 2
    result = runner.invoke(main, ["submit", "job.yaml", "--label", "no-value"])
    assert result.exit_code == 2 and "expected KEY=VALUE" in result.stderr


@contextlib.contextmanager
def pymongo_socket_leak_tolerated() -> Iterator[None]:
    """PyMongo's async monitor leaks its socket when ``close()`` cancels it mid-connect (see
    tests/unit/distributed/test_cluster_file.py); its ResourceWarning is collected here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        yield
        gc.collect()


def test_unreachable_mongo_is_one_error_line() -> None:
    url = f"mongodb://127.0.0.1:{free_port()}"
    env = {"THEODOLITE_MONGO_URL": url, "THEODOLITE_CONNECT_TIMEOUT_S": "0.3"}
    for args in (["jobs"], ["status", "abc", "--json"]):
        with pymongo_socket_leak_tolerated():
            result = CliRunner(env=env).invoke(main, args)
        assert result.exit_code == 1, result.output
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: cannot reach MongoDB at {url} (tried for "), lines
        assert result.stdout == ""
