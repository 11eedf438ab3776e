"""Ack, nack and reject decided in one place.

Handlers raise :class:`Reject` (bad message: dead-letter it, never requeue) or
:class:`HandBack` (not ours to finish now: requeue it); any other exception requeues a
first delivery and dead-letters a redelivered one, so a poison message cannot loop.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aio_pika.abc import AbstractIncomingMessage

log = logging.getLogger("theodolite.settle")


class Reject(Exception):
    """Raised by a handler when a message can never be processed; it is dead-lettered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class HandBack(Exception):
    """Raised by a handler to return a message to its queue for someone else (shutdown)."""


@asynccontextmanager
async def settle(message: AbstractIncomingMessage, *, ack: bool = True) -> AsyncIterator[None]:
    """Ack on success (unless ``ack`` is False: the handler settles itself)."""
    try:
        yield
    except Reject as problem:
        log.warning("rejecting message %s: %s", message.message_id or message.delivery_tag, problem.reason)
        await _safely(message.reject(requeue=False))
        return
    except HandBack:
        await _safely(message.nack(requeue=True))
        return
    except Exception:
        log.exception("handler failed on message %s (redelivered=%s)", message.delivery_tag, message.redelivered)
        await _safely(message.reject(requeue=False) if message.redelivered else message.nack(requeue=True))
        return
    if ack and not message.processed:
        await _safely(message.ack())


async def _safely(action: object) -> None:
    try:
        await action  # type: ignore[misc]
    except Exception as error:  # noqa: BLE001 - the channel may be gone; the broker redelivers
        log.debug("settling a message failed: %r", error)
