"""A device-typed worker: consumes ``steps.<device>``, runs steps, records outputs in MongoDB.

Per delivery (see docs/distributed.md, "Delivery semantics"):

1. read the job (cached per job) and upstream outputs (cached when this worker produced
   them), run the task in a thread pool — never on the event loop, so AMQP heartbeats and
   lease renewals keep flowing;
2. write the outcome with an upserting compare-and-set (unfinished at an attempt no newer
   than ours) — one result; outcomes finishing together are written in one round trip;
3. publish the completion notice (confirmed), then ack the delivery.

A redelivered message (its previous holder lost its channel) first *claims* the step
(running, with a lease): a claim that fails means the step finished or moved to a newer
attempt, so the delivery is dropped (re-sending the notice if it finished under this
attempt). Any step still running after ``claim_after_s`` is claimed the same way, so long
steps show as running in MongoDB and hold a lease; one still running after
``ack_deadline_s`` is acked early (before RabbitMQ's ``consumer_timeout`` would close the
channel) and from then on only the lease, renewed every ``lease_s / 3``, keeps it: if the
worker dies, the planner re-queues it when the lease expires.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from shared import codec
from shared.constants import NOTICE_KEY, step_event_key
from shared.distributed_errors import MessageError
from shared.execution.invoke import error_message, format_traceback, invoke, referenced_steps, retryable
from shared.execution.timeouts import call_with_timeout
from shared.messages import (
    Event,
    EventBatch,
    NoticeBatch,
    StepDispatch,
    StepErrorInfo,
    StepNotice,
    encode,
    parse_dispatches,
)
from shared.plugin_catalog import builtin_plugins_root, plugin_dirs_from_env
from shared.plugin_registry import PluginRegistry
from shared.settings import Settings
from shared.store import Finish, JobRecord, Store
from shared.transport import Broker, Outgoing, declare_device_queue
from shared.transport.settle import HandBack, Reject, settle

log = logging.getLogger("theodolite.worker")
JOB_CACHE_SIZE = 64
OUTPUT_CACHE_SIZE = 256
CACHEABLE_OUTPUT_BYTES = 1024 * 1024
RESULT_BATCH = 256
EVENT_FLUSH_S = 0.05
WORKER_ID_ENV = "THEODOLITE_WORKER_ID"
WORKER_DEVICE_ENV = "THEODOLITE_WORKER_DEVICE"


def prepare_device_environment(device: str) -> str:
    """Set accelerator memory options before JAX is imported; describe the backend we got.

    Must run before any plugin code: JAX reads ``XLA_PYTHON_CLIENT_PREALLOCATE`` once, at
    import. Returns a one-line description for the start-up log.
    """
    if device != "gpu":
        return f"device {device}"
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    try:
        import jax
    except ImportError:
        return "gpu worker: jax not installed (plugins needing JAX will fail)"
    try:
        backend = jax.default_backend()
        devices = ", ".join(str(d) for d in jax.devices())
    except Exception as error:  # noqa: BLE001 - reported, the worker still serves
        return f"gpu worker: JAX {jax.__version__} could not initialise a backend: {error}"
    note = "" if backend == "gpu" else f" (no GPU visible: steps run on the {backend} backend)"
    return f"gpu worker: JAX {jax.__version__} backend {backend}{note}; devices: {devices}"


@dataclass
class Outcome:
    outputs: codec.Encoded | None = None
    error: dict[str, Any] | None = None
    duration_s: float = 0.0
    values: dict[str, Any] | None = None
    """The decoded outputs, kept for this worker's own downstream steps when small."""


@dataclass
class Delivery:
    """One broker message and the steps it carries (one step, or a batch of a fan-out)."""

    message: AbstractIncomingMessage
    steps: list[InFlight] = field(default_factory=list)
    acked: bool = False


@dataclass
class InFlight:
    dispatch: StepDispatch
    delivery: Delivery
    claimed: bool = False
    timer: asyncio.TimerHandle | None = None
    started_s: float = field(default_factory=time.monotonic)


class ResultWriter:
    """Writes step outcomes to MongoDB, many per round trip when they finish together.

    A lone outcome (a chain) is written at once; while a write is in flight, the next
    outcomes accumulate and go together in the following one.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._queue: asyncio.Queue[tuple[Finish, asyncio.Future[bool]]] = asyncio.Queue()

    async def write(self, finish: Finish) -> bool:
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        await self._queue.put((finish, future))
        return await future

    async def run(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < RESULT_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            try:
                recorded = await self.store.finish_many([finish for finish, _ in batch])
            except Exception as error:  # noqa: BLE001 - each waiting step sees the failure
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                continue
            for (_, future), ok in zip(batch, recorded):
                if not future.done():
                    future.set_result(ok)


class Worker:
    def __init__(self, settings: Settings, device: str, *, concurrency: int | None = None, prefetch: int | None = None,
                 plugin_dirs: Sequence[str | Path] = (), worker_id: str | None = None) -> None:
        self.settings = settings
        self.device = device
        self.concurrency = concurrency or settings.concurrency
        self.prefetch = prefetch or settings.worker_prefetch(device, self.concurrency)
        self.worker_id = worker_id or f"{device}-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        dirs = [Path(d) for d in plugin_dirs] + plugin_dirs_from_env() + [builtin_plugins_root(), Path.cwd()]
        self.registry = PluginRegistry(dirs)
        self.store = Store(settings)
        self.broker = Broker(settings, name=self.worker_id)
        self._inbox: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._inflight: dict[tuple[str, str, int], InFlight] = {}
        self._jobs: OrderedDict[str, asyncio.Future[JobRecord | None]] = OrderedDict()
        self._outputs: OrderedDict[tuple[str, str], dict[str, Any]] = OrderedDict()
        self._artifacts: OrderedDict[str, dict[str, dict[str, Any]]] = OrderedDict()
        self._finished: OrderedDict[tuple[str, str, int], None] = OrderedDict()
        """Steps this worker finished recently: a duplicate delivery of one is not run again."""
        self._writer = ResultWriter(self.store)
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix=f"theodolite-{device}")
        self._background: set[asyncio.Task[Any]] = set()
        self._running_events: list[Event] = []
        self.completed = 0

    # lifecycle ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        os.environ[WORKER_ID_ENV] = self.worker_id
        os.environ[WORKER_DEVICE_ENV] = self.device
        try:
            async with self.store, self.broker:
                channel = await self.broker.channel(prefetch=self.prefetch)
                queue = await declare_device_queue(channel, self.broker.names, self.settings, self.device)
                # One handler per delivery we may hold; the thread pool bounds execution to
                # ``concurrency``, so result writes and notices overlap with running steps.
                runners = [asyncio.create_task(self._run_loop(), name=f"worker-handler-{i}") for i in range(max(self.prefetch, self.concurrency))]
                heartbeat = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
                events = asyncio.create_task(self._event_loop(), name="worker-events")
                writer = asyncio.create_task(self._writer.run(), name="worker-results")
                await self.broker.consume(channel, queue.name, self._inbox.put)
                log.info("worker %s consuming %s (concurrency %d, prefetch %d)", self.worker_id, queue.name, self.concurrency, self.prefetch)
                lost = asyncio.create_task(self.broker.lost.wait())
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait([lost, stopped, *runners], return_when=asyncio.FIRST_COMPLETED)
                if lost.done() and not stopped.done():
                    raise ConnectionError("lost the RabbitMQ connection")
                await self._drain(runners)
                for task in (lost, stopped, heartbeat, events, writer):
                    task.cancel()
                await asyncio.gather(lost, stopped, heartbeat, events, writer, return_exceptions=True)
                await self._flush_events()
                if self._background:
                    await asyncio.gather(*self._background, return_exceptions=True)
        finally:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self.registry.close()
        log.info("worker %s stopped after %d steps", self.worker_id, self.completed)

    async def _drain(self, runners: list[asyncio.Task[None]]) -> None:
        """Stop consuming, hand back prefetched deliveries, let running steps finish (bounded)."""
        log.info("worker %s draining (%d running)", self.worker_id, len(self._inflight))
        await self.broker.stop_consuming()
        await asyncio.sleep(0)  # deliveries already on the wire reach the inbox
        while not self._inbox.empty():
            async with settle(self._inbox.get_nowait()):
                raise HandBack
        for _ in runners:
            self._inbox.put_nowait(None)  # type: ignore[arg-type]
        _, pending = await asyncio.wait(runners, timeout=self.settings.drain_timeout_s)
        for inflight in list(self._inflight.values()):
            message = inflight.delivery.message
            if not inflight.delivery.acked and not message.processed:
                log.warning("handing back step %s of job %s (still running at shutdown)", inflight.dispatch.step, inflight.dispatch.job_id)
                async with settle(message):
                    raise HandBack
        for task in pending:
            task.cancel()

    # the per-step pipeline ----------------------------------------------------------------
    async def _run_loop(self) -> None:
        while True:
            message = await self._inbox.get()
            if message is None:
                return
            await self.handle(message)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        async with settle(message, ack=False):
            try:
                dispatches = parse_dispatches(message.body, self.settings.max_message_bytes)
            except MessageError as problem:
                raise Reject(problem.reason) from None
            wrong = next((d.device for d in dispatches if d.device != self.device), None)
            if wrong is not None:
                raise Reject(f"step for device {wrong!r} delivered to a {self.device!r} worker")
            delivery = Delivery(message)
            deadline = asyncio.get_running_loop().call_later(self.settings.ack_deadline_s, self._ack_early, delivery)
            try:
                notices = await asyncio.gather(*(self._run_step(d, delivery) for d in dispatches))
                ready = [notice for notice in notices if notice is not None]
                if ready:
                    await asyncio.shield(self._publish_notices(ready))
            finally:
                deadline.cancel()
            if not delivery.acked and not message.processed:
                await message.ack()

    async def _run_step(self, dispatch: StepDispatch, delivery: Delivery) -> StepNotice | None:
        """Run one step of a delivery; the notice to send for it, if any."""
        key = (dispatch.job_id, dispatch.step, dispatch.attempt)
        if key in self._finished or key in self._inflight:
            return await self._finished_notice(dispatch)
        inflight = InFlight(dispatch, delivery)
        if delivery.message.redelivered:
            if not await self.store.claim(dispatch.job_id, dispatch.step, dispatch.attempt, self.worker_id, take_over=True):
                return await self._finished_notice(dispatch)
            inflight.claimed = True
        delivery.steps.append(inflight)
        self._inflight[key] = inflight
        inflight.timer = asyncio.get_running_loop().call_later(self.settings.claim_after_s, self._spawn_claim, inflight)
        self._running_events.append(Event(type="step.running", job_id=dispatch.job_id, step=dispatch.step, state="running",
                                          attempt=dispatch.attempt, worker_id=self.worker_id))
        try:
            outcome = await self._execute(dispatch)
            recorded = await asyncio.shield(self._writer.write(Finish(
                dispatch.job_id, dispatch.step, dispatch.attempt, self.worker_id, succeeded=outcome.error is None,
                outputs=outcome.outputs, error=outcome.error, duration_s=outcome.duration_s,
            )))
            self._remember_finished(key)
            if recorded:
                self._remember_outputs(dispatch, outcome)
                self.completed += 1
                return self._notice(dispatch, outcome)
            log.info("step %s of job %s attempt %d finished but was superseded; result discarded",
                     dispatch.step, dispatch.job_id, dispatch.attempt)
            return await self._finished_notice(dispatch)
        finally:
            if inflight.timer is not None:
                inflight.timer.cancel()
            self._inflight.pop(key, None)

    def _remember_finished(self, key: tuple[str, str, int]) -> None:
        """Only outcomes that reached MongoDB count: a step whose write failed runs again."""
        self._finished[key] = None
        while len(self._finished) > OUTPUT_CACHE_SIZE * 16:
            self._finished.popitem(last=False)

    def _spawn_claim(self, inflight: InFlight) -> None:
        self._spawn(self._claim(inflight))

    async def _claim(self, inflight: InFlight) -> bool:
        """Record a long-running step as running, with a lease (idempotent)."""
        if not inflight.claimed:
            dispatch = inflight.dispatch
            inflight.claimed = await self.store.claim(dispatch.job_id, dispatch.step, dispatch.attempt, self.worker_id, take_over=False)
        return inflight.claimed

    def _ack_early(self, delivery: Delivery) -> None:
        """The ack deadline passed: ack now (consumer_timeout); leases keep the claims."""
        if delivery.acked or delivery.message.processed:
            return
        self._spawn(self._ack_claimed(delivery))

    async def _ack_claimed(self, delivery: Delivery) -> None:
        """Claim every step of the delivery still running, then ack it. A claim that fails
        means that step finished or moved to a newer attempt: nothing to keep for it."""
        for inflight in delivery.steps:
            key = (inflight.dispatch.job_id, inflight.dispatch.step, inflight.dispatch.attempt)
            if key in self._inflight:
                await self._claim(inflight)
        delivery.acked = True
        log.info("a delivery of %d step(s) runs past the ack deadline: acknowledged early, kept by leases", len(delivery.steps))
        await delivery.message.ack()

    def _remember_outputs(self, dispatch: StepDispatch, outcome: Outcome) -> None:
        if outcome.values is None:
            return
        self._outputs[(dispatch.job_id, dispatch.step)] = outcome.values
        while len(self._outputs) > OUTPUT_CACHE_SIZE:
            self._outputs.popitem(last=False)

    async def _finished_notice(self, dispatch: StepDispatch) -> StepNotice | None:
        """A duplicate delivery. If its step finished under this attempt, the notice may have
        been lost with a crashed worker: send it again (the planner ignores duplicates)."""
        doc = await self.store.step_doc(dispatch.job_id, dispatch.step)
        if doc is None or int(doc.get("attempt", 0)) != dispatch.attempt or doc.get("state") not in ("succeeded", "failed"):
            return None
        error = doc.get("error")
        outcome = Outcome(error=error if error else None, duration_s=float(doc.get("duration_s") or 0.0))
        return self._notice(dispatch, outcome, worker_id=str(doc.get("worker") or self.worker_id))

    async def _execute(self, dispatch: StepDispatch) -> Outcome:
        started = time.perf_counter()
        try:
            job = await self._job(dispatch.job_id)
            if job is None:
                raise LookupError(f"job {dispatch.job_id} is not in the store")
            step = job.document.steps[dispatch.step]
            needed = referenced_steps(step, step.dependencies)
            upstream = {name: self._outputs[(dispatch.job_id, name)] for name in needed
                        if (dispatch.job_id, name) in self._outputs}
            missing = [name for name in needed if name not in upstream]
            if missing:
                upstream.update(await self.store.upstream_outputs(dispatch.job_id, missing))
            if job.document.artifact_inputs and referenced_steps(step, list(job.document.artifact_inputs)):
                upstream.update(await self._artifact_inputs(dispatch.job_id))
            loop = asyncio.get_running_loop()
            outcome = await loop.run_in_executor(self._pool, self._run_task, job, dispatch.step, upstream)
        except Exception as error:  # noqa: BLE001 - reading inputs failed: the step fails
            outcome = Outcome(error=_error_dict(error))
        outcome.duration_s = time.perf_counter() - started
        return outcome

    def _run_task(self, job: JobRecord, name: str, upstream: dict[str, dict[str, Any]]) -> Outcome:
        """In a pool thread: load the plugin, call it (retries, timeout), encode the outputs."""
        step = job.document.steps[name]
        binding = job.document.tasks[step.task]
        try:
            function = self.registry.load(binding.plugin).function
        except BaseException as error:  # noqa: BLE001 - a plugin that exits on import fails its step
            return Outcome(error=_error_dict(error))
        failure: BaseException = RuntimeError("the step was never attempted")
        for _attempt in range(binding.retries + 1):
            try:
                call = lambda: invoke(step, function, binding.outputs, job.parameters, upstream)
                outputs = call() if binding.timeout_s is None else call_with_timeout(name, binding.timeout_s, call)
                encoded = codec.encode(outputs, threshold_bytes=self.settings.gridfs_threshold_bytes)
                small = encoded.inline_bytes + sum(len(blob.data) for blob in encoded.blobs) <= CACHEABLE_OUTPUT_BYTES
                return Outcome(outputs=encoded, values=outputs if small else None)
            except BaseException as error:  # noqa: BLE001 - SystemExit in a task must not stop the worker
                failure = error
                if not retryable(error):
                    break
        return Outcome(error=_error_dict(failure))

    async def _artifact_inputs(self, job_id: str) -> dict[str, dict[str, Any]]:
        """A job's artifact inputs, read once per job (they never change)."""
        cached = self._artifacts.get(job_id)
        if cached is None:
            cached = await self.store.load_artifact_inputs(job_id)
            self._artifacts[job_id] = cached
            while len(self._artifacts) > JOB_CACHE_SIZE:
                self._artifacts.popitem(last=False)
        return cached

    async def _job(self, job_id: str) -> JobRecord | None:
        future = self._jobs.get(job_id)
        if future is None:
            future = asyncio.ensure_future(self.store.load_job(job_id))
            self._jobs[job_id] = future
            while len(self._jobs) > JOB_CACHE_SIZE:
                self._jobs.popitem(last=False)
        else:
            self._jobs.move_to_end(job_id)
        try:
            return await asyncio.shield(future)
        except Exception:
            self._jobs.pop(job_id, None)
            raise

    # notices, events, leases --------------------------------------------------------------
    def _notice(self, dispatch: StepDispatch, outcome: Outcome, *, worker_id: str | None = None) -> StepNotice:
        error = outcome.error
        return StepNotice(job_id=dispatch.job_id, step=dispatch.step, attempt=dispatch.attempt,
                          outcome="failed" if error else "succeeded", worker_id=worker_id or self.worker_id,
                          error=StepErrorInfo(type=str(error.get("type", "Error")), message=str(error.get("message", ""))) if error else None,
                          duration_s=outcome.duration_s)

    async def _publish_notices(self, notices: list[StepNotice]) -> None:
        """One completion message for the steps of a delivery (transient: MongoDB has the results)."""
        message: StepNotice | NoticeBatch = notices[0] if len(notices) == 1 else NoticeBatch(notices=notices)
        await self.broker.publish(Outgoing(self.broker.names.notices_exchange, NOTICE_KEY, encode(message), message.kind, persistent=False))

    async def _event_loop(self) -> None:
        """Publish "step.running" events in batches (one message per job per flush), not one per step."""
        while True:
            await asyncio.sleep(EVENT_FLUSH_S)
            await self._flush_events()

    async def _flush_events(self) -> None:
        events, self._running_events = self._running_events, []
        by_job: dict[str, list[Event]] = {}
        for event in events:
            by_job.setdefault(str(event.job_id), []).append(event)
        for job_id, job_events in by_job.items():
            batch = EventBatch(job_id=job_id, events=job_events)
            try:
                await self.broker.publish(Outgoing(self.broker.names.events_exchange, step_event_key(job_id), encode(batch), batch.kind, persistent=False))
            except Exception:
                log.exception("publishing step events failed")

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            claimed = [key for key, inflight in self._inflight.items() if inflight.claimed]
            if claimed:
                try:
                    await self.store.renew_leases(claimed, self.worker_id)
                except Exception:
                    log.exception("renewing leases failed")

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _error_dict(error: BaseException) -> dict[str, Any]:
    return {"type": type(error).__name__, "message": error_message(error), "traceback": format_traceback(error)[-8000:]}
