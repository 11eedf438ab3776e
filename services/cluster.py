"""A local cluster as child processes: Mongo-wire server (when needed), planner, workers.

Used by ``theodolite up``, the integration tests and the benchmark::

    with LocalCluster(Settings(), workers={"cpu": 2, "gpu": 1}) as cluster:
        cluster.wait_ready()
        ...  # submit jobs with cluster.settings

``stop()`` sends SIGTERM to workers, then the planners, then the Mongo-wire server, and
waits for each (SIGKILL after a grace period). ``planners=N`` starts N planner processes
(``planner``, ``planner-1``, ...); ``cluster.children`` lists every process started (a list),
``cluster.children("planner")`` the live ones of a role. ``metrics=True`` gives each service
a free port for its ``/metrics``, ``/healthz`` and ``/readyz`` (``child.base_url``, kept
across restarts; ``theodolite up`` prints them); otherwise none serves them.

:class:`Supervisor` restarts children that exit, with backoff (:class:`RestartPolicy`: 1 s
doubling to 30 s, back to 1 s for a child that had run a minute); ``theodolite up`` uses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from shared.distributed_errors import BrokerUnavailable
from shared.settings import Settings
from shared.transport import Broker

METRICS_PORT_OPTION = "--metrics-port"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_answers(host: str, port: int, timeout_s: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def parse_workers(text: str) -> dict[str, int]:
    """``"cpu=2,gpu=1"`` -> ``{"cpu": 2, "gpu": 1}``."""
    workers: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        device, sep, count = part.partition("=")
        if not sep or not device.strip() or not count.strip().isdigit():
            raise ValueError(f"expected DEVICE=COUNT[,DEVICE=COUNT...], got {part!r}")
        workers[device.strip()] = int(count)
    return workers


def nx_27017_command() -> str:
    found = shutil.which("nx-27017") or str(Path(sys.executable).with_name("nx-27017"))
    if not Path(found).exists():
        raise FileNotFoundError("nx-27017 is not installed (pip install nx-27017) and THEODOLITE_MONGO_URL is not set")
    return found


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: IO[bytes] | None = None
    args: list[str] = field(default_factory=list)
    """The ``theodolite`` arguments it was started with (a restart uses them again)."""
    role: str = ""
    """``planner`` or ``worker``."""
    started_at: float = field(default_factory=time.monotonic)

    @property
    def metrics_port(self) -> int:
        """The port of its ``/metrics``, ``/healthz`` and ``/readyz`` (0: it serves none)."""
        if METRICS_PORT_OPTION not in self.args[:-1]:
            return 0
        return int(self.args[self.args.index(METRICS_PORT_OPTION) + 1])

    @property
    def base_url(self) -> str | None:
        """``http://127.0.0.1:PORT`` of its metrics and health endpoints, or None."""
        return f"http://127.0.0.1:{self.metrics_port}" if self.metrics_port else None


class ChildList(list[Child]):
    """Every process a cluster started (a plain list); called, the live ones of a role:
    ``cluster.children("planner")``, ``cluster.children("worker")``."""

    def __call__(self, role: str | None = None) -> list[Child]:
        return [c for c in self if (role is None or c.role == role) and c.process.poll() is None]


def planner_name(index: int) -> str:
    """``planner`` for the first planner (its log is ``planner.log``), ``planner-1``, ... after."""
    return "planner" if index == 0 else f"planner-{index}"


def exit_text(code: int) -> str:
    """``exited with code 1``; ``was killed by SIGKILL`` for a negative (signal) code."""
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


@dataclass(frozen=True)
class RestartPolicy:
    """How long to wait before restarting a child that exited: ``first_s`` doubling with each
    exit in a row, at most ``max_s``; a child that had run ``reset_after_s`` starts over."""

    first_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def delay_s(self, exits_in_a_row: int) -> float:
        return float(min(self.max_s, self.first_s * 2 ** max(exits_in_a_row - 1, 0)))

    def next(self, exits_before: int, ran_s: float) -> tuple[int, float]:
        """(exits in a row now, delay before the restart) for a child that ran ``ran_s``."""
        exits = 1 if ran_s >= self.reset_after_s else exits_before + 1
        return exits, self.delay_s(exits)


class MongoWireServer:
    """An nx-27017 process on a free port with its own pid file and data directory."""

    def __init__(self, data_dir: Path | str | None = None, *, port: int | None = None, log_dir: Path | None = None) -> None:
        self.port = port or free_port()
        self._tmp = None if data_dir is not None else tempfile.TemporaryDirectory(prefix="theodolite-mongo-")
        self.data_dir = Path(data_dir) if data_dir is not None else Path(self._tmp.name)  # type: ignore[union-attr]
        self.log_dir = log_dir or self.data_dir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        command = [nx_27017_command(), "--port", str(self.port), "--pid-file", str(self.data_dir / "nx-27017.pid"),
                   "--data-dir", str(self.data_dir / "data"), "--log-file", str(self.log_dir / "nx-27017.log")]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while not port_answers("127.0.0.1", self.port):
            if self.process.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.process.returncode}; see {self.log_dir / 'nx-27017.log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"nx-27017 did not answer on port {self.port} within {timeout_s:g} s")
            time.sleep(0.1)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


class LocalCluster:
    """Planner and workers as separate processes sharing ``settings`` through the environment."""

    def __init__(self, settings: Settings, workers: Mapping[str, int], *, plugin_dirs: Sequence[str | Path] = (),
                 start_mongo: bool | None = None, mongo_data_dir: Path | str | None = None, log_dir: Path | str | None = None,
                 worker_concurrency: int | None = None, extra_env: Mapping[str, str] | None = None, planners: int = 1,
                 metrics: bool = False) -> None:
        self.settings = settings
        self.workers = dict(workers)
        self.plugin_dirs = [str(Path(d).resolve()) for d in plugin_dirs]
        self.start_mongo = ("THEODOLITE_MONGO_URL" not in os.environ) if start_mongo is None else start_mongo
        self.mongo_data_dir = mongo_data_dir
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.worker_concurrency = worker_concurrency
        self.extra_env = dict(extra_env or {})
        if planners < 1:
            raise ValueError(f"a cluster needs at least one planner, not {planners}")
        self.planners = planners
        self.metrics = metrics
        self.mongo: MongoWireServer | None = None
        self.children = ChildList()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    # starting -----------------------------------------------------------------------------
    def start(self) -> None:
        try:
            if self.start_mongo:
                self.mongo = MongoWireServer(self.mongo_data_dir, log_dir=self.log_dir)
                self.mongo.start()
                self.settings = self.settings.model_copy(update={"mongo_url": self.mongo.url})
            for index in range(self.planners):
                self.start_planner(index)
            for device, count in self.workers.items():
                for index in range(count):
                    self.start_worker(device, index)
        except BaseException:
            self.stop()
            raise

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(self.settings.child_environment())
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(self.extra_env)
        return env

    def _spawn(self, name: str, args: list[str], role: str) -> Child:
        """Start ``theodolite ARGS`` as ``name``; it replaces a child of that name that exited."""
        for old in [c for c in self.children if c.name == name and c.process.poll() is not None]:
            if old.log is not None:
                old.log.close()
            self.children.remove(old)
        log: IO[bytes] | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - closed in stop()
        plugins = [arg for d in self.plugin_dirs for arg in ("--plugins", d)]
        process = subprocess.Popen([sys.executable, "-m", "services.cli", *args, *plugins], env=self.environment(),
                                   stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT if log else subprocess.DEVNULL,
                                   cwd=str(Path(__file__).resolve().parent.parent))
        child = Child(name, process, log, args=list(args), role=role)
        self.children.append(child)
        return child

    def start_planner(self, index: int | None = None) -> Child:
        """Planner ``index`` (0: ``planner``); by default the first whose process is not running."""
        if index is None:
            live = {c.name for c in self.children("planner")}
            index = next(i for i in range(len(live) + 1) if planner_name(i) not in live)
        return self._spawn(planner_name(index), ["planner", *self._metrics_args()], "planner")

    def _metrics_args(self) -> list[str]:
        """``--metrics-port`` of a new service: a free port of its own, or 0 (none), whatever
        THEODOLITE_METRICS_PORT says (the services of one machine cannot share a port)."""
        return [METRICS_PORT_OPTION, str(free_port() if self.metrics else 0)]

    def start_worker(self, device: str, index: int = 0) -> Child:
        args = ["worker", "--device", device, *self._metrics_args()]
        if self.worker_concurrency:
            args += ["--concurrency", str(self.worker_concurrency)]
        return self._spawn(f"worker-{device}-{index}", args, "worker")

    def restart(self, child: Child) -> Child:
        """Start an exited child again: same name, arguments and log file."""
        return self._spawn(child.name, child.args, child.role)

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.name == name and c.process.poll() is None)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the planner consumes notices and every device queue has its workers."""
        asyncio.run(self._wait_ready(timeout_s))

    async def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        async with Broker(self.settings, name="theodolite-cluster-probe") as broker:
            wanted = {broker.names.notices_queue: 1}
            wanted.update({broker.names.steps_queue(d): n for d, n in self.workers.items() if n})
            while True:
                try:
                    counts = {q: await broker.queue_consumers(q) for q in wanted}
                except BrokerUnavailable:  # RabbitMQ restarting: the probe reconnects, ask again
                    counts = dict.fromkeys(wanted)
                if all((counts[q] or 0) >= n for q, n in wanted.items()):
                    return
                dead = [c.name for c in self.children if c.process.poll() is not None]
                if dead:
                    raise RuntimeError(f"cluster processes exited during start-up: {', '.join(dead)}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"cluster not ready after {timeout_s:g} s: consumers {counts}")
                await asyncio.sleep(0.2)

    # stopping -----------------------------------------------------------------------------
    def stop_child(self, child: Child, *, grace_s: float = 30.0, kill: bool = False, signalled: bool = False) -> int:
        """Signal one child (unless already ``signalled``) and wait for it; its exit code."""
        if child.process.poll() is None:
            if not signalled:
                child.process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
            try:
                child.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                child.process.kill()
                child.process.wait()
        if child.log is not None:
            child.log.close()
            child.log = None
        return int(child.process.returncode)

    def stop(self, grace_s: float = 30.0) -> dict[str, int]:
        """SIGTERM workers, then the planners, then the Mongo-wire server; their exit codes."""
        codes: dict[str, int] = {}
        workers = [c for c in self.children if c.role == "worker" or c.name.startswith("worker")]
        for child in workers:
            if child.process.poll() is None:
                child.process.send_signal(signal.SIGTERM)
        for child in workers:
            codes[child.name] = self.stop_child(child, grace_s=grace_s, signalled=True)
        for child in self.children:
            if child not in workers:
                codes[child.name] = self.stop_child(child, grace_s=grace_s)
        self.children.clear()
        if self.mongo is not None:
            self.mongo.stop()
            self.mongo = None
        return codes

    @contextlib.contextmanager
    def supervised(self, every_s: float = 0.2, policy: RestartPolicy | None = None) -> Iterator[Supervisor]:
        """Restart children that exit (a :class:`Supervisor` polled in a thread), as
        ``theodolite up`` does; its lines are in ``supervisor.lines``."""
        supervisor = Supervisor(self, policy)
        done = threading.Event()

        def watch() -> None:
            while not done.wait(every_s):
                supervisor.lines.extend(supervisor.poll())

        thread = threading.Thread(target=watch, name="cluster-supervisor", daemon=True)
        thread.start()
        try:
            yield supervisor
        finally:
            done.set()
            thread.join()

    def describe(self) -> dict[str, Any]:
        return {"namespace": self.settings.namespace, "mongo_url": self.settings.mongo_url,
                "processes": {c.name: c.process.pid for c in self.children},
                "metrics": {c.name: f"{c.base_url}/metrics" for c in self.children if c.base_url}}


class Supervisor:
    """Restarts the children of a :class:`LocalCluster` that exit, with backoff
    (:class:`RestartPolicy`); :meth:`poll` says what it did, one line each, e.g.
    ``planner exited with code 1; restarting in 2 s`` and ``planner restarted: pid 4242``."""

    def __init__(self, cluster: LocalCluster, policy: RestartPolicy | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.policy = policy or RestartPolicy()
        self.clock = clock
        self._exits: dict[str, int] = {}
        self._due: dict[str, tuple[float, Child]] = {}
        self.restarts = 0
        self.lines: list[str] = []
        """What :meth:`LocalCluster.supervised` polled (``up`` prints the lines instead)."""

    def poll(self) -> list[str]:
        now, lines = self.clock(), []
        for child in list(self.cluster.children):
            code = child.process.poll()
            if code is None or child.name in self._due:
                continue
            exits, delay = self.policy.next(self._exits.get(child.name, 0), now - child.started_at)
            self._exits[child.name] = exits
            self._due[child.name] = (now + delay, child)
            lines.append(f"{child.name} {exit_text(code)}; restarting in {delay:g} s")
        for name, (due, child) in sorted(self._due.items()):
            if now < due:
                continue
            del self._due[name]
            if any(c.name == name for c in self.cluster.children(child.role)):
                continue  # started again by someone else meanwhile
            try:
                started = self.cluster.restart(child)
            except OSError as error:
                exits, delay = self.policy.next(self._exits.get(name, 0), 0.0)
                self._exits[name] = exits
                self._due[name] = (now + delay, child)
                lines.append(f"{name} could not be started ({error}); trying again in {delay:g} s")
                continue
            self.restarts += 1
            lines.append(f"{name} restarted: pid {started.process.pid}")
        return lines
