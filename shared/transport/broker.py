"""The RabbitMQ connection owner: confirmed, mandatory publishes and consumer channels.

``Broker`` is an async context manager owning one connection, one publishing channel
(publisher confirms, returns delivered to the caller) and any consumer channels it opened;
``close()`` is idempotent and closes consumers, channels and the connection in reverse
order. aio-pika errors are translated into :class:`BrokerError` at this edge.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractQueue,
)

from shared.constants import CONTENT_TYPE, HEADER_KIND, Names
from shared.distributed_errors import BrokerError, BrokerUnreachable, connection_reason
from shared.resource import AsyncResource
from shared.settings import Settings, redact_url
from shared.transport.topology import declare_core_queues, declare_exchanges

log = logging.getLogger("theodolite.broker")
CONNECT_RETRY_S = 0.5
MIN_ATTEMPT_S = 0.5


class _TransportErrorFilter(logging.Filter):
    """aiormq logs each failed connection attempt at ERROR; :meth:`Broker.open` reports the
    failure itself (one line, URL masked), so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("error when creating transport")


logging.getLogger("aiormq.connection").addFilter(_TransportErrorFilter())


def _first_arg(error: BaseException) -> str:
    return str(error.args[0]) if error.args else str(error) or type(error).__name__


def _os_reason(error: BaseException) -> str:
    """``AMQPConnectionError(111, "Connect call failed ...")`` -> ``connection refused``."""
    if isinstance(error, TimeoutError) or not error.args:
        return "no answer"
    code = error.args[0] if isinstance(error.args[0], int) else getattr(error, "errno", None)
    text = " ".join(str(a) for a in error.args[1:]) if isinstance(error.args[0], int) else str(error)
    return connection_reason(text, code if isinstance(code, int) else None)


@dataclass(frozen=True)
class Outgoing:
    exchange: str
    routing_key: str
    body: bytes
    kind: str
    persistent: bool = True
    message_id: str | None = None


class Broker(AsyncResource):
    def __init__(self, settings: Settings, *, name: str) -> None:
        self.settings = settings
        self.names = Names(settings.namespace)
        self.name = name
        self._connection: AbstractConnection | None = None
        self._publisher: AbstractChannel | None = None
        self._exchanges: dict[str, AbstractExchange] = {}
        self._channels: list[AbstractChannel] = []
        self._consumers: list[tuple[AbstractQueue, str]] = []
        self.lost = asyncio.Event()
        """Set when the connection closes without ``close()`` being called."""


    async def open(self, *, declare_core: bool = True) -> None:
        if self._connection is not None:
            return
        connection = await self._connect()
        self._connection = connection
        connection.close_callbacks.add(self._on_close)
        self._publisher = await connection.channel(publisher_confirms=True, on_return_raises=False)
        exchanges = await declare_exchanges(self._publisher, self.names)
        self._exchanges = {ex.name: ex for ex in exchanges.values()}
        if declare_core:
            await declare_core_queues(self._publisher, self.names, self.settings)

    async def _connect(self) -> AbstractConnection:
        """Connect, retrying a refused or unanswered connection until ``connect_timeout_s``
        (a broker still starting); a refused login or a protocol error fails at once."""
        url = redact_url(self.settings.amqp_url)
        started = time.monotonic()
        deadline = started + self.settings.connect_timeout_s
        while True:
            try:
                return await aio_pika.connect(
                    self.settings.amqp_url, timeout=max(deadline - time.monotonic(), MIN_ATTEMPT_S),
                    client_properties={"connection_name": self.name},
                )
            except aiormq.exceptions.ProbableAuthenticationError as error:
                raise BrokerUnreachable(url, _first_arg(error), refused=True,
                                        hint="check the user and password in THEODOLITE_AMQP_URL") from None
            except (TimeoutError, OSError) as error:  # AMQPConnectionError is an OSError
                if time.monotonic() >= deadline:
                    raise BrokerUnreachable(url, _os_reason(error), tried_s=time.monotonic() - started) from None
            except aiormq.exceptions.AMQPError as error:  # e.g. a virtual host that does not exist
                text = _first_arg(error)
                reason = "closed during the handshake" if "Connection.Close" in text else f"{type(error).__name__}: {text}"
                raise BrokerUnreachable(url, reason, refused=True,
                                        hint="check the virtual host and user in THEODOLITE_AMQP_URL") from None
            await asyncio.sleep(min(CONNECT_RETRY_S, max(deadline - time.monotonic(), 0.0)))

    def _on_close(self, *_: Any) -> None:
        if self._connection is not None:
            self.lost.set()

    async def close(self) -> None:
        """Cancel consumers, close channels and the connection (reverse order); idempotent."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        for queue, tag in reversed(self._consumers):
            try:
                await queue.cancel(tag)
            except Exception as error:  # noqa: BLE001 - closing anyway
                log.debug("cancelling a consumer while closing failed: %r", error)
        self._consumers.clear()
        for channel in reversed([*self._channels, *( [self._publisher] if self._publisher else [])]):
            try:
                await channel.close()
            except Exception as error:  # noqa: BLE001 - closing anyway
                log.debug("closing a channel failed: %r", error)
        self._channels.clear()
        self._publisher = None
        try:
            await connection.close()
        except Exception as error:  # noqa: BLE001 - closing anyway
            log.debug("closing the connection failed: %r", error)

    # channels and consumers ---------------------------------------------------------------
    async def channel(self, prefetch: int) -> AbstractChannel:
        if self._connection is None:
            raise BrokerError("the broker is not open")
        channel = await self._connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)
        self._channels.append(channel)
        return channel

    async def consume(
        self, channel: AbstractChannel, queue_name: str, handler: Callable[[AbstractIncomingMessage], Awaitable[None]],
        *, arguments: dict[str, Any] | None = None,
    ) -> AbstractQueue:
        queue = await channel.get_queue(queue_name, ensure=False)
        tag = await queue.consume(handler, arguments=arguments)
        self._consumers.append((queue, tag))
        return queue

    async def stop_consuming(self) -> None:
        """basic.cancel every consumer: no new deliveries; unacked ones stay ours to settle."""
        for queue, tag in reversed(self._consumers):
            try:
                await queue.cancel(tag)
            except Exception as error:  # noqa: BLE001 - the channel may be gone already
                log.debug("cancelling a consumer failed: %r", error)
        self._consumers.clear()

    async def queue_consumers(self, queue_name: str) -> int | None:
        """Consumers on a queue, or None when the queue does not exist (passive declare)."""
        if self._connection is None:
            raise BrokerError("the broker is not open")
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            result = queue.declaration_result
            return int(result.consumer_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await channel.close()

    # publishing ---------------------------------------------------------------------------
    async def publish(self, item: Outgoing) -> bool:
        """Publish with confirm and ``mandatory``; False when the broker returned it (no route)."""
        exchange = self._exchanges.get(item.exchange)
        if exchange is None or self._publisher is None:
            raise BrokerError(f"unknown exchange {item.exchange!r} or broker not open")
        message = aio_pika.Message(
            item.body, content_type=CONTENT_TYPE, headers={HEADER_KIND: item.kind}, message_id=item.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if item.persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        try:
            result = await exchange.publish(message, item.routing_key, mandatory=True)
        except (aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException, ConnectionError) as error:
            raise BrokerError(f"publish to {item.exchange}/{item.routing_key} failed: {error!r}") from error
        return not isinstance(result, aiormq.abc.DeliveredMessage)

    async def publish_many(self, items: Sequence[Outgoing]) -> list[bool]:
        """Publish a batch, confirms awaited together (pipelined, not one round trip each)."""
        if not items:
            return []
        return list(await asyncio.gather(*(self.publish(item) for item in items)))
