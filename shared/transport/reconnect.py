"""The pure parts of reconnecting to RabbitMQ: the backoff schedule and a readable close reason."""

from __future__ import annotations

import random
from collections.abc import Callable

from shared.outages import backoff_s

RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 5.0
RECONNECT_JITTER = 0.25


def reconnect_delay_s(attempt: int, rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before reconnect attempt ``attempt`` (1, 2, ...): 0.5 s doubling to at
    most 5 s, each stretched by up to 25 % so that services that lost the broker together do
    not all knock at once. A restarted broker is found within 5 s of coming back."""
    return backoff_s(attempt, first_s=RECONNECT_FIRST_S, max_s=RECONNECT_MAX_S, jitter=RECONNECT_JITTER, rng=rng)


def close_reason(error: BaseException | None) -> str:
    """``ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure with reason
    'shutdown'")`` -> ``CONNECTION_FORCED - broker forced connection closure with reason 'shutdown'``."""
    if error is None:
        return "closed"
    parts = [str(a) for a in error.args if not isinstance(a, int)] if error.args else []
    text = " ".join(parts).strip() or str(error).strip()
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__
