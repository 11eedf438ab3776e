"""What a worker says besides results: its progress goes to the planner (which numbers the
job's events), ahead of its notices; its presence goes to the events exchange, and a broker
outage never stops the heartbeat."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from services.worker_presence import WorkerPresence
from services.worker_publish import WorkerPublisher
from shared.constants import NOTICE_KEY, PROGRESS_KEY, Names
from shared.distributed_errors import BrokerUnavailable
from shared.events import WorkerEvent, WorkerEventType
from shared.messages import Progress, StepDispatch, StepNotice, parse_reports
from shared.states import StepState
from shared.transport import Outgoing
from tests.unit.worker.test_worker_pipeline import (
    CHAIN,
    add_job,
    broker_of,
    make_worker,
    plugin_dir,
    serving,
    step_message,
)

__all__ = ["make_worker", "plugin_dir"]  # fixtures
pytestmark = pytest.mark.timeout(30)
DISPATCH = StepDispatch(job_id="j1", step="a", attempt=2, device="cpu")


class Recorder:
    """A broker that records publishes, failing the first ``failures`` of them."""

    def __init__(self, failures: int = 0) -> None:
        self.names = Names("unit")
        self.published: list[Outgoing] = []
        self.failures = failures

    async def publish(self, item: Outgoing, *, timeout_s: float | None = None) -> bool:
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("publish", timeout_s or 0.0)
        self.published.append(item)
        return True


async def test_progress_rides_ahead_of_the_next_notices_or_goes_alone_on_a_flush() -> None:
    broker = Recorder()
    publisher = WorkerPublisher(broker, "w1")  # type: ignore[arg-type]
    publisher.running(DISPATCH)
    publisher.timeout_warning(DISPATCH, 8.04, 10.0)
    notice = StepNotice(job_id="j1", step="a", attempt=2, outcome=StepState.SUCCEEDED, worker_id="w1")
    await publisher.notices([notice])
    (sent,) = broker.published
    assert (sent.exchange, sent.routing_key, sent.persistent) == ("unit.notices", NOTICE_KEY, False)
    notices, progress = parse_reports(sent.body, 1 << 20)
    assert notices == [notice]
    assert [(p.progress, p.step, p.attempt, p.worker_id) for p in progress] == [(Progress.RUNNING, "a", 2, "w1"),
                                                                                (Progress.TIMEOUT_WARNING, "a", 2, "w1")]
    assert progress[1].elapsed_s == 8.04 and progress[1].timeout_s == 10.0
    publisher.running(DISPATCH)
    await publisher.flush()
    await publisher.flush()  # nothing more to send
    assert [(o.routing_key, o.kind) for o in broker.published[1:]] == [(PROGRESS_KEY, "step.progress.batch")]
    assert parse_reports(broker.published[1].body, 1 << 20)[1][0].progress is Progress.RUNNING


async def test_a_fast_step_is_reported_running_with_its_notice(make_worker: Any) -> None:
    worker = make_worker()
    add_job(worker, CHAIN)
    async with serving(worker):
        await worker.handle(step_message("a"))
    (sent,) = [o for o in broker_of(worker).published if o.exchange.endswith(".notices")]
    notices, progress = parse_reports(sent.body, 1 << 20)
    assert [(p.step, p.progress) for p in progress] == [("a", Progress.RUNNING)] and [n.step for n in notices] == ["a"]


async def test_presence_says_online_beats_through_an_outage_and_says_offline() -> None:
    broker = Recorder()
    load = [(0, 0)]
    presence = WorkerPresence(broker, "gpu-h-1", "gpu", 4, 0.02, lambda: load[-1])  # type: ignore[arg-type]
    assert await presence.announce(WorkerEventType.ONLINE)
    broker.failures = 3  # RabbitMQ away for three beats
    load.append((6, 7))  # six steps held: four running, two waiting for a slot
    beating = asyncio.create_task(presence.run())
    await asyncio.sleep(0.3)
    assert not beating.done(), "the heartbeat task must survive the outage"
    beating.cancel()
    await asyncio.gather(beating, return_exceptions=True)
    assert await presence.announce(WorkerEventType.OFFLINE, timeout_s=0.1)
    events = [WorkerEvent.model_validate_json(o.body) for o in broker.published]
    keys = {o.routing_key for o in broker.published}
    assert keys == {"worker.gpu.worker.online", "worker.gpu.worker.heartbeat", "worker.gpu.worker.offline"}
    assert events[0].type is WorkerEventType.ONLINE and events[-1].type is WorkerEventType.OFFLINE
    beats = [e for e in events if e.type is WorkerEventType.HEARTBEAT]
    assert beats and all((e.device, e.slots, e.busy, e.held, e.load, e.completed) == ("gpu", 4, 4, 6, 1.5, 7) for e in beats)
    seqs = [e.seq for e in events]
    assert seqs == sorted(seqs) and seqs[0] == 1 and seqs[1] > 2, "the missed beats show as a gap in the worker's numbers"
    assert all(o.persistent is False for o in broker.published)
