"""Typed settings for the distributed services, read once at each entry point.

Every value comes from a ``THEODOLITE_*`` environment variable (or an explicit keyword in
tests); the built object is passed down, never looked up globally. URLs may carry
passwords: ``repr`` and :func:`redact_url` mask them.

CLI commands run in a folder use :class:`CliSettings`, which adds one source below the
environment: the cluster file (``.theodolite/cluster.json``) that a running ``theodolite up``
wrote in the current directory. So, first match wins: explicit keywords, ``THEODOLITE_*``
variables, the live cluster file of this folder (connection settings only), the defaults.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from shared.plugin_api import Isolation

ENV_PREFIX = "THEODOLITE_"
PREFETCH_PER_SLOT = 4
CLUSTER_FILE = Path(".theodolite", "cluster.json")
"""Where ``theodolite up`` records its cluster, relative to the directory it was started in."""
CLUSTER_SETTINGS = ("amqp_url", "mongo_url", "db", "namespace")
"""The settings a cluster file carries: what a client needs to reach that cluster."""

log = logging.getLogger("theodolite.settings")


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
    """Steps a worker runs at once (slots: a child process each, or a thread with ``isolation=thread``)."""
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
    validation_timeout_s: float = Field(default=60.0, gt=0)
    """The planner's time budget for validating one submitted document; past it the job is
    rejected (validation runs off the event loop, several at once)."""
    write_backlog: int = Field(default=10_000, ge=10)
    """The planner's queued MongoDB writes; when full, dispatching waits for the writer."""
    isolation: Isolation = Isolation.PROCESS
    """Where a worker runs tasks that do not choose (``@task(isolation=...)``): ``process``, a
    child process per slot (killable), or ``thread`` (``theodolite worker --isolation``)."""
    memory_mb: int | None = Field(default=None, gt=0)
    """Memory limit of process-isolated tasks without their own ``memory_mb`` (None: none)."""
    publish_timeout_s: float = Field(default=300.0, gt=0)
    """How long a publish waits for a lost RabbitMQ connection to come back before its caller
    gets BrokerUnavailable (the planner then tries again: its effects are never dropped)."""
    store_retry_s: float = Field(default=60.0, ge=0)
    """How long a MongoDB read waits out an outage (retried with backoff) before it fails."""
    heartbeat_s: float = Field(default=5.0, gt=0)
    """A worker's ``worker.heartbeat`` event period (device, slots, load: docs/events.md)."""
    metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port of a service's /metrics, /healthz and /readyz (``--metrics-port``); 0 serves none.
    Containers use 9100; ``theodolite up`` gives each of its services a free port."""
    metrics_host: str = "127.0.0.1"
    """Address the metrics server binds: loopback by default, ``0.0.0.0`` in containers."""

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


class CliSettings(Settings):
    """Settings of a CLI command run in a folder: like :class:`Settings`, with the connection
    settings of the cluster file a running ``theodolite up`` wrote in the current directory
    between the environment and the defaults (see the module docstring)."""

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, dotenv_settings, file_secret_settings, ClusterFileSource(settings_cls)


# the cluster file -----------------------------------------------------------------------------

def up_is_running(pid: int) -> bool:
    """Whether ``pid`` is a live ``theodolite up``: a live process with ``up`` among its
    arguments (where ``/proc`` is readable; elsewhere any live process), so that a pid the
    system has given to another program since does not count."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, someone else's
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True
    return b"up" in arguments  # a zombie's is empty


def shown_path(path: Path) -> str:
    """``path`` relative to the current directory when it is below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


class ClusterFile(BaseModel):
    """What ``theodolite up`` records in ``.theodolite/cluster.json`` while it runs."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    amqp_url: str
    mongo_url: str
    db: str
    namespace: str
    pid: int
    """The ``theodolite up`` process; the file counts only while it runs."""
    started_at: str
    """When it started, ISO 8601 in UTC."""

    @classmethod
    def of(cls, settings: Settings, pid: int | None = None) -> ClusterFile:
        return cls(**settings.model_dump(include=set(CLUSTER_SETTINGS)), pid=os.getpid() if pid is None else pid,
                   started_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    @classmethod
    def read(cls, path: Path) -> ClusterFile | None:
        """The file at ``path``; None when there is none. Raises ValueError when it is not one."""
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        except OSError as error:
            raise ValueError(f"cannot read it: {error.strerror or error}") from None
        try:
            return cls.model_validate_json(text)
        except ValidationError as error:
            raise ValueError(f"not a cluster file: {error.errors()[0]['msg']}") from None

    @property
    def running(self) -> bool:
        return up_is_running(self.pid)

    def connection(self) -> dict[str, str]:
        """The settings it carries, as :class:`Settings` keywords."""
        return {name: getattr(self, name) for name in CLUSTER_SETTINGS}

    def write(self, path: Path) -> None:
        """Atomically (a temporary file renamed over ``path``), readable by the owner only:
        the AMQP URL may carry a password."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # mode 0600
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                stream.write(self.model_dump_json(indent=2) + "\n")
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise

    @staticmethod
    def remove(path: Path, pid: int | None = None) -> bool:
        """Remove the file at ``path`` if it still names ``pid`` (default: this process)."""
        try:
            current = ClusterFile.read(path)
        except ValueError:
            return False
        if current is None or current.pid != (os.getpid() if pid is None else pid):
            return False
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        return True


class ClusterFileSource(PydanticBaseSettingsSource):
    """The connection settings in ``FOLDER/.theodolite/cluster.json`` (FOLDER: the current
    directory) while the ``theodolite up`` that wrote it runs. A stale or unreadable file
    is ignored with a warning on the ``theodolite.settings`` logger."""

    def __init__(self, settings_cls: type[BaseSettings], folder: Path | None = None) -> None:
        super().__init__(settings_cls)
        self.path = (folder if folder is not None else Path.cwd()) / CLUSTER_FILE

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the file once

    def __call__(self) -> dict[str, Any]:
        if all(name in self.current_state for name in CLUSTER_SETTINGS):
            return {}  # the environment says it all (services started by `up`): no file to read or warn about
        try:
            cluster = ClusterFile.read(self.path)
        except ValueError as error:
            log.warning("ignoring %s: %s", shown_path(self.path), error)
            return {}
        if cluster is None:
            return {}
        if not cluster.running:
            log.warning("ignoring %s: the `theodolite up` that wrote it (pid %d, started %s) is not running",
                        shown_path(self.path), cluster.pid, cluster.started_at)
            return {}
        return cluster.connection()
