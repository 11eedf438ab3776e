"""Errors of the distributed mode; all derive from the project's one base, TheodoliteError."""

from __future__ import annotations

from shared.errors import TheodoliteError


class DistributedError(TheodoliteError):
    """Base of the errors of the distributed mode (broker, store, messages)."""


class MessageError(DistributedError):
    """Raised when an incoming message is too large, not JSON, or not a valid message."""

    def __init__(self, reason: str, *, kind: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind


class CodecError(DistributedError):
    """Raised when a value cannot be stored without pickle, or a stored value is corrupt."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path or 'value'}: {reason}")
        self.path = path
        self.reason = reason


class StoreError(DistributedError):
    """Raised when MongoDB refuses or loses an operation (translated from PyMongo errors)."""


class BrokerError(DistributedError):
    """Raised when RabbitMQ refuses or loses an operation (translated from aio-pika errors)."""


class JobRejected(DistributedError):
    """Raised when a submitted job does not validate; keeps the problems as text lines."""

    def __init__(self, job_id: str, problems: list[str]) -> None:
        super().__init__(f"job {job_id} rejected: " + "; ".join(problems[:5]))
        self.job_id = job_id
        self.problems = problems
