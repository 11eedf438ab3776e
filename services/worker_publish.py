"""What a worker tells the planner: completion notices and progress (a step started running
here, a step used 80 % of its timeout), both transient — MongoDB holds every result.

Progress goes to the planner rather than to monitors: the planner numbers every event of a
job (``Event.seq``), so the job's ``step.running`` events come from it, in the job's one
numbered stream (docs/events.md)."""

from __future__ import annotations

import asyncio
import logging
import time

from shared.constants import NOTICE_KEY, PROGRESS_KEY
from shared.messages import (
    NoticeBatch,
    Progress,
    ProgressBatch,
    StepDispatch,
    StepNotice,
    StepProgress,
    encode,
)
from shared.task_context import Metric
from shared.transport import Broker, Outgoing

log = logging.getLogger("theodolite.worker")
EVENT_FLUSH_S = 0.05
MAX_PROGRESS = 10_000
"""Progress reports per message (the schema's limit)."""


class WorkerPublisher:
    """Publishes a delivery's notices in one message, and progress in batches (one message
    per flush, not one per step: a fan-out starts thousands at once). Progress not yet sent
    rides with the next notices, ahead of them, so a step that ends within a flush period is
    still reported running before it is reported finished."""

    def __init__(self, broker: Broker, worker_id: str) -> None:
        self.broker = broker
        self.worker_id = worker_id
        self._progress: list[StepProgress] = []

    async def notices(self, notices: list[StepNotice]) -> None:
        """One completion message for the steps of a delivery (confirmed, not persistent),
        with the progress gathered since the last flush."""
        progress, self._progress = self._progress[:MAX_PROGRESS], self._progress[MAX_PROGRESS:]
        message: StepNotice | NoticeBatch = (notices[0] if len(notices) == 1 and not progress
                                             else NoticeBatch(notices=notices, progress=progress))
        await self.broker.publish(Outgoing(self.broker.names.notices_exchange, NOTICE_KEY, encode(message), message.kind,
                                           persistent=False))

    def running(self, dispatch: StepDispatch) -> None:
        """A step starts running here (reported with the next flush or notices)."""
        self._progress.append(StepProgress(job_id=dispatch.job_id, step=dispatch.step, attempt=dispatch.attempt,
                                           worker_id=self.worker_id, progress=Progress.RUNNING, at=time.time()))

    def metric(self, dispatch: StepDispatch, metric: Metric) -> None:
        """A running task logged a metric (``step.metric``, next flush)."""
        self._progress.append(StepProgress(job_id=dispatch.job_id, step=dispatch.step, attempt=dispatch.attempt,
                                           worker_id=self.worker_id, progress=Progress.METRIC, metric=metric, at=time.time()))

    def timeout_warning(self, dispatch: StepDispatch, elapsed_s: float, timeout_s: float) -> None:
        """A running step has used 80 % of its timeout (``step.timeout_warning``, next flush);
        at 100 % its task is stopped and the step fails with kind ``timeout``."""
        self._progress.append(StepProgress(job_id=dispatch.job_id, step=dispatch.step, attempt=dispatch.attempt,
                                           worker_id=self.worker_id, progress=Progress.TIMEOUT_WARNING,
                                           elapsed_s=max(0.0, elapsed_s), timeout_s=timeout_s if timeout_s > 0 else None,
                                           at=time.time()))

    async def run(self) -> None:
        while True:
            await asyncio.sleep(EVENT_FLUSH_S)
            await self.flush()

    async def flush(self) -> None:
        while self._progress:
            progress, self._progress = self._progress[:MAX_PROGRESS], self._progress[MAX_PROGRESS:]
            batch = ProgressBatch(progress=progress)
            try:
                await self.broker.publish(Outgoing(self.broker.names.notices_exchange, PROGRESS_KEY, encode(batch), batch.kind,
                                                   persistent=False))
            except Exception:
                log.exception("publishing step progress failed")
