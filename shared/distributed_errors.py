"""Errors of the distributed mode; all derive from the project's one base, TheodoliteError."""

from __future__ import annotations

import os
import re

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


class ServiceUnreachable(DistributedError):
    """Raised when RabbitMQ or MongoDB cannot be reached (or refuses the login) on connecting.

    Its text is one line: which service at which URL (password masked), what was tried and
    what happened, and what to do, e.g. ``cannot reach MongoDB at mongodb://127.0.0.1:27017
    (tried for 10 s: connection refused); start a cluster with 'theodolite up' in this
    directory or set THEODOLITE_MONGO_URL``.
    """

    service = "the service"
    hint = ""

    def __init__(self, url: str, reason: str, *, tried_s: float | None = None, refused: bool = False,
                 hint: str | None = None) -> None:
        self.url = url
        self.reason = reason
        self.tried_s = tried_s
        if hint is not None:
            self.hint = hint
        what = f"{self.service} at {url} refused the connection" if refused else f"cannot reach {self.service} at {url}"
        tried = f"tried for {seconds(tried_s)} s: " if tried_s is not None else ""
        super().__init__(f"{what} ({tried}{reason})" + (f"; {self.hint}" if self.hint else ""))


class StoreUnreachable(ServiceUnreachable, StoreError):
    service = "MongoDB"
    hint = "start a cluster with 'theodolite up' in this directory or set THEODOLITE_MONGO_URL"


class BrokerUnreachable(ServiceUnreachable, BrokerError):
    service = "RabbitMQ"
    hint = "start RabbitMQ (e.g. 'rabbitmq-server -detached') or set THEODOLITE_AMQP_URL"


class BrokerUnavailable(BrokerError):
    """Raised when a publish could not be confirmed because the RabbitMQ connection stayed
    lost (reconnecting) past the publish's deadline (``THEODOLITE_PUBLISH_TIMEOUT_S``)."""

    def __init__(self, what: str, waited_s: float) -> None:
        super().__init__(f"{what}: RabbitMQ unavailable (reconnecting) for {seconds(waited_s)} s")
        self.what = what
        self.waited_s = waited_s


def seconds(value: float) -> str:
    """``10.03`` -> ``10``, ``1.04`` -> ``1.0``, ``0.26`` -> ``0.3``."""
    return f"{value:.0f}" if value >= 9.95 else f"{value:.1f}"


def connection_reason(text: str, code: int | None = None) -> str:
    """A short, lower-case reason from an OS error number or a driver's message: ``[Errno 111]
    Connect call failed ('127.0.0.1', 1)`` -> ``connection refused``; a PyMongo server selection
    message loses its timeouts and topology description."""
    text = text.split(", Timeout:")[0].split(" (configured timeouts")[0].strip()
    if code is None:
        match = re.search(r"\[Errno (-?\d+)\]\s*([^(\[,]*)", text)
        if match:
            code, text = int(match[1]), match[2]
    if code is not None and code > 0:
        return os.strerror(code).lower()
    text = re.sub(r"^\S+:\d+: ", "", text.strip()).strip()  # PyMongo's "host:port: " prefix
    if text[:1].isupper() and text[1:2].islower():
        text = text[0].lower() + text[1:]
    return text[:200] or "no answer"


class JobRejected(DistributedError):
    """Raised when a submitted job does not validate; keeps the problems as text lines."""

    def __init__(self, job_id: str, problems: list[str]) -> None:
        super().__init__(f"job {job_id} rejected: " + "; ".join(problems[:5]))
        self.job_id = job_id
        self.problems = problems


class MetricsPortUnavailable(DistributedError):
    """Raised when a service cannot serve its metrics and health endpoints on the configured
    address (``THEODOLITE_METRICS_HOST``, ``THEODOLITE_METRICS_PORT`` or ``--metrics-port``)."""

    def __init__(self, host: str, port: int, reason: str) -> None:
        super().__init__(f"cannot serve metrics on {host}:{port} ({reason.lower()}); choose another port with "
                         "--metrics-port or THEODOLITE_METRICS_PORT (0 serves none)")
        self.host = host
        self.port = port
        self.reason = reason
