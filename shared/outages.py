"""Waiting out RabbitMQ and MongoDB outages: what counts as one, and how long to wait between tries.

A *transient* error is one a restart of RabbitMQ or MongoDB causes and that trying again later
mends: PyMongo's connection failures (``AutoReconnect``, ``ServerSelectionTimeoutError``,
``NetworkTimeout``), errors it labels retryable, a lost RabbitMQ connection, an OS-level
connection error. Anything else (a bad document, a duplicate key, a refused login) is not
retried here: the caller decides as before.

* :func:`retried_read` makes a store *read* wait an outage out (reads are idempotent), for up to
  ``settings.store_retry_s``; writes are not wrapped (a write whose answer was lost may have
  been applied: their callers retry them where a second application is harmless).
* :func:`backoff_s` is the one schedule (exponential, capped, with jitter) the services use
  between tries; :class:`Streak` turns a run of failures into two log lines (the first failure,
  the recovery with its duration) instead of one per try.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, ParamSpec, TypeVar

import aiormq.exceptions
from pymongo.errors import ConnectionFailure, PyMongoError

from shared.distributed_errors import BrokerUnavailable, StoreUnreachable

P = ParamSpec("P")
T = TypeVar("T")
log = logging.getLogger("theodolite.outages")

RETRYABLE_LABELS = ("RetryableWriteError", "TransientTransactionError", "RetryableError")


def transient(error: BaseException) -> bool:
    """Whether ``error`` is an outage of RabbitMQ or MongoDB that trying again later mends."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:  # a translated error keeps its cause
        seen.add(id(current))
        if isinstance(current, (ConnectionFailure, StoreUnreachable, BrokerUnavailable, aiormq.exceptions.AMQPConnectionError,
                                OSError)):
            return True
        if isinstance(current, PyMongoError) and any(current.has_error_label(label) for label in RETRYABLE_LABELS):
            return True
        current = current.__cause__
    return False


def backoff_s(attempt: int, *, first_s: float = 0.5, max_s: float = 5.0, jitter: float = 0.25,
              rng: Callable[[], float] = random.random) -> float:
    """Seconds before try number ``attempt + 1`` (``attempt`` >= 1 failures so far):
    ``first_s`` doubling up to ``max_s``, each stretched by up to ``jitter`` (a fraction) so that
    services that failed together do not come back together."""
    base = min(max_s, first_s * 2 ** max(attempt - 1, 0))
    return base * (1.0 + jitter * rng())


def short(error: BaseException) -> str:
    """``AutoReconnect: localhost:27017: connection refused`` — one line, no topology dump."""
    text = str(error).split(", Timeout:")[0].split(", full error:")[0].split(" (configured timeouts")[0].strip()
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


class Streak:
    """A run of failures of one thing (``what``): logs the first failure and the recovery."""

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self.logger = logger
        self.what = what
        self.failures = 0
        self._since = 0.0

    def failed(self, error: BaseException, retry_in_s: float | None = None) -> None:
        self.failures += 1
        if self.failures == 1:
            self._since = time.monotonic()
            later = f"; retrying in {retry_in_s:.1f} s" if retry_in_s is not None else "; retrying"
            self.logger.warning("%s failed (%s)%s", self.what, short(error), later)

    def succeeded(self) -> None:
        if self.failures:
            self.logger.warning("%s works again after %.1f s (%d failed tries)", self.what, time.monotonic() - self._since,
                                self.failures)
        self.failures = 0


def retried_read(method: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
    """Decorates a ``Store`` read: a transient failure is tried again with backoff until
    ``self.settings.store_retry_s`` has passed, then raised. One warning per waiting call."""

    @functools.wraps(method)
    async def read(*args: P.args, **kwargs: P.kwargs) -> T:
        store: Any = args[0]
        deadline = time.monotonic() + float(getattr(store.settings, "store_retry_s", 0.0))
        attempt = 0
        while True:
            try:
                return await method(*args, **kwargs)
            except Exception as error:
                if not transient(error) or time.monotonic() >= deadline:
                    raise
                attempt += 1
                delay = min(backoff_s(attempt), max(deadline - time.monotonic(), 0.0))
                if attempt == 1:
                    log.warning("MongoDB read %s failed (%s); retrying with backoff for up to %.0f s",
                                method.__name__, short(error), max(deadline - time.monotonic(), 0.0))
                await asyncio.sleep(delay)

    return read
