"""Which errors around a task are the infrastructure's, and the backoff before a hand-back."""

from __future__ import annotations

import statistics

import pytest
from gridfs.errors import CorruptGridFile, NoFile
from pymongo.errors import (
    AutoReconnect,
    DuplicateKeyError,
    NetworkTimeout,
    OperationFailure,
    ServerSelectionTimeoutError,
)

from services.worker_faults import (
    BACKOFF_JITTER_S,
    BACKOFF_MAX_S,
    backoff_s,
    delivery_number,
    is_infrastructure,
)
from shared.distributed_errors import CodecError, MessageError, StoreError, StoreUnreachable
from shared.errors import PluginLoadError, StepTimeoutError


@pytest.mark.parametrize("error", [
    AutoReconnect("primary stepped down"),
    NetworkTimeout("timed out"),
    ServerSelectionTimeoutError("no servers"),
    OperationFailure("not authorized"),
    DuplicateKeyError("E11000"),
    NoFile("no file"),
    CorruptGridFile("truncated"),
    StoreError("recording step results failed"),
    StoreUnreachable("mongodb://h", "connection refused"),
    CodecError("a.b", "checksum mismatch"),
    OSError("disk"),
    ConnectionResetError("reset by peer"),
    TimeoutError(),
], ids=lambda e: type(e).__name__)
def test_store_gridfs_codec_and_os_errors_are_infrastructure(error: BaseException) -> None:
    assert is_infrastructure(error)


@pytest.mark.parametrize("error", [
    ValueError("bad"), KeyError("x"), RuntimeError("boom"), LookupError("job gone"),
    StepTimeoutError("s", 1.0), PluginLoadError("m.f", "no module"), MessageError("invalid"),
    SystemExit(3), KeyboardInterrupt(),
], ids=lambda e: type(e).__name__)
def test_other_errors_are_not(error: BaseException) -> None:
    assert not is_infrastructure(error)


@pytest.mark.parametrize(("headers", "expected"), [
    (None, 1), ({}, 1), ({"x-delivery-count": 0}, 1), ({"x-delivery-count": 1}, 2), ({"x-delivery-count": 4}, 5),
    ({"x-delivery-count": "3"}, 4), ({"x-delivery-count": b"2"}, 3), ({"x-delivery-count": "junk"}, 1),
    ({"x-delivery-count": -2}, 1), ({"x-delivery-count": [1]}, 1),
])
def test_the_delivery_number_comes_from_the_quorum_queue_header(headers: dict[str, object] | None, expected: int) -> None:
    assert delivery_number(headers) == expected


@pytest.mark.parametrize("delivery", [1, 2, 3, 4, 5, 6])
def test_the_backoff_doubles_within_its_jitter(delivery: int) -> None:
    base = min(2.0 ** (delivery - 1), BACKOFF_MAX_S)
    for _ in range(200):
        assert base <= backoff_s(delivery) <= min(base + BACKOFF_JITTER_S, BACKOFF_MAX_S)


def test_the_backoff_grows_then_is_capped() -> None:
    medians = [statistics.median(backoff_s(n) for _ in range(101)) for n in range(1, 9)]
    assert medians[:5] == sorted(medians[:5]) and medians[4] > medians[0] * 8
    assert all(backoff_s(n) <= BACKOFF_MAX_S for n in (6, 10, 50, 10_000))
    assert backoff_s(10_000) == BACKOFF_MAX_S


def test_the_backoff_is_jittered() -> None:
    values = {backoff_s(2) for _ in range(50)}
    assert len(values) > 40  # not one fixed delay: workers that failed together spread out


def test_a_first_delivery_waits_about_a_second() -> None:
    assert 1.0 <= backoff_s(0) <= 1.0 + BACKOFF_JITTER_S  # never below the first step
