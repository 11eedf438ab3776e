"""The dashboard's one ear on the cluster: a feed of its events, fanned out to the pages.

:class:`Live` is what ``theodolite monitor``'s shell is (:class:`services.monitor_cli._Shell`),
for many readers: one :class:`~services.monitor_feed.Feed` (the history stream, replayed from
a little before the oldest job still running was recorded, as ``monitor --from start`` does,
so the steps running now are known: a worker stores a short step only once it finished; and
the heartbeats), one :class:`~services.monitor_state.MonitorState` it feeds (its
requests answered from MongoDB by :class:`~services.monitor_reads.Reads`; the jobs still
running read at once, so a job that waits for a device shows without any event), and the
device queues' depths asked every :data:`PROBE_S`. ``GET /api/cluster`` is the state's
screen; each server-sent-events reader is a :class:`Subscriber` with a bounded queue:

* every job event goes to the readers of all jobs or of that job (``job``), every worker
  event to every reader (``worker``);
* every :data:`PROBE_S`, when something changed, a ``cluster`` message carries the screen;
* a reader whose queue is full (a slow or stalled page) is dropped, never waited for: its
  stream ends and the page reconnects. The feed never blocks on a page.

So however many pages are open, the cluster sees one consumer of the history stream.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from services.monitor_feed import Feed
from services.monitor_reads import Reads, stream_start
from services.monitor_screen import Screen
from services.monitor_state import MonitorState
from shared.background import cancel_and_wait
from shared.events import Event, WorkerEvent
from shared.resource import AsyncResource
from shared.settings import Settings
from shared.store import Store

PROBE_S = 2.0
"""The device queues' depths are asked, and a changed screen sent, this often."""
QUEUE_SIZE = 1000
"""Messages a reader may lag behind before it is dropped."""
log = logging.getLogger("theodolite.dashboard")


@dataclass(frozen=True)
class Message:
    """One server-sent event: its ``event:`` name and its ``data:`` (one line of JSON)."""

    name: str
    data: str

    def encode(self) -> bytes:
        return f"event: {self.name}\ndata: {self.data}\n\n".encode()


def screen_json(screen: Screen) -> dict[str, Any]:
    """The screen of ``GET /api/cluster``: devices, workers, alarms and the events heard."""
    return {"devices": [dataclasses.asdict(line) for line in screen.devices],
            "workers": [dataclasses.asdict(line) for line in screen.workers],
            "alarms": [dataclasses.asdict(alarm) for alarm in screen.alarms],
            "events": screen.events}


class Subscriber:
    """One reader of the stream: a bounded queue; None in it is the end (dropped, or closing)."""

    def __init__(self, job_id: str | None, size: int) -> None:
        self.job_id = job_id
        self.dropped = False
        self._queue: asyncio.Queue[Message | None] = asyncio.Queue(size)

    def wants(self, message: Message, job_id: str | None) -> bool:
        return message.name != "job" or self.job_id is None or job_id == self.job_id

    def offer(self, message: Message) -> bool:
        """Queue ``message``; False (and the reader ended) when its queue is full."""
        try:
            self._queue.put_nowait(message)
        except asyncio.QueueFull:
            self.end(dropped=True)
            return False
        return True

    def end(self, *, dropped: bool = False) -> None:
        """End the stream: what is queued is discarded, the reader gets None next."""
        self.dropped = self.dropped or dropped
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def next(self, timeout_s: float) -> Message | None:
        """The next message (None: the end); TimeoutError when none came within ``timeout_s``."""
        return await asyncio.wait_for(self._queue.get(), timeout_s)


class Live(AsyncResource):
    """The feed, the state and the readers (see the module docstring); opened on a store that
    stays open while it is."""

    def __init__(self, settings: Settings, store: Store, *, probe_s: float = PROBE_S, queue_size: int = QUEUE_SIZE) -> None:
        self.settings, self.store = settings, store
        self.state = MonitorState()
        self.probe_s, self.queue_size = probe_s, queue_size
        self._subscribers: set[Subscriber] = set()
        self._feed: Feed | None = None
        self._reads: Reads | None = None
        self._ticker: asyncio.Task[None] | None = None
        self._version = 0
        """Bumped by every change of the state: a ``cluster`` message goes when it moved."""

    async def open(self) -> None:
        beginning = await stream_start(self.store, None, True, time.time())
        self._reads = Reads(self.store, self.state, changed=self._changed, warn=log.warning)
        try:
            self._feed = Feed(self.settings, beginning.offset, self._on_event)
            await self._feed.open()
            self._reads.ask(self.state.begin(beginning.jobs, beginning.replay))
            self._ticker = asyncio.get_running_loop().create_task(self._tick(self._feed), name="dashboard-probe")
        except BaseException:
            await self.close()
            raise

    async def close(self) -> None:
        self.hang_up()
        ticker, self._ticker = self._ticker, None
        await cancel_and_wait(ticker)
        feed, self._feed = self._feed, None
        if feed is not None:
            await feed.close()
        reads, self._reads = self._reads, None
        if reads is not None:
            await reads.close()

    # readers ------------------------------------------------------------------------------
    @contextmanager
    def subscribe(self, job_id: str | None = None) -> Iterator[Subscriber]:
        """A reader of the events (of ``job_id`` only, for job events), for the ``with`` block."""
        subscriber = Subscriber(job_id, self.queue_size)
        self._subscribers.add(subscriber)
        try:
            yield subscriber
        finally:
            self._subscribers.discard(subscriber)

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def hang_up(self) -> None:
        """End every reader's stream (the server is stopping: no request may hold it)."""
        for subscriber in list(self._subscribers):
            subscriber.end()
        self._subscribers.clear()

    def screen(self, now: float) -> dict[str, Any]:
        return screen_json(self.state.screen(now))

    def _send(self, message: Message, job_id: str | None = None) -> None:
        for subscriber in list(self._subscribers):
            if subscriber.wants(message, job_id) and not subscriber.offer(message):
                self._subscribers.discard(subscriber)
                log.info("a reader of the event stream fell %d messages behind: dropped", self.queue_size)

    # the feed -----------------------------------------------------------------------------
    def _changed(self) -> None:
        self._version += 1

    def _on_event(self, event: Event | WorkerEvent) -> None:
        applied = self.state.apply(event)
        if applied.gap is not None:  # mended by itself (a resync is asked): nothing for the operator to do
            log.info("%s", applied.gap.describe())
        if applied.requests and self._reads is not None:
            self._reads.ask(applied.requests)
        if not applied.fresh:
            return  # a repeat (a publish sent again): pages heard it once
        self._changed()
        if isinstance(event, WorkerEvent):
            self._send(Message("worker", event.model_dump_json()))
        else:
            self._send(Message("job", event.model_dump_json()), event.job_id)

    async def _tick(self, feed: Feed) -> None:
        sent, depths = -1, None
        while True:
            try:
                found = await feed.depths(self.state.devices())
                if found != depths:
                    self.state.queues(found)
                    depths = found
                    self._changed()
                if sent != self._version and self._subscribers:
                    sent = self._version
                    self._send(Message("cluster", json.dumps(self.screen(time.time()))))
            except Exception:  # a probe that failed: the next round asks again
                log.exception("probing the cluster failed")
            await asyncio.sleep(self.probe_s)
