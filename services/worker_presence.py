"""A worker's presence on the events exchange: ``worker.online`` once it consumes, a
``worker.heartbeat`` every ``heartbeat_s`` (device, slots, busy, load, completed), and
``worker.offline`` on a clean stop (docs/events.md).

Transient and best effort: a heartbeat that cannot be published within one period (RabbitMQ
away) is skipped, not queued, and the loop goes on; the per-worker ``seq`` shows a monitor
what it missed. Nothing here can stop the worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable

from shared.constants import worker_event_key
from shared.events import WorkerEvent, WorkerEventType
from shared.messages import encode
from shared.outages import Streak
from shared.transport import Broker, Outgoing

log = logging.getLogger("theodolite.worker")
Load = Callable[[], tuple[int, int]]
"""(steps held now: running or waiting for a slot, steps completed so far)."""


class WorkerPresence:
    def __init__(self, broker: Broker, worker_id: str, device: str, slots: int, heartbeat_s: float, load: Load) -> None:
        self.broker = broker
        self.worker_id = worker_id
        self.device = device
        self.slots = slots
        self.heartbeat_s = heartbeat_s
        self.load = load
        self._seq = 0
        self._host = socket.gethostname()[:255]
        self._streak = Streak(log, "publishing worker heartbeats")

    def event(self, kind: WorkerEventType) -> WorkerEvent:
        """The next presence event (numbered)."""
        self._seq += 1
        held, completed = self.load()
        return WorkerEvent(type=kind, worker_id=self.worker_id, device=self.device, seq=self._seq, slots=self.slots,
                           busy=min(held, self.slots), held=held, load=round(held / self.slots, 3), completed=completed,
                           host=self._host, pid=os.getpid(),
                           host_load_1m=_host_load(), heartbeat_s=self.heartbeat_s, at=time.time())

    async def announce(self, kind: WorkerEventType, timeout_s: float | None = None) -> bool:
        """Publish one presence event, waiting at most ``timeout_s`` (default: one period) for
        a lost connection; False when it could not be published."""
        try:
            event = self.event(kind)
            item = Outgoing(self.broker.names.events_exchange, worker_event_key(self.device, kind), encode(event), event.kind,
                            persistent=False)
            await self.broker.publish(item, timeout_s=self.heartbeat_s if timeout_s is None else timeout_s)
        except Exception as error:  # noqa: BLE001 - presence informs; the worker goes on
            self._streak.failed(error, self.heartbeat_s)
            return False
        self._streak.succeeded()
        return True

    async def run(self) -> None:
        """A heartbeat every ``heartbeat_s`` until cancelled."""
        while True:
            await asyncio.sleep(self.heartbeat_s)
            await self.announce(WorkerEventType.HEARTBEAT)


def _host_load() -> float | None:
    try:
        return round(os.getloadavg()[0], 3)
    except (AttributeError, OSError):
        return None
