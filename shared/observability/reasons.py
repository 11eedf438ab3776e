"""Why a message was refused or dead-lettered: the bounded label values of the message metrics.

Metric labels must come from a small fixed set (a free-text reason, a job id or a queue name
per label value would grow the time series without bound), so every refusal is classified
once, where it is decided, into one of these enums; the free text still goes to the logs and
the ``events`` collection.
"""

from __future__ import annotations

from enum import StrEnum


class RejectReason(StrEnum):
    """Why a service refused a message (``theodolite_messages_rejected_total{reason}``)."""

    MALFORMED = "malformed"
    """Too large, not JSON, or not a valid message of its kind."""
    WRONG_KIND = "wrong_kind"
    """A message of another kind on a queue (the control exchange)."""
    WRONG_DEVICE = "wrong_device"
    """A step for another device delivered to a worker."""
    UNKNOWN_JOB = "unknown_job"
    """A step whose job is not in the store, cannot be read, or has no such step."""
    HANDLER_FAILED = "handler_failed"
    """A redelivered message whose handling failed again with an unexpected error (poison)."""
    OTHER = "other"


class DeadLetterReason(StrEnum):
    """Why RabbitMQ dead-lettered a message (``theodolite_messages_dead_lettered_total{reason}``):
    the ``reason`` of its first ``x-death`` entry."""

    REJECTED = "rejected"
    DELIVERY_LIMIT = "delivery_limit"
    EXPIRED = "expired"
    MAXLEN = "maxlen"
    UNKNOWN = "unknown"

    @classmethod
    def of(cls, value: object) -> DeadLetterReason:
        """The reason RabbitMQ gave (``"delivery_limit"``), or UNKNOWN for anything else."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN
