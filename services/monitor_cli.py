"""``theodolite monitor [--job ID] [--from start|now] [--json]``: a live view of a cluster,
driven by its events (docs/operations.md, "theodolite monitor").

The thin asyncio shell around :class:`~services.monitor_state.MonitorState`: it opens the
store and the :class:`~services.monitor_feed.Feed`, hands every event to the state, carries out
the state's requests (:class:`~services.monitor_reads.Reads`), asks the broker for the depth
of the device queues every ``PROBE_S``, and draws the state's screen
(:func:`services.monitor_view.render`) in a rich ``Live`` every ``REFRESH_S``, or prints each
event as one JSON line (``--json``).

Exit codes: 0 (``--job``: the job ended; without: Ctrl-C), 1 RabbitMQ or MongoDB out of
reach, 130 Ctrl-C before the watched job ended (it runs on).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

import click

from services.distributed_cli import _settings
from services.follow import EXIT_DETACHED
from services.job_input import EXIT_FAILED, EXIT_OK
from shared.background import cancel_and_wait

if TYPE_CHECKING:  # the command's modules are imported when it runs (theodolite starts fast)
    from rich.console import Console

    from services.monitor_feed import Feed
    from services.monitor_reads import Reads
    from services.monitor_screen import Screen
    from services.monitor_state import MonitorState
    from shared.events import Event, WorkerEvent
    from shared.settings import Settings

REFRESH_S = 0.5
"""The view is drawn again this often."""
PROBE_S = 2.0
"""The device queues' depths are asked this often."""


class Start(StrEnum):
    START = "start"
    """Replay the job's events (or those of every job still running) from the history stream."""
    NOW = "now"
    """Only what happens from now on; the state so far is read from MongoDB."""


@dataclass(frozen=True)
class Options:
    job_id: str | None
    start: Start
    as_json: bool
    color: bool = True


class Output(Protocol):
    draws: bool
    """Whether it draws screens (else the queue depths are not asked)."""

    def event(self, event: Event | WorkerEvent) -> None: ...

    def started(self) -> None:
        """The monitor hears the cluster now."""

    def warn(self, text: str) -> None: ...

    def draw(self, screen: Screen) -> None: ...

    def finish(self, screen: Screen, note: str | None) -> None: ...


class JsonLines:
    """``--json``: each event heard for the first time as one line on stdout."""

    draws = False

    def event(self, event: Event | WorkerEvent) -> None:
        sys.stdout.write(event.model_dump_json() + "\n")
        sys.stdout.flush()

    def started(self) -> None:
        return None

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def draw(self, screen: Screen) -> None:
        return None

    def finish(self, screen: Screen, note: str | None) -> None:
        if note:
            print(note, file=sys.stderr, flush=True)


class LiveView:
    """The view in a rich ``Live`` on stdout: redrawn in place on a terminal; elsewhere (a pipe,
    a file, ``TERM=dumb``) printed once, at the end, never wrapped or cut, and what a log of
    it needs as it happens on stderr: each alarm and each worker online or gone, when first seen."""

    draws = True

    def __init__(self, console: Console) -> None:
        from rich.live import Live

        self.console = console
        self.live = Live(console=console, auto_refresh=False, transient=False, redirect_stdout=False, redirect_stderr=False)
        self._noted: set[str] = set()
        """The change lines already printed (off a terminal), so each is printed once."""

    def event(self, event: Event | WorkerEvent) -> None:
        return None

    def started(self) -> None:
        if not self.console.is_terminal or self.console.is_dumb_terminal:
            print("theodolite monitor: following the cluster; the view is printed when it stops (Ctrl-C)",
                  file=sys.stderr, flush=True)

    def warn(self, text: str) -> None:
        print(f"warning: {text}", file=sys.stderr, flush=True)

    def draw(self, screen: Screen) -> None:
        if not self.live.is_started:
            self.live.start()
        from services.monitor_view import change_lines, render

        if not self.console.is_terminal or self.console.is_dumb_terminal:
            lines = change_lines(screen)
            for line in lines:
                if line not in self._noted:
                    print(line, file=sys.stderr, flush=True)
            self._noted = set(lines)
        self.live.update(render(screen), refresh=True)

    def finish(self, screen: Screen, note: str | None) -> None:
        self.draw(screen)
        self.live.stop()
        if note:
            print(note, file=sys.stderr, flush=True)


def view_console(*, color: bool) -> Console:
    from rich.console import Console

    from services.result_table import UNBOUNDED_WIDTH

    if sys.stdout.isatty():
        return Console(no_color=not color)
    return Console(width=UNBOUNDED_WIDTH, soft_wrap=True, no_color=not color)


async def monitor(settings: Settings, options: Options, output: Output) -> int:
    """Follow the cluster until the watched job ended (``--job``) or SIGINT/SIGTERM."""
    from pymongo.errors import PyMongoError

    from shared.distributed_errors import DistributedError
    from shared.outages import short

    shell = _Shell(settings, options, output)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not the main thread
            loop.add_signal_handler(sig, shell.stop.set)
    running = asyncio.ensure_future(shell.run())
    stopped = asyncio.ensure_future(shell.stop.wait())
    try:
        # Ctrl-C stops the monitor at any moment, connecting included (a RabbitMQ that is down
        # is waited for with backoff, which must not make the command deaf to Ctrl-C).
        await asyncio.wait({running, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not running.done():
            await cancel_and_wait(running)
        else:
            running.result()
    except DistributedError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    except PyMongoError as error:  # away for longer than the store's reads retry
        print(f"error: MongoDB: {short(error)}", file=sys.stderr, flush=True)
        return EXIT_FAILED
    finally:
        stopped.cancel()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.remove_signal_handler(sig)
    if shell.state.done or options.job_id is None:
        output.finish(shell.state.screen(time.time()), None)
        return EXIT_OK
    output.finish(shell.state.screen(time.time()), f"stopped watching job {options.job_id}; it runs on")
    return EXIT_DETACHED


class _Shell:
    """Feeds the state: events from the feed, answers from MongoDB, queue depths; draws."""

    def __init__(self, settings: Settings, options: Options, output: Output) -> None:
        from services.monitor_state import MonitorState

        self.settings, self.options, self.output = settings, options, output
        self.state: MonitorState = MonitorState(options.job_id)
        self.stop, self.done = asyncio.Event(), asyncio.Event()
        self.reads: Reads | None = None
        self.reading = options.job_id is not None or not options.as_json
        """Whether MongoDB answers the state's requests (``--json`` of every job needs none)."""

    async def run(self) -> None:
        from services.monitor_feed import Feed
        from services.monitor_reads import Reads, stream_start
        from shared.store import Store

        async with Store(self.settings) as store:
            beginning = await stream_start(store, self.options.job_id, self.options.start is Start.START, time.time())
            self.reads = Reads(store, self.state, changed=self.changed, warn=self.output.warn)
            try:
                async with Feed(self.settings, beginning.offset, self.on_event) as feed:
                    if self.reading:
                        self.reads.ask(self.state.begin(beginning.jobs, beginning.replay))
                    self.output.started()
                    await self.follow(feed)
            finally:
                await self.reads.close()

    def changed(self) -> None:
        if self.state.done:
            self.done.set()

    def on_event(self, event: Event | WorkerEvent) -> None:
        applied = self.state.apply(event)
        if applied.fresh and (self.options.job_id is None or event.kind == "event") and not self.stop.is_set():
            try:
                self.output.event(event)
            except BrokenPipeError:  # `theodolite monitor --json | head`: the reader is gone
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is still buffered goes nowhere
                self.stop.set()
        if applied.gap is not None:
            self.output.warn(applied.gap.describe())
        if applied.requests and self.reading and self.reads is not None:
            self.reads.ask(applied.requests)
        self.changed()

    async def follow(self, feed: Feed) -> None:
        probe_at = 0.0
        while not self.stop.is_set() and not self.state.done:
            if self.output.draws and time.time() >= probe_at:
                self.state.queues(await feed.depths(self.state.devices()))
                probe_at = time.time() + PROBE_S
            self.output.draw(self.state.screen(time.time()))
            waiting = [asyncio.ensure_future(self.stop.wait()), asyncio.ensure_future(self.done.wait())]
            try:
                await asyncio.wait(waiting, timeout=REFRESH_S, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiting:
                    waiter.cancel()


@click.command(name="monitor")
@click.option("--job", "job_id", default=None, metavar="ID", help="Only this job; exit 0 once it has ended.")
@click.option("--from", "start", type=click.Choice([s.value for s in Start]), default=Start.START.value, show_default=True,
              help="start: replay the job's events (without --job: those of every job still running) from the history "
                   "stream, then go on live; now: only what happens from now on (the state so far is read from MongoDB).")
@click.option("--json", "as_json", is_flag=True, help="Print each event as one JSON line instead of the view (with --job: "
                                                      "the job's events, in number order).")
@click.option("--no-color", is_flag=True, help="Draw the view without colours.")
def monitor_command(job_id: str | None, start: str, as_json: bool, no_color: bool) -> None:
    """A live view of the cluster, driven by its events: per job a progress bar, its steps by
    state and its running steps with their workers; workers per device (online, busy slots,
    last heartbeat); each device queue's depth and oldest ready step; a loud line for steps
    waiting for a device that no worker serves. Ctrl-C stops watching (the jobs run on).

    Exit 0 (with --job: once the job has ended), 1 RabbitMQ or MongoDB out of reach, 130
    Ctrl-C before the watched job ended."""
    settings = _settings()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    options = Options(job_id=job_id, start=Start(start), as_json=as_json, color=not no_color)
    output: Output = JsonLines() if as_json else LiveView(view_console(color=options.color))
    sys.exit(asyncio.run(monitor(settings, options, output)))


COMMANDS = [monitor_command]
