"""Readiness of a service: connected to RabbitMQ and MongoDB, consuming, and (planners) the lease.

``/readyz`` (:mod:`shared.observability.http`) answers from a :class:`Readiness` the service
builds on each request from what it already knows: the broker's connection state, whether
its consumers are registered, and MongoDB's reachability as a :class:`MongoWatch` last saw it.
MongoDB is pinged in the background every ``interval_s`` (one ping per interval, whatever
the probe rate), and counts as reachable while the last ping succeeded within ``stale_after_s``
(a ping that hangs through an outage turns it false too).

**Standby planners are ready.** A planner standing by (another holds the lease) serves its
purpose, to take over, as long as it reaches MongoDB; it holds no RabbitMQ connection, so its
``rabbitmq`` and ``consuming`` are ``null`` and ``lease`` says ``standby``. A planner holding
the lease is ready when connected to both and consuming (so also not while it restores jobs
after taking over). Kubernetes then keeps every planner replica in rotation and a rollout
never waits on a standby.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from shared.background import cancel_and_wait
from shared.outages import short
from shared.resource import AsyncResource

log = logging.getLogger("theodolite.health")
MONGO_PING_S = 2.0
MONGO_STALE_S = 5.0


class LeaseRole(StrEnum):
    """A planner's part in its namespace: acting (it holds the lease) or standing by."""

    HELD = "held"
    STANDBY = "standby"


@dataclass(frozen=True)
class Readiness:
    """One answer of ``/readyz``."""

    mongodb: bool
    rabbitmq: bool | None
    """None: the service holds no RabbitMQ connection by design (a standby planner)."""
    consuming: bool | None
    """Its consumers are registered on the live connection (None as for ``rabbitmq``)."""
    lease: LeaseRole | None = None
    """Planners only."""

    @property
    def ready(self) -> bool:
        if self.lease is LeaseRole.STANDBY:
            return self.mongodb
        return self.mongodb and bool(self.rabbitmq) and bool(self.consuming)

    def as_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"ready": self.ready, "rabbitmq": self.rabbitmq, "mongodb": self.mongodb,
                                "consuming": self.consuming}
        if self.lease is not None:
            body["lease"] = self.lease.value
        return body


class MongoWatch(AsyncResource):
    """Owns the background task that pings MongoDB (``ping``: e.g. the store's ``ping``
    command) and remembers when it last answered; :attr:`reachable` reads that."""

    def __init__(self, ping: Callable[[], Awaitable[object]], *, interval_s: float = MONGO_PING_S,
                 stale_after_s: float = MONGO_STALE_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.ping = ping
        self.interval_s = interval_s
        self.stale_after_s = stale_after_s
        self.clock = clock
        self._answered_at: float | None = None
        self._failing = False
        self._task: asyncio.Task[None] | None = None

    @property
    def reachable(self) -> bool:
        """The last ping succeeded, within ``stale_after_s``."""
        return (not self._failing and self._answered_at is not None
                and self.clock() - self._answered_at <= self.stale_after_s)

    async def open(self) -> None:
        if self._task is None:
            await self.check()  # an answer before the first probe
            self._task = asyncio.create_task(self._run(), name="mongo-watch")

    async def close(self) -> None:
        task, self._task = self._task, None
        await cancel_and_wait(task)

    async def check(self) -> bool:
        """Ping once (bounded by ``interval_s``); whether MongoDB answered."""
        try:
            await asyncio.wait_for(self.ping(), self.interval_s)
        except Exception as error:  # noqa: BLE001 - any failure means "not reachable now"
            if not self._failing:
                log.debug("MongoDB ping failed: %s", short(error))
            self._failing = True
            return False
        self._failing = False
        self._answered_at = self.clock()
        return True

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            await self.check()
