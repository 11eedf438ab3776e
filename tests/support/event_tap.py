"""A monitor's view of the events exchange for tests: a queue bound to some keys, or a
reader of the history stream from its first message (docs/events.md)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Self

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.constants import HEADER_KIND, Names
from shared.settings import Settings


@dataclass
class Heard:
    key: str
    kind: str
    body: dict[str, Any]

    def events(self) -> list[dict[str, Any]]:
        return self.body["events"] if self.kind == "event.batch" else [self.body]


class Tap:
    """An exclusive queue on the events exchange bound to ``keys``, or (``history``) a reader
    of the history stream from its first message: what a monitor sees."""

    def __init__(self, settings: Settings, keys: tuple[str, ...] = (), *, history: bool = False) -> None:
        self.settings, self.keys, self.history = settings, keys, history
        self.heard: list[Heard] = []

    async def __aenter__(self) -> Self:
        names = Names(self.settings.namespace)
        self.connection = await aio_pika.connect(self.settings.amqp_url)
        channel = await self.connection.channel()
        await channel.set_qos(prefetch_count=500)
        if self.history:
            queue = await channel.get_queue(names.events_stream, ensure=False)
            await queue.consume(self._on_message, arguments={"x-stream-offset": "first"})
        else:
            queue = await channel.declare_queue(exclusive=True, auto_delete=True)
            for key in self.keys:
                await queue.bind(names.events_exchange, key)
            await queue.consume(self._on_message)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.connection.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        self.heard.append(Heard(message.routing_key or "", str((message.headers or {}).get(HEADER_KIND)), json.loads(message.body)))
        await message.ack()

    def job_events(self, job_id: str) -> list[dict[str, Any]]:
        return [e for h in self.heard for e in h.events() if e.get("job_id") == job_id]

    def worker_events(self, kind: str) -> list[dict[str, Any]]:
        return [h.body for h in self.heard if h.kind == "worker.event" and h.body["type"] == kind]

    async def until(self, what: str, check: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not check():
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"timed out waiting for {what}; heard {[h.key for h in self.heard][-20:]}")
            await asyncio.sleep(0.05)
