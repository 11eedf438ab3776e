"""Ack, nack and reject decided in one place.

Handlers raise :class:`Reject` (bad message: dead-letter it, never requeue; its ``code``, a
bounded :class:`~shared.observability.reasons.RejectReason`, is reported to ``on_reject``) or
:class:`HandBack` (not ours to finish now: requeue it). Any other exception requeues a first
delivery and dead-letters a redelivered one, so a poison message cannot loop — except an
*outage* (:func:`shared.outages.transient`: MongoDB or RabbitMQ unreachable), which says
nothing about the message: it is handed back, never dead-lettered.

A delivery whose channel died with its connection is *orphaned*: RabbitMQ has requeued it
and will deliver it again (flagged ``redelivered``), and its delivery tag means nothing on
any other channel. Settling it is skipped (:func:`orphaned`, :func:`acknowledge`, :func:`ack_batch`).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from aio_pika.abc import AbstractIncomingMessage
from aiormq.exceptions import ChannelInvalidStateError

from shared.observability.reasons import RejectReason
from shared.outages import short, transient

log = logging.getLogger("theodolite.settle")


class Reject(Exception):
    """Raised by a handler when a message can never be processed; it is dead-lettered."""

    def __init__(self, reason: str, code: RejectReason = RejectReason.OTHER) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class HandBack(Exception):
    """Raised by a handler to return a message to its queue for someone else (shutdown)."""


def orphaned(message: AbstractIncomingMessage | Any) -> bool:
    """Whether ``message`` came on a channel that is closed now (its connection was lost):
    RabbitMQ has requeued it; it can no longer be acked, nacked or rejected."""
    try:
        message.channel  # noqa: B018 - aio-pika raises when the delivery's channel is closed
    except ChannelInvalidStateError:
        return True
    except AttributeError:  # not an aio-pika message (a test's stand-in)
        return False
    return False


@asynccontextmanager
async def settle(message: AbstractIncomingMessage, *, ack: bool = True,
                 on_reject: Callable[[RejectReason], object] | None = None) -> AsyncIterator[None]:
    """Ack on success (unless ``ack`` is False: the handler settles itself). ``on_reject``
    hears why each message is rejected (a service's metrics)."""
    try:
        yield
    except Reject as problem:
        log.warning("rejecting message %s: %s", message.message_id or message.delivery_tag, problem.reason)
        if not orphaned(message) and on_reject is not None:
            on_reject(problem.code)
        await _safely(message, message.reject(requeue=False) if not orphaned(message) else None)
        return
    except HandBack:
        await _safely(message, message.nack(requeue=True) if not orphaned(message) else None)
        return
    except Exception as error:
        if transient(error):
            log.warning("message %s handed back: %s (an outage, not the message's fault)",
                        message.message_id or message.delivery_tag, short(error))
            await _safely(message, message.nack(requeue=True) if not orphaned(message) else None)
            return
        log.exception("handler failed on message %s (redelivered=%s)", message.delivery_tag, message.redelivered)
        if not orphaned(message):
            if message.redelivered and on_reject is not None:
                on_reject(RejectReason.HANDLER_FAILED)
            await _safely(message, message.reject(requeue=False) if message.redelivered else message.nack(requeue=True))
        return
    if ack and not message.processed:
        await acknowledge(message)


async def acknowledge(message: AbstractIncomingMessage) -> bool:
    """Ack ``message`` unless it is settled or orphaned; whether it was acked."""
    if message.processed or orphaned(message):
        return False
    return await _safely(message, message.ack())


async def ack_batch(messages: Sequence[AbstractIncomingMessage]) -> None:
    """Ack a batch taken in delivery order: one ``multiple`` ack per live channel, for its
    highest delivery tag; deliveries of dead channels are skipped (they come again)."""
    highest: dict[int, AbstractIncomingMessage] = {}
    for message in messages:
        if message.processed or orphaned(message):
            continue
        key = id(getattr(message, "channel", None))
        current = highest.get(key)
        if current is None or (message.delivery_tag or 0) > (current.delivery_tag or 0):
            highest[key] = message
    for message in highest.values():
        await _safely(message, message.ack(multiple=True))


async def _safely(message: Any, action: Awaitable[None] | None) -> bool:
    if action is None:
        log.debug("message %s came on a channel that closed since: not settled (RabbitMQ delivers it again)",
                  getattr(message, "delivery_tag", None))
        return False
    try:
        await action
    except Exception as error:  # noqa: BLE001 - the channel may be gone; the broker redelivers
        log.debug("settling a message failed: %r", error)
        return False
    return True
