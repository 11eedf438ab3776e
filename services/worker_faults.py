"""Infrastructure failures around a step, and how long to wait before handing its delivery back.

A step fails only by its own doing (its task raised or timed out) or because its message
cannot be served (its job is gone). When MongoDB, GridFS or the codec fail *around* the task
(reading the job or its inputs, claiming, stopping, writing the result), the step has not
failed: the worker hands the whole delivery back to RabbitMQ after a backoff, and the
quorum queue's delivery limit bounds how often that happens (past it the message is
dead-lettered and the planner records the step failed).
"""

from __future__ import annotations

from collections.abc import Mapping

import tenacity
from pymongo.errors import PyMongoError

from shared.distributed_errors import CodecError, StoreError

BACKOFF_MAX_S = 30.0
BACKOFF_JITTER_S = 1.0
DELIVERY_COUNT_HEADER = "x-delivery-count"
"""Set by quorum queues on a redelivery: how many times the message was delivered before."""

INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (PyMongoError, StoreError, CodecError, OSError)
"""PyMongoError covers GridFS errors (``gridfs.errors.GridFSError``); OSError covers
connection resets and timeouts below the driver."""

_wait = tenacity.wait_exponential_jitter(max=BACKOFF_MAX_S, jitter=BACKOFF_JITTER_S)


def is_infrastructure(error: BaseException) -> bool:
    """Whether ``error``, raised around a task (never by it), is the store's or the codec's
    failure rather than the step's. Only meaningful for errors outside the task's own call:
    a task that raises OSError has failed."""
    return isinstance(error, INFRASTRUCTURE_ERRORS)


def delivery_number(headers: Mapping[str, object] | None) -> int:
    """Which delivery of its message this is: 1 for the first (no ``x-delivery-count``)."""
    raw = (headers or {}).get(DELIVERY_COUNT_HEADER)
    try:
        previous = int(raw) if isinstance(raw, (int, str, bytes)) else 0
    except ValueError:
        previous = 0
    return 1 + max(previous, 0)


def backoff_s(delivery: int) -> float:
    """Seconds to wait before handing back the ``delivery``-th delivery of a message: about
    1, 2, 4, ... s (plus up to 1 s of jitter, so workers that failed together do not come
    back together), at most :data:`BACKOFF_MAX_S`."""
    state = tenacity.RetryCallState(retry_object=tenacity.Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = max(delivery, 1)
    return float(_wait(state))
