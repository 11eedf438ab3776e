"""The RabbitMQ connection owner: confirmed, mandatory publishes, consumers, and reconnects.

``Broker`` is an async context manager owning one connection at a time, its publishing
channel (publisher confirms, returns delivered to the caller) and the consumer channels it
opened; ``close()`` is idempotent and closes consumers, channels and the connection in reverse
order. aio-pika errors are translated into :class:`BrokerError` at this edge.

**Reconnects.** A connection that RabbitMQ closes (a restart: ``CONNECTION_FORCED``) or that
drops is re-established in the background, with exponential backoff and jitter
(:func:`~shared.transport.reconnect.reconnect_delay_s`), until ``close()``. On each new
connection the broker re-opens its publishing channel, re-declares the exchanges and core
queues, then runs every *subscription* given to :meth:`Broker.subscribe` in order: the
service's channels, its queues (device queues, a worker's exclusive control queue) and its
consumers. A subscription that fails (say, an exclusive queue the server still holds for the
dead connection) fails the attempt, which is retried as a whole. One log line on loss, one on
recovery (with the downtime). :meth:`Broker.on_lost` callbacks run when the loss is noticed.

We own this loop rather than use aio-pika's ``connect_robust``: a robust channel raises on
publish during the outage and does not replay unconfirmed publishes (aio-pika's own
``Exchange.publish`` docs; issue #508), so a waiting, retried publish is needed anyway; its
restore is implicit, through weak references to channel objects (#536), at a fixed
``reconnect_interval`` without backoff, and an exclusive named queue can fail to come back
while the server still holds the old connection (#679). Here the order is explicit
(a worker's control queue before its device queue), every step is retried with backoff, and
the services see the state (:attr:`Broker.connected`, :attr:`Broker.lost`).

**Publishes** wait for the connection (up to ``publish_timeout_s``, or the ``timeout_s``
given); a publish whose confirm was lost with the connection is sent again on the next one
(at least once: every consumer is idempotent). Past the deadline the caller gets
:class:`~shared.distributed_errors.BrokerUnavailable`.

Deliveries of a dead channel cannot be settled any more (RabbitMQ has requeued them): see
:func:`shared.transport.settle.orphaned`.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from shared.distributed_errors import BrokerError, BrokerUnavailable, BrokerUnreachable, connection_reason
from shared.resource import AsyncResource
from shared.settings import Settings, redact_url
from shared.transport.reconnect import close_reason, reconnect_delay_s
from shared.transport.topology import declare_core_queues, declare_exchanges

log = logging.getLogger("theodolite.broker")
CONNECT_RETRY_S = 0.5
MIN_ATTEMPT_S = 0.5
CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError,
    asyncio.TimeoutError, OSError,
)
"""Errors of a publish that the loss of the connection may explain (then it is sent again)."""
PUBLISH_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_ERRORS, aiormq.exceptions.AMQPError, aio_pika.exceptions.AMQPException)
CLOSE_SETTLE_S = 0.5
"""How long a failed publish waits for its connection to be seen closed before calling the
failure its own (the close is noticed a moment after the error)."""
Subscription = Callable[[], Awaitable[None]]


class _TransportErrorFilter(logging.Filter):
    """aiormq logs each failed connection attempt, and a connection the server closes, at
    ERROR (with a traceback); the broker reports both itself (one line, URL masked), so those
    records are dropped."""

    REPORTED = ("error when creating transport", "Unexpected connection close from remote",
                "Cancelling cause reader exited abnormally")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.REPORTED)


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


async def _quietly(action: Awaitable[Any], what: str) -> None:
    try:
        await action
    except Exception as error:  # noqa: BLE001 - closing anyway
        log.debug("%s failed: %r", what, error)


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
        self._subscriptions: list[Subscription] = []
        self._lost_callbacks: list[Callable[[], object]] = []
        self._declare_core = True
        self._consuming = True
        """False after :meth:`stop_consuming` (until the next subscribe): no consumers restored."""
        self._closing = False
        self._closed = asyncio.Event()
        self._reconnecting: asyncio.Task[None] | None = None
        self._lost_at = 0.0
        self.connected = asyncio.Event()
        """Set while the connection is up and every subscription is restored."""
        self.lost = asyncio.Event()
        """Set while the connection is lost (reconnecting); cleared when it is back."""
        self.outages = 0
        """Connections lost so far (each one reconnected, or being reconnected)."""

    # lifecycle ----------------------------------------------------------------------------
    async def open(self, *, declare_core: bool = True) -> None:
        """Connect (retrying for ``connect_timeout_s``: a broker still starting), open the
        publishing channel, declare the exchanges (and the core queues)."""
        if self._connection is not None:
            return
        self._closing = False
        self._closed.clear()
        self._declare_core = declare_core
        connection = await self._connect()
        try:
            await self._prepare(connection)
        except BaseException:
            self._connection = None
            await _quietly(connection.close(), "closing a half-opened connection")
            raise
        if connection.is_closed:
            self._connection = None
            raise BrokerError("the RabbitMQ connection closed while it was being opened")
        self.connected.set()

    async def _connect(self) -> AbstractConnection:
        """Connect, retrying a refused or unanswered connection until ``connect_timeout_s``
        (a broker still starting); a refused login or a protocol error fails at once."""
        url = redact_url(self.settings.amqp_url)
        started = time.monotonic()
        deadline = started + self.settings.connect_timeout_s
        while True:
            try:
                return await self._connect_once(max(deadline - time.monotonic(), MIN_ATTEMPT_S))
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

    async def _connect_once(self, timeout_s: float) -> AbstractConnection:
        return await aio_pika.connect(self.settings.amqp_url, timeout=timeout_s,
                                      client_properties={"connection_name": self.name})

    async def _prepare(self, connection: AbstractConnection) -> None:
        """Adopt ``connection``: publishing channel, exchanges, core queues (not subscriptions)."""
        self._connection = connection
        self._channels = []
        self._consumers = []
        connection.close_callbacks.add(self._on_close)
        self._publisher = await connection.channel(publisher_confirms=True, on_return_raises=False)
        exchanges = await declare_exchanges(self._publisher, self.names)
        self._exchanges = {ex.name: ex for ex in exchanges.values()}
        if self._declare_core:
            await declare_core_queues(self._publisher, self.names, self.settings)

    def _on_close(self, sender: Any, *args: Any) -> None:
        """The connection closed: if it was ours and up, start reconnecting."""
        if self._closing or sender is not self._connection or not self.connected.is_set():
            return  # closed by us, an old one, or lost while being restored (that attempt fails)
        self.connected.clear()
        self.lost.set()
        self.outages += 1
        self._lost_at = time.monotonic()
        log.warning("%s: lost the RabbitMQ connection (%s); reconnecting with backoff", self.name,
                    close_reason(args[0] if args else None))
        for callback in list(self._lost_callbacks):
            try:
                callback()
            except Exception:  # a listener's bug must not stop the reconnect
                log.exception("a lost-connection callback failed")
        self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect(), name=f"{self.name}-reconnect")

    async def _reconnect(self) -> None:
        """Connect again (backoff, forever until ``close()``), restore topology and subscriptions."""
        attempt, last_problem = 0, ""
        while not self._closing:
            attempt += 1
            await asyncio.sleep(reconnect_delay_s(attempt))
            try:
                connection = await self._connect_once(self.settings.connect_timeout_s)
            except Exception as error:  # noqa: BLE001 - still down: try again
                problem = _os_reason(error) if isinstance(error, (TimeoutError, OSError)) else close_reason(error)
                if problem != last_problem:
                    log.info("%s: RabbitMQ not back yet (%s); still trying", self.name, problem)
                    last_problem = problem
                continue
            try:
                await self._prepare(connection)
                if self._consuming:
                    for subscription in list(self._subscriptions):
                        await subscription()
            except Exception as error:  # noqa: BLE001 - lost again, or the server still holds the old state
                problem = close_reason(error)
                if problem != last_problem:
                    log.warning("%s: restoring the RabbitMQ topology failed (%s); trying again", self.name, problem)
                    last_problem = problem
                self._connection = None
                await _quietly(connection.close(), "closing a half-restored connection")
                continue
            if connection.is_closed:  # lost again just now: its close was ignored while restoring
                self._connection = None
                continue
            downtime = time.monotonic() - self._lost_at
            self.lost.clear()
            self.connected.set()
            log.warning("%s: RabbitMQ connection back after %.1f s down (%d attempt%s); topology declared%s", self.name,
                        downtime, attempt, "" if attempt == 1 else "s",
                        f", {len(self._subscriptions)} subscription(s) restored" if self._consuming else "")
            return

    async def close(self) -> None:
        """Stop reconnecting; cancel consumers, close channels and the connection (reverse
        order); idempotent."""
        self._closing = True
        self._closed.set()
        self.connected.clear()
        task, self._reconnecting = self._reconnecting, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        connection, self._connection = self._connection, None
        if connection is None:
            return
        live = not connection.is_closed
        if live:
            for queue, tag in reversed(self._consumers):
                await _quietly(queue.cancel(tag), "cancelling a consumer while closing")
        self._consumers.clear()
        for channel in reversed([*self._channels, *([self._publisher] if self._publisher else [])]):
            if live and not channel.is_closed:
                await _quietly(channel.close(), "closing a channel")
        self._channels.clear()
        self._publisher = None
        if live:
            await _quietly(connection.close(), "closing the connection")

    # subscriptions ------------------------------------------------------------------------
    async def subscribe(self, subscription: Subscription) -> None:
        """Run ``subscription`` (it opens channels, declares queues, consumes) now, and again
        on every new connection, after the exchanges and core queues and the subscriptions
        given before it."""
        self._consuming = True
        self._subscriptions.append(subscription)
        try:
            await subscription()
        except Exception:
            if self.connected.is_set() or self._closing:
                raise
            log.info("%s: the connection was lost while subscribing; the reconnect subscribes again", self.name)

    def on_lost(self, callback: Callable[[], object]) -> None:
        """Call ``callback()`` (synchronous) when the connection is found lost."""
        self._lost_callbacks.append(callback)

    # channels and consumers ---------------------------------------------------------------
    async def channel(self, prefetch: int) -> AbstractChannel:
        if self._connection is None or self._closing:
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
        """basic.cancel every consumer: no new deliveries; unacked ones stay ours to settle.
        The subscriptions are dropped: a reconnect from now on restores the connection (for
        publishing) but no consumer, until :meth:`subscribe` is called again."""
        self._consuming = False
        self._subscriptions.clear()
        for queue, tag in reversed(self._consumers):
            await _quietly(queue.cancel(tag), "cancelling a consumer")
        self._consumers.clear()

    @property
    def consuming(self) -> bool:
        """Whether this broker's consumers are registered on the live connection: connected,
        subscriptions restored, and not stopped by :meth:`stop_consuming` (``/readyz``)."""
        return self.connected.is_set() and self._consuming and bool(self._consumers)

    async def queue_consumers(self, queue_name: str) -> int | None:
        """Consumers on a queue, or None when the queue does not exist (passive declare).
        Raises :class:`BrokerUnavailable` at once while the connection is lost."""
        if not self.connected.is_set() or self._connection is None:
            raise BrokerUnavailable(f"counting the consumers of {queue_name}", 0.0)
        channel = await self._connection.channel(publisher_confirms=False)
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
            result = queue.declaration_result
            return int(result.consumer_count or 0)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return None
        finally:
            if not channel.is_closed:
                await _quietly(channel.close(), "closing a probe channel")

    # publishing ---------------------------------------------------------------------------
    async def publish(self, item: Outgoing, *, timeout_s: float | None = None) -> bool:
        """Publish with confirm and ``mandatory``; False when the broker returned it (no route).

        While the connection is lost, wait for it (up to ``timeout_s``, default
        ``publish_timeout_s``); a publish lost with a connection is sent again on the next."""
        started = time.monotonic()
        deadline = started + (self.settings.publish_timeout_s if timeout_s is None else timeout_s)
        what = f"publish to {item.exchange}/{item.routing_key}"
        message = aio_pika.Message(
            item.body, content_type=CONTENT_TYPE, headers={HEADER_KIND: item.kind}, message_id=item.message_id,
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT if item.persistent else aio_pika.DeliveryMode.NOT_PERSISTENT,
        )
        while True:
            await self._wait_connected(deadline, what, started)
            connection, exchange = self._connection, self._exchanges.get(item.exchange)
            if exchange is None:
                raise BrokerError(f"unknown exchange {item.exchange!r}")
            try:
                await self._ensure_publisher()
                result = await exchange.publish(message, item.routing_key, mandatory=True,
                                                timeout=max(deadline - time.monotonic(), MIN_ATTEMPT_S))
            except PUBLISH_ERRORS as error:
                if self._closing:
                    raise BrokerError(f"{what} failed: the broker is closing") from error
                if await self._lost_since(connection, error):
                    log.debug("%s lost with the connection (%r); sending it again once reconnected", what, error)
                    await asyncio.sleep(CLOSE_SETTLE_S / 10)  # the close callback marks the connection lost
                    continue
                if isinstance(error, asyncio.TimeoutError) and time.monotonic() >= deadline:
                    raise BrokerUnavailable(what, time.monotonic() - started) from error
                raise BrokerError(f"{what} failed: {error!r}") from error
            return not isinstance(result, aiormq.abc.DeliveredMessage)

    async def publish_many(self, items: Sequence[Outgoing], *, timeout_s: float | None = None) -> list[bool]:
        """Publish a batch, confirms awaited together (pipelined, not one round trip each)."""
        if not items:
            return []
        return list(await asyncio.gather(*(self.publish(item, timeout_s=timeout_s) for item in items)))

    async def _wait_connected(self, deadline: float, what: str, started: float) -> None:
        if self._closing:
            raise BrokerError(f"{what}: the broker is closed")
        if self.connected.is_set():
            return
        if not self.lost.is_set():
            raise BrokerError(f"{what}: the broker is not open")
        waiters = [asyncio.ensure_future(self.connected.wait()), asyncio.ensure_future(self._closed.wait())]
        try:
            await asyncio.wait(waiters, timeout=max(deadline - time.monotonic(), 0.0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        if self._closing:
            raise BrokerError(f"{what}: the broker is closed")
        if not self.connected.is_set():
            raise BrokerUnavailable(what, time.monotonic() - started)

    async def _lost_since(self, connection: AbstractConnection | None, error: BaseException) -> bool:
        """Whether the publish failed because ``connection`` (the one it used) was lost."""
        if connection is None or connection is not self._connection or not self.connected.is_set():
            return True
        if isinstance(error, CONNECTION_ERRORS) and not connection.is_closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.closed(), CLOSE_SETTLE_S)
        return connection.is_closed or connection is not self._connection or not self.connected.is_set()

    async def _ensure_publisher(self) -> None:
        """Re-open the publishing channel if RabbitMQ closed it (a channel error) while the
        connection lives on."""
        if self._publisher is not None and self._publisher.is_closed and self._connection is not None \
                and not self._connection.is_closed:
            with contextlib.suppress(Exception):
                await self._publisher.reopen()
