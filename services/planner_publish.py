"""The planner's publishes never give up while it serves.

The job book has already moved on when it returns a ``Publish`` (a dispatch round, a control
word, an event): dropping one would leave steps that nobody runs. :class:`PatientBroker`
stands between the effect runner and the :class:`~shared.transport.Broker`: a publish that
RabbitMQ could not confirm within ``publish_timeout_s`` (the connection stayed lost) is tried
again, with one log line per outage, until it is confirmed — or, once the planner stops, for
at most ``drain_timeout_s`` more (then the error goes up: a restarted planner restores the
job from MongoDB and publishes again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from shared.constants import Names
from shared.distributed_errors import BrokerUnavailable
from shared.outages import Streak
from shared.transport import Broker, Outgoing

log = logging.getLogger("theodolite.planner")


class PatientBroker:
    """The publishing side of a :class:`Broker` (``PlannerBroker``), retried while serving."""

    def __init__(self, broker: Broker, stop: asyncio.Event, *, stopping_timeout_s: float) -> None:
        self.broker = broker
        self.stop = stop
        self.stopping_timeout_s = stopping_timeout_s
        self._streak = Streak(log, "publishing (RabbitMQ unavailable)")

    @property
    def names(self) -> Names:
        return self.broker.names

    async def publish(self, item: Outgoing) -> bool:
        while True:
            timeout_s = self.stopping_timeout_s if self.stop.is_set() else None
            try:
                routed = await self.broker.publish(item, timeout_s=timeout_s)
            except BrokerUnavailable as error:
                if self.stop.is_set():
                    raise
                self._streak.failed(error)
                continue
            self._streak.succeeded()
            return routed

    async def publish_many(self, items: Sequence[Outgoing]) -> list[bool]:
        """Each publish retried on its own (a batch is never re-sent whole), confirms awaited together."""
        if not items:
            return []
        return list(await asyncio.gather(*(self.publish(item) for item in items)))

    def __getattr__(self, name: str) -> Any:  # anything else of the broker, unchanged
        return getattr(self.broker, name)
