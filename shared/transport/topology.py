"""The broker objects of one namespace and their arguments (declared idempotently by everyone).

Queue arguments cannot change after declaration, so every participant declares them from
this one module; tunables that may change later belong in policies.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue

from shared.constants import (
    HISTORY_KEYS,
    JOB_CANCEL_KEY,
    JOB_RESUME_KEY,
    JOB_SUBMIT_KEY,
    NOTICE_KEY,
    PROGRESS_KEY,
    Names,
)
from shared.settings import Settings

EVENTS_MAX_AGE = "7D"


def work_queue_arguments(names: Names, settings: Settings) -> dict[str, Any]:
    """Durable quorum queue, poison messages dead-lettered after ``delivery_limit`` deliveries."""
    return {
        "x-queue-type": "quorum",
        "x-delivery-limit": settings.delivery_limit,
        "x-dead-letter-exchange": names.dead_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
    }


def notice_queue_arguments(names: Names) -> dict[str, Any]:
    """Completion notices: a durable *classic* queue, for latency (a quorum queue commits
    every message through its Raft log, about 1.5 ms here). Notices are transient hints:
    MongoDB holds every result, and the planner applies finished steps whose notice was lost
    (its reconcile pass), so they need not survive a broker restart."""
    return {"x-queue-type": "classic", "x-dead-letter-exchange": names.dead_exchange}


async def declare_exchanges(channel: AbstractChannel, names: Names) -> dict[str, AbstractExchange]:
    direct, topic, fanout = aio_pika.ExchangeType.DIRECT, aio_pika.ExchangeType.TOPIC, aio_pika.ExchangeType.FANOUT
    return {
        "jobs": await channel.declare_exchange(names.jobs_exchange, direct, durable=True),
        "steps": await channel.declare_exchange(names.steps_exchange, direct, durable=True),
        "notices": await channel.declare_exchange(names.notices_exchange, direct, durable=True),
        "events": await channel.declare_exchange(names.events_exchange, topic, durable=True),
        "dead": await channel.declare_exchange(names.dead_exchange, fanout, durable=True),
        "control": await channel.declare_exchange(names.control_exchange, fanout, durable=True),
    }


async def declare_core_queues(channel: AbstractChannel, names: Names, settings: Settings) -> dict[str, AbstractQueue]:
    """Jobs, notices, dead letters and the event history stream (everything but device queues)."""
    args = work_queue_arguments(names, settings)
    jobs = await channel.declare_queue(names.jobs_queue, durable=True, arguments=args)
    await jobs.bind(names.jobs_exchange, JOB_SUBMIT_KEY)
    await jobs.bind(names.jobs_exchange, JOB_CANCEL_KEY)
    await jobs.bind(names.jobs_exchange, JOB_RESUME_KEY)
    notices = await channel.declare_queue(names.notices_queue, durable=True, arguments=notice_queue_arguments(names))
    await notices.bind(names.notices_exchange, NOTICE_KEY)
    await notices.bind(names.notices_exchange, PROGRESS_KEY)
    dead = await channel.declare_queue(names.dead_queue, durable=True, arguments={"x-queue-type": "quorum"})
    await dead.bind(names.dead_exchange, "")
    history = await channel.declare_queue(
        names.events_stream, durable=True, arguments={"x-queue-type": "stream", "x-max-age": EVENTS_MAX_AGE},
    )
    for key in HISTORY_KEYS:
        await history.bind(names.events_exchange, key)
    await history.unbind(names.events_exchange, "#")  # kept everything before heartbeats existed; a no-op once gone
    return {"jobs": jobs, "notices": notices, "dead": dead, "history": history}


async def declare_device_queue(channel: AbstractChannel, names: Names, settings: Settings, device: str) -> AbstractQueue:
    queue = await channel.declare_queue(names.steps_queue(device), durable=True, arguments=work_queue_arguments(names, settings))
    await queue.bind(names.steps_exchange, device)
    return queue


def all_queue_names(names: Names, devices: list[str]) -> list[str]:
    return [names.jobs_queue, names.notices_queue, names.dead_queue, names.events_stream,
            *(names.steps_queue(d) for d in devices)]


def all_exchange_names(names: Names) -> list[str]:
    return [names.jobs_exchange, names.steps_exchange, names.notices_exchange, names.events_exchange, names.dead_exchange,
            names.control_exchange]
