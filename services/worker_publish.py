"""What a worker tells the others: completion notices (to the planner) and running events
(to monitors), both transient — MongoDB holds every result."""

from __future__ import annotations

import asyncio
import logging

from shared.constants import NOTICE_KEY, step_event_key
from shared.messages import Event, EventBatch, NoticeBatch, StepDispatch, StepNotice, encode
from shared.states import StepState
from shared.transport import Broker, Outgoing

log = logging.getLogger("theodolite.worker")
EVENT_FLUSH_S = 0.05


class WorkerPublisher:
    """Publishes a delivery's notices in one message, and "step.running" events in batches
    (one message per job per flush, not one per step: a fan-out starts thousands at once)."""

    def __init__(self, broker: Broker, worker_id: str) -> None:
        self.broker = broker
        self.worker_id = worker_id
        self._running: list[Event] = []

    async def notices(self, notices: list[StepNotice]) -> None:
        """One completion message for the steps of a delivery (confirmed, not persistent)."""
        message: StepNotice | NoticeBatch = notices[0] if len(notices) == 1 else NoticeBatch(notices=notices)
        await self.broker.publish(Outgoing(self.broker.names.notices_exchange, NOTICE_KEY, encode(message), message.kind,
                                           persistent=False))

    def running(self, dispatch: StepDispatch) -> None:
        """A step starts running here (published with the next flush)."""
        self._running.append(Event(type="step.running", job_id=dispatch.job_id, step=dispatch.step, state=StepState.RUNNING,
                                   attempt=dispatch.attempt, worker_id=self.worker_id))

    def timeout_warning(self, dispatch: StepDispatch, elapsed_s: float, timeout_s: float) -> None:
        """A running step has used 80 % of its timeout (``step.timeout_warning``, next flush);
        at 100 % its task is stopped and the step fails with kind ``timeout``."""
        self._running.append(Event(type="step.timeout_warning", job_id=dispatch.job_id, step=dispatch.step,
                                   state=StepState.RUNNING, attempt=dispatch.attempt, worker_id=self.worker_id,
                                   detail={"elapsed_s": round(elapsed_s, 3), "timeout_s": timeout_s}))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(EVENT_FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        events, self._running = self._running, []
        by_job: dict[str, list[Event]] = {}
        for event in events:
            by_job.setdefault(str(event.job_id), []).append(event)
        for job_id, job_events in by_job.items():
            batch = EventBatch(job_id=job_id, events=job_events)
            try:
                await self.broker.publish(Outgoing(self.broker.names.events_exchange, step_event_key(job_id), encode(batch),
                                                   batch.kind, persistent=False))
            except Exception:
                log.exception("publishing step events failed")
