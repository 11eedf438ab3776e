"""Typed settings for the distributed services, read once at each entry point.

Every value comes from a ``THEODOLITE_*`` environment variable (or an explicit keyword in
tests); the built object is passed down, never looked up globally. URLs may carry
passwords: ``repr`` and the ``*_redacted`` helpers mask them.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "THEODOLITE_"
PREFETCH_PER_SLOT = 4


def redact_url(url: str) -> str:
    """``amqp://user:secret@host/`` -> ``amqp://user:***@host/``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


class Settings(BaseSettings):
    """Configuration of planner, workers and clients (see docs/distributed.md for the table)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    mongo_url: str = "mongodb://127.0.0.1:27017"
    db: str = "theodolite"
    namespace: str = Field(default="theodolite", pattern=r"^[A-Za-z0-9_.-]+$")
    """Prefix of every exchange and queue name; separate clusters (and tests) on one broker."""
    concurrency: int = Field(default_factory=lambda: max(1, os.cpu_count() or 1), ge=1)
    """Steps a worker runs at once (threads)."""
    prefetch: int | None = Field(default=None, ge=1)
    """Unacknowledged deliveries per worker consumer; default 4 x concurrency (1 on gpu workers)."""
    planner_prefetch: int = Field(default=2000, ge=1)
    gridfs_threshold_bytes: int = Field(default=1024 * 1024, ge=0)
    """Arrays and byte strings larger than this are stored in GridFS."""
    max_inline_outputs_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """A step's encoded outputs above this go to GridFS as one blob (16 MB document limit)."""
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024)
    lease_s: float = Field(default=30.0, gt=0)
    """A running step's claim in MongoDB; renewed every lease_s/3, re-queued by the planner when expired."""
    claim_after_s: float = Field(default=2.0, ge=0)
    """A step still running after this is claimed in MongoDB (state running, a lease); shorter
    steps go from queued straight to their final state there (their events still say running)."""
    ack_deadline_s: float = Field(default=1500.0, gt=0)
    """A delivery still running after this is acknowledged early (below RabbitMQ's consumer_timeout)."""
    delivery_limit: int = Field(default=5, ge=1)
    """Deliveries of one step message before it is dead-lettered (quorum x-delivery-limit)."""
    tick_s: float = Field(default=1.0, gt=0)
    """Planner housekeeping period: unroutable steps, waiting-for-worker checks."""
    drain_timeout_s: float = Field(default=60.0, ge=0)
    """On SIGTERM, how long in-flight steps may finish before being handed back."""
    connect_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("amqp_url", "mongo_url")
    @classmethod
    def _has_scheme(cls, value: str) -> str:
        if "://" not in value:
            raise ValueError(f"expected a URL with a scheme, got {redact_url(value)!r}")
        return value

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            yield key, redact_url(value) if key in ("amqp_url", "mongo_url") else value

    def worker_prefetch(self, device: str, concurrency: int) -> int:
        """Deliveries a worker holds: 1 on gpu workers (a busy GPU must not hoard steps),
        else four per execution slot, like Celery's prefetch multiplier, so that writing
        results and notices overlaps with running the next steps."""
        if self.prefetch is not None:
            return self.prefetch
        return 1 if device == "gpu" else PREFETCH_PER_SLOT * concurrency

    def child_environment(self) -> dict[str, str]:
        """The settings as environment variables, for child processes (``up``, tests)."""
        env: dict[str, str] = {}
        for name, value in self.model_dump().items():
            if value is not None:
                env[ENV_PREFIX + name.upper()] = str(value)
        return env
