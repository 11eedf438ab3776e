"""Where ``theodolite monitor`` hears the cluster: RabbitMQ (the I/O side of the monitor).

:class:`Feed` owns a :class:`~shared.transport.Broker` and, on each connection, two consumers
(docs/events.md):

* the **history stream** ``<ns>.events.history``, from a chosen offset (``first``, ``next``, or
  a time: the replay of ``--from start``), then live: it keeps every job event in number order
  and workers' ``online`` / ``offline``. After a reconnect it goes on from the offset after the
  last message it got, so nothing is heard twice or missed;
* a private exclusive queue bound to ``worker.*.worker.heartbeat`` (heartbeats are not kept
  in the stream).

Each message is decoded into its events (:func:`decode`) and handed to ``on_event``, in
order. :meth:`Feed.depths` asks the broker how deep the device queues are (a passive
declare: ready messages and consumers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
from pydantic import ValidationError

from services.monitor_screen import QueueDepth
from shared.constants import HEADER_KIND
from shared.events import Event, EventBatch, WorkerEvent
from shared.resource import AsyncResource
from shared.settings import Settings
from shared.transport import Broker
from shared.transport.settle import acknowledge

PREFETCH = 500
"""Unacknowledged messages per consumer (a stream consumer must set one)."""
HEARTBEAT_KEY = "worker.*.worker.heartbeat"
StreamOffset = str | int | datetime
"""``first``, ``next``, an offset, or a time (the stream's messages since then)."""
log = logging.getLogger("theodolite.monitor")


def decode(body: bytes, kind: str | None) -> list[Event | WorkerEvent]:
    """The events of one message (``event``, ``event.batch`` or ``worker.event``); none for
    one that is not an event of this schema version (a newer one is refused, docs/events.md)."""
    try:
        if kind == "event.batch":
            return list(EventBatch.model_validate_json(body).events)
        if kind == "worker.event":
            return [WorkerEvent.model_validate_json(body)]
        return [Event.model_validate_json(body)]
    except ValidationError:
        return []


class Feed(AsyncResource):
    """The events of a cluster, from the history stream (at ``start``) and the heartbeats."""

    def __init__(self, settings: Settings, start: StreamOffset, on_event: Callable[[Event | WorkerEvent], None]) -> None:
        self.broker = Broker(settings, name="theodolite-monitor")
        self._start = start
        self._on_event = on_event
        self._next_offset: int | None = None
        self._probe: AbstractChannel | None = None
        self.undecodable = 0
        """Messages that were not events of this schema version."""

    async def open(self) -> None:
        await self.broker.open()
        try:
            await self.broker.subscribe(self._subscribe)
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        await self.broker.close()

    async def _subscribe(self) -> None:
        names = self.broker.names
        offset: StreamOffset = self._start if self._next_offset is None else self._next_offset
        stream = await self.broker.channel(prefetch=PREFETCH)
        await self.broker.consume(stream, names.events_stream, self._on_stream, arguments={"x-stream-offset": offset})
        beats = await self.broker.channel(prefetch=PREFETCH)
        queue = await beats.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(names.events_exchange, HEARTBEAT_KEY)
        await self.broker.consume(beats, queue.name, self._on_heartbeat)
        self._probe = await self.broker.channel(prefetch=1)

    async def _on_stream(self, message: AbstractIncomingMessage) -> None:
        offset = (message.headers or {}).get("x-stream-offset")
        if isinstance(offset, int):
            self._next_offset = offset + 1
        await acknowledge(message)  # a stream consumer's credit: acked at once, the stream keeps it
        self._deliver(message)

    async def _on_heartbeat(self, message: AbstractIncomingMessage) -> None:
        await acknowledge(message)
        self._deliver(message)

    def _deliver(self, message: AbstractIncomingMessage) -> None:
        kind = (message.headers or {}).get(HEADER_KIND)
        events = decode(message.body, kind if isinstance(kind, str) else None)
        self.undecodable += not events
        for event in events:
            self._on_event(event)

    async def depths(self, devices: Iterable[str]) -> dict[str, QueueDepth | None]:
        """Each device queue's ready messages and consumers (None: the queue does not exist);
        nothing while the connection is down."""
        channel = self._probe
        if channel is None or not self.broker.connected.is_set():
            return {}
        found: dict[str, QueueDepth | None] = {}
        for device in sorted(devices):
            try:
                if channel.is_closed:  # a passive declare of a missing queue closes its channel
                    await channel.reopen()
                queue = await channel.declare_queue(self.broker.names.steps_queue(device), passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                found[device] = None
                continue
            except Exception as error:  # noqa: BLE001 - the connection is going: the next round asks again
                log.debug("asking the depth of the %s queue failed: %r", device, error)
                return found
            result: Any = queue.declaration_result
            found[device] = QueueDepth(int(result.message_count or 0), int(result.consumer_count or 0))
        return found
