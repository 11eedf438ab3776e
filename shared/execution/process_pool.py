"""Long-lived child processes that run tasks, one per execution slot.

Children start on first need with ``forkserver`` (``spawn`` where there is none): the fork server
is a fresh interpreter that preloads numpy and the codec, so a child costs a few milliseconds
and never inherits the parent's threads, JAX state or sockets. A child serves one request at a
time over a pipe (:mod:`shared.execution.wire`); the slot that holds it waits on the pipe and on
the child's exit at once, so it notices a crash at once, warns at 80 % of a timeout and kills
the child at 100 %. A dead, killed or over-limit child is replaced by a fresh one on the slot's
next call; the other slots never notice. :meth:`ProcessPool.close` ends every child (idle ones
are asked to exit, busy ones are killed); children are daemons, and each also exits by itself
when its parent dies (see :mod:`shared.execution.child`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import multiprocessing
import multiprocessing.process
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Self

from shared import codec
from shared.errors import StepCancelledError, StepInterruptedError, StepTimeoutError, TaskCrashError
from shared.execution import child as child_module
from shared.execution import wire
from shared.execution.cancellation import Cancellation
from shared.execution.child_reports import CANCEL_SIGNAL
from shared.execution.options import TIMEOUT_WARNING_FRACTION
from shared.execution.timeouts import TimeoutWarning, warn_safely

log = logging.getLogger("theodolite.execution")
START_TIMEOUT_S = 60.0
"""How long a new child may take to say it is ready."""
STOP_TIMEOUT_S = 2.0
"""How long :meth:`ProcessPool.close` lets idle children exit before killing them."""
KILL_WAIT_S = 5.0
SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
PRELOADED = ["shared.execution.child", "shared.execution.process_pool"]
"""Imported once by the fork server, so every child starts with numpy, BSON and the codec."""

Reply = tuple[dict[str, Any], list[codec.Blob]]
Progress = Callable[[dict[str, Any]], None]
"""``on_progress(frame)``: a running task's report (``{"metrics": [...]}`` or ``{"logs": "..."}``)."""
CANCEL_POLL_S = 0.1
"""While a cancellable call runs, how often its slot looks whether a cancel was requested."""


def report_safely(on_progress: Progress, frame: dict[str, Any]) -> None:
    """Call a progress hook; what it raises is logged, never charged to the step."""
    try:
        on_progress(frame)
    except Exception:
        log.exception("the progress hook raised")


def start_context(method: str | None = None) -> multiprocessing.context.BaseContext:
    """``forkserver`` where the platform has it, else ``spawn``; never ``fork``."""
    if method is None:
        method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if method == "fork":
        raise ValueError("task children are never forked from a parent that may hold threads or JAX")
    context = multiprocessing.get_context(method)
    if method == "forkserver":
        context.set_forkserver_preload(PRELOADED)
    return context


def process_class(context: multiprocessing.context.BaseContext) -> Callable[..., multiprocessing.process.BaseProcess]:
    """The context's Process; for ``forkserver``, one whose children skip re-running the
    parent's ``__main__`` (what multiprocessing does so that pickled ``__main__`` objects
    resolve: we send none). A script without an ``if __name__ == "__main__"`` guard can then
    use the runner, and a child costs no import of the parent's entry point."""
    if context.get_start_method() == "forkserver" and BareMainProcess is not None:
        return BareMainProcess
    return context.Process  # type: ignore[attr-defined]


try:
    from multiprocessing import forkserver as _forkserver
    from multiprocessing import popen_forkserver as _popen_forkserver
    from multiprocessing import reduction as _reduction
    from multiprocessing import spawn as _spawn
    from multiprocessing import util as _util
    from multiprocessing.context import ForkServerProcess as _ForkServerProcess
    from multiprocessing.context import set_spawning_popen as _set_spawning_popen
except ImportError:  # no fd passing on this platform: plain processes
    BareMainProcess: type[multiprocessing.process.BaseProcess] | None = None
else:
    class BareMainPopen(_popen_forkserver.Popen):
        """``popen_forkserver.Popen`` whose child does not re-run the parent's ``__main__``, and
        whose exit status can be read from two threads at once.

        Upstream's ``poll`` reads the status from the sentinel without a lock: when two threads
        poll the same dead child (ours reaping a crash while another thread's
        ``Process.start()`` runs multiprocessing's ``_cleanup``, which polls every child), one
        reads the status and the other reads end-of-file, which upstream turns into exit code
        255 (a crash reported as ``exit code 255`` instead of ``exit code 1``)."""

        def __init__(self, process_obj: Any) -> None:
            self._status_lock = threading.Lock()
            super().__init__(process_obj)

        def poll(self, flag: int = os.WNOHANG) -> int | None:
            if self.returncode is None:
                if not wait([self.sentinel], 0 if flag == os.WNOHANG else None):
                    return None
                with self._status_lock:
                    if self.returncode is None:
                        try:
                            self.returncode = _forkserver.read_signed(self.sentinel)
                        except (OSError, EOFError):  # as upstream: the fork server itself died
                            self.returncode = 255
            return self.returncode

        def _launch(self, process_obj: Any) -> None:  # upstream's _launch, less the __main__ keys
            prep_data = _spawn.get_preparation_data(process_obj._name)
            prep_data.pop("init_main_from_name", None)
            prep_data.pop("init_main_from_path", None)
            buf = io.BytesIO()
            _set_spawning_popen(self)
            try:
                _reduction.dump(prep_data, buf)
                _reduction.dump(process_obj, buf)
            finally:
                _set_spawning_popen(None)
            self.sentinel, w = _forkserver.connect_to_new_process(self._fds)  # type: ignore[attr-defined]
            parent_w = os.dup(w)  # the child's sentinel of this process, as upstream
            self.finalizer = _util.Finalize(self, _util.close_fds, (parent_w, self.sentinel))  # type: ignore[attr-defined]
            with open(w, "wb", closefd=True) as stream:
                stream.write(buf.getbuffer())
            self.pid = _forkserver.read_signed(self.sentinel)

    class _BareMainProcess(_ForkServerProcess):
        @staticmethod
        def _Popen(process_obj: Any) -> BareMainPopen:
            return BareMainPopen(process_obj)

    BareMainProcess = _BareMainProcess


def logging_config() -> dict[str, Any] | None:
    """The root logger's level and format, when this process logs to a stream (a worker), so a
    task's own log lines look the same from a child; None leaves the child's logging alone."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if type(h) is logging.StreamHandler), None)
    if handler is None:
        return None
    formatter = handler.formatter
    return {"level": root.level, "format": getattr(formatter, "_fmt", None), "datefmt": getattr(formatter, "datefmt", None)}


def crash_reason(exitcode: int | None) -> str:
    """``crashed: signal 11 (SIGSEGV)`` or ``crashed: exit code 3``."""
    if exitcode is None:
        return "crashed: the child stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            return f"crashed: signal {-exitcode}"
        return f"crashed: signal {-exitcode} ({name})"
    return f"crashed: exit code {exitcode}"


def _widen(end: Connection) -> None:
    """Larger socket buffers: a big array crosses in fewer, larger writes."""
    with contextlib.suppress(OSError):
        sock = socket.socket(fileno=os.dup(end.fileno()))
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER_BYTES)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SOCKET_BUFFER_BYTES)


class ChildProcess:
    """The parent's handle on one child: its process, its request pipe and its lifeline."""

    def __init__(self, context: multiprocessing.context.BaseContext, config: dict[str, Any], name: str) -> None:
        ours, theirs = context.Pipe(duplex=True)
        for end in (ours, theirs):
            _widen(end)
        life_r, life_w = context.Pipe(duplex=False)
        self.process = process_class(context)(target=child_module.serve, args=(theirs, life_r, config), name=name, daemon=True)
        try:
            self.process.start()
        finally:
            theirs.close()
            life_r.close()
        self.conn: Connection = ours
        self._lifeline: Connection = life_w
        self._closing = threading.Lock()
        """Pipes may be closed by the thread running a step and by the pool's close at once."""
        self.pid = self.process.pid
        self._poller = select.poll() if hasattr(select, "poll") else None
        if self._poller is not None:  # one poll set per child: cheaper than a selector per wait
            for fd in (self.conn.fileno(), self.process.sentinel):
                self._poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)

    @property
    def alive(self) -> bool:
        """Not known dead: our pipe is open and its exit is not pending (a cheap, non-blocking
        look at the sentinel, so a child that died idle is replaced before a step is sent to it)."""
        if self.conn.closed:
            return False
        try:
            exited, _, _ = select.select([self.process.sentinel], [], [], 0)
        except (OSError, ValueError):
            return False
        return not exited

    def wait_ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until the child says it is ready; a child that dies or hangs meanwhile is a crash."""
        ready = wait([self.conn, self.process.sentinel], timeout_s)
        if self.conn in ready:
            with contextlib.suppress(EOFError, OSError):
                header, _ = wire.receive(self.conn)
                if "ready" in header:
                    return
        self.kill()
        raise TaskCrashError("", f"{crash_reason(self.process.exitcode)} while starting")

    def call(self, step: str, header: dict[str, Any], blobs: Sequence[codec.Blob], *,
             timeout_s: float | None = None, on_warning: TimeoutWarning | None = None,
             on_progress: Progress | None = None, cancel: Cancellation | None = None) -> Reply:
        """Send one request and wait for its reply, handing the progress frames that come
        first to ``on_progress``. A timeout kills the child (:class:`StepTimeoutError`), so
        does the end of a cancel's grace (:class:`StepCancelledError`; the child is told at
        once with :data:`CANCEL_SIGNAL`); a child that dies is a :class:`TaskCrashError`."""
        started = time.monotonic()
        try:
            wire.send(self.conn, header, blobs)
        except OSError:
            raise self._crashed(step) from None
        warn_at = None if timeout_s is None or on_warning is None else started + timeout_s * TIMEOUT_WARNING_FRACTION
        kill_at = None if timeout_s is None else started + timeout_s
        told = False
        while True:
            if cancel is not None and not told and cancel.requested():
                told = True
                with contextlib.suppress(OSError):
                    os.kill(self.pid or 0, CANCEL_SIGNAL)
            stop_at = cancel.stop_at if told and cancel is not None else None
            poll_at = time.monotonic() + CANCEL_POLL_S if cancel is not None else None  # a new request may shorten the grace
            next_at = min((t for t in (warn_at, kill_at, stop_at, poll_at) if t is not None), default=None)
            replied, exited = self._wait(None if next_at is None else max(0.0, next_at - time.monotonic()))
            if replied:
                try:
                    reply = wire.receive(self.conn)
                except (EOFError, OSError):
                    raise self._crashed(step) from None
                if "progress" not in reply[0]:
                    return reply
                if on_progress is not None:
                    report_safely(on_progress, reply[0]["progress"])
                continue
            if exited:
                raise self._crashed(step)
            now = time.monotonic()
            if stop_at is not None and now >= stop_at:
                self.kill()
                raise StepCancelledError(step)
            if warn_at is not None and now >= warn_at:
                warn_at = None
                assert on_warning is not None and timeout_s is not None
                warn_safely(on_warning, now - started, timeout_s)
            if kill_at is not None and now >= kill_at:
                self.kill()
                assert timeout_s is not None
                raise StepTimeoutError(step, timeout_s)

    def _wait(self, timeout_s: float | None) -> tuple[bool, bool]:
        """(a reply is readable, the child has exited), after at most ``timeout_s``."""
        if self._poller is None:
            ready = wait([self.conn, self.process.sentinel], timeout_s)
            return self.conn in ready, self.process.sentinel in ready
        events = dict(self._poller.poll(None if timeout_s is None else math.ceil(timeout_s * 1000)))
        return self.conn.fileno() in events, self.process.sentinel in events

    def _crashed(self, step: str) -> TaskCrashError:
        self.process.join(KILL_WAIT_S)  # the pipe may close a moment before the exit status is known
        error = TaskCrashError(step, crash_reason(self.process.exitcode))
        self.kill()
        return error

    def kill(self) -> None:
        """SIGKILL (a no-op if it has exited), reap it, close our ends of its pipes."""
        with contextlib.suppress(OSError, ValueError):
            if self.process.exitcode is None:
                self.process.kill()
            self.process.join(KILL_WAIT_S)
        self.close_pipes()

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> None:
        """Ask an idle child to exit (closing its pipe is enough); kill it if it lingers."""
        self.close_pipes()
        with contextlib.suppress(OSError, ValueError):
            self.process.join(timeout_s)
        self.kill()

    def close_pipes(self) -> None:
        """Close our ends of the child's pipes, once (safe from two threads at once)."""
        with self._closing:
            for end in (self.conn, self._lifeline):
                if not end.closed:
                    with contextlib.suppress(OSError):
                        end.close()


class Slot:
    """One execution slot: holds a child (started on first call, replaced after a crash,
    timeout or memory limit) for the duration of a step and all its attempts."""

    def __init__(self, pool: ProcessPool, child: ChildProcess | None) -> None:
        self.pool = pool
        self.child = child

    def call(self, step: str, header: dict[str, Any], blobs: Sequence[codec.Blob], *,
             timeout_s: float | None = None, on_warning: TimeoutWarning | None = None,
             on_progress: Progress | None = None, cancel: Cancellation | None = None) -> Reply:
        if self.child is None or not self.child.alive:
            self.replace()
            self.child = self.pool._start_child()
        try:
            return self.child.call(step, header, blobs, timeout_s=timeout_s, on_warning=on_warning,
                                   on_progress=on_progress, cancel=cancel)
        except StepInterruptedError:
            self.replace()
            raise

    def replace(self) -> None:
        """Drop this slot's child (killed); the next call starts a fresh one."""
        if self.child is not None:
            self.pool._forget(self.child)
            self.child.kill()
            self.child = None


class ProcessPool:
    """At most ``size`` children, each serving one slot at a time; thread-safe."""

    def __init__(self, size: int, *, plugin_dirs: Sequence[str | Path] = (), start_method: str | None = None) -> None:
        self.size = max(1, size)
        self.plugin_dirs = [str(Path(d)) for d in plugin_dirs]
        self.start_method = start_method
        self.started = 0
        """Children started so far (replacements included)."""
        self._context: multiprocessing.context.BaseContext | None = None
        self._idle: list[ChildProcess] = []
        self._children: set[ChildProcess] = set()
        self._slots = threading.BoundedSemaphore(self.size)
        self._lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def slot(self) -> Iterator[Slot]:
        """A free slot (waits for one), with the most recently used idle child."""
        self._slots.acquire()
        try:
            with self._lock:
                if self._closed:
                    raise RuntimeError("the task process pool is closed")
                held = Slot(self, self._idle.pop() if self._idle else None)
            try:
                yield held
            finally:
                with self._lock:
                    child, held.child = held.child, None
                    keep = child is not None and child.alive and not self._closed
                    if keep:
                        assert child is not None
                        self._idle.append(child)
                if child is not None and not keep:
                    self._forget(child)
                    child.kill()
        finally:
            self._slots.release()

    def children(self) -> list[int]:
        """The pids of the live children (for tests and logs)."""
        with self._lock:
            return [c.pid for c in self._children if c.alive and c.pid is not None]

    def close(self) -> None:
        """End every child: idle ones exit, busy ones are killed. Idempotent."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            busy = [c for c in self._children if c not in idle]
            self._children.clear()
        for child in busy:
            child.kill()
        for child in idle:  # all asked at once, then each waited for
            child.close_pipes()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for child in idle:
            child.stop(max(0.0, deadline - time.monotonic()))

    def _start_child(self) -> ChildProcess:
        with self._lock:
            if self._closed:
                raise RuntimeError("the task process pool is closed")
            if self._context is None:
                self._context = start_context(self.start_method)
            context = self._context
            self.started += 1
            number = self.started
        config = {"env": dict(os.environ), "plugin_dirs": self.plugin_dirs, "logging": logging_config()}
        child = ChildProcess(context, config, name=f"theodolite-task-{number}")
        with self._lock:
            self._children.add(child)
        try:
            child.wait_ready()
        except BaseException:
            self._forget(child)
            child.kill()
            raise
        log.debug("task child %d started (pid %s)", number, child.pid)
        return child

    def _forget(self, child: ChildProcess) -> None:
        with self._lock:
            self._children.discard(child)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
