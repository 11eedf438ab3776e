"""A stand-in worker that runs nothing: the planner's ceiling (bench/scaling_bench.py).

It consumes ``steps.<device>`` like a real worker and answers each delivery at once with
what a real worker sends for steps that finished together: one ``NoticeBatch`` holding a
``running`` progress report and a ``succeeded`` notice per step (not persistent, confirmed),
then it acks the delivery. It does not run tasks, read the job, claim, or write anything to
MongoDB, so a fan-out through it costs the planner, RabbitMQ and the submitting client only.
Settings come from the environment (``THEODOLITE_*``), as for ``theodolite worker``::

    .venv/bin/python -m bench.ack_worker --device cpu [--prefetch 16]

Only for measuring: the jobs it "runs" succeed without results in MongoDB.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import time

from aio_pika.abc import AbstractIncomingMessage

from shared.constants import NOTICE_KEY
from shared.distributed_errors import MessageError
from shared.messages import (
    NoticeBatch,
    Progress,
    StepDispatch,
    StepNotice,
    StepProgress,
    encode,
    parse_dispatches,
)
from shared.settings import Settings
from shared.states import StepState
from shared.transport import Broker, Outgoing, declare_device_queue
from shared.transport.settle import Reject, acknowledge, orphaned, settle

DEFAULT_PREFETCH = 16
log = logging.getLogger("bench.ack_worker")


def answer(dispatches: list[StepDispatch], worker_id: str) -> NoticeBatch:
    """What a real worker reports for these steps finishing together, without running them."""
    now = time.time()
    return NoticeBatch(
        progress=[StepProgress(job_id=d.job_id, step=d.step, attempt=d.attempt, worker_id=worker_id,
                               progress=Progress.RUNNING, at=now) for d in dispatches],
        notices=[StepNotice(job_id=d.job_id, step=d.step, attempt=d.attempt, outcome=StepState.SUCCEEDED,
                            worker_id=worker_id) for d in dispatches],
    )


class AckWorker:
    """Consumes one device queue; every delivery is answered as succeeded and acked."""

    def __init__(self, settings: Settings, device: str, prefetch: int = DEFAULT_PREFETCH) -> None:
        self.settings = settings
        self.device = device
        self.prefetch = prefetch
        self.worker_id = f"ack-only-{device}-{os.getpid()}"
        self.broker = Broker(settings, name=self.worker_id)
        self.answered_steps = 0
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def run(self, stop: asyncio.Event) -> None:
        async with self.broker:
            await self.broker.subscribe(self._subscribe)
            handlers = [asyncio.create_task(self._handle_loop()) for _ in range(self.prefetch)]
            await stop.wait()
            await self.broker.stop_consuming()
            for task in handlers:
                task.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
        log.info("%s stopped after %d steps", self.worker_id, self.answered_steps)

    async def _subscribe(self) -> None:
        channel = await self.broker.channel(prefetch=self.prefetch)
        queue = await declare_device_queue(channel, self.broker.names, self.settings, self.device)
        await self.broker.consume(channel, queue.name, self._inbox.put)

    async def _handle_loop(self) -> None:
        while True:
            await self.handle(await self._inbox.get())

    async def handle(self, message: AbstractIncomingMessage) -> None:
        if orphaned(message):
            return
        async with settle(message, ack=False):
            try:
                dispatches = parse_dispatches(message.body, self.settings.max_message_bytes)
            except MessageError as problem:
                raise Reject(problem.reason) from None
            batch = answer(dispatches, self.worker_id)
            await self.broker.publish(Outgoing(self.broker.names.notices_exchange, NOTICE_KEY, encode(batch), batch.kind,
                                               persistent=False))
            self.answered_steps += len(dispatches)
            await acknowledge(message)


async def serve(device: str, prefetch: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await AckWorker(Settings(), device, prefetch).run(stop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--prefetch", type=int, default=DEFAULT_PREFETCH, help="unacked deliveries held at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    asyncio.run(serve(args.device, args.prefetch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
