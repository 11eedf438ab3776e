"""A device-typed worker: consumes ``steps.<device>``, runs steps, records outputs in MongoDB.

Per delivery (see docs/distributed.md, "Delivery semantics"), for each step it carries:

1. a step this worker finished recently, or holds now, is not run again; if MongoDB holds it
   finished under this attempt, its notice is sent again (a crashed worker may have lost it);
2. the job is read (cached per job) and :func:`~services.worker_control.decide` picks what to
   do from the message and the job's control flags (its record's, OR the latest
   ``job.control`` message, which every worker receives on its own queue):

   * the job is stopping: the step is not run but recorded skipped or cancelled if it has not
     started (a compare-and-set) and reported so; if it had started, as in 1;
   * a claim is required (the message or the job says so, or RabbitMQ redelivered it): the
     step is claimed first (running, with a lease); a claim that fails means the step finished
     or moved to a newer attempt, so it is not run (as in 1);
   * otherwise, the fast path: no MongoDB round trip before running;
3. upstream outputs are read (cached when this worker produced them) and the task runs in one
   of the worker's execution slots (a child process by default, a thread for tasks that ask
   for it: shared/execution/isolation.py) — never on the event loop, so AMQP heartbeats and
   lease renewals keep flowing;
4. the outcome is written with an upserting compare-and-set (unfinished at an attempt no newer
   than ours) — one result; outcomes finishing together are written in one round trip;

then the notices of the delivery's steps are published together (confirmed) and it is acked.

MongoDB, GridFS or the codec failing around a task (in 1-4, never in the task) is not the
step's failure: when the delivery's other steps are done and reported, the delivery is handed
back to RabbitMQ after an exponential backoff (:mod:`services.worker_faults`); the quorum
queue's delivery limit bounds how often. Steps that did finish keep their results and are
reported again on redelivery (a redelivered message is claimed first, see 2).

Any step still running after ``claim_after_s``, or when a ``job.control`` asks for claims, is
claimed the same way, so long steps show as running in MongoDB and hold a lease; one still
running after ``ack_deadline_s`` is acked early (before RabbitMQ's ``consumer_timeout`` would
close the channel) and from then on only the lease, renewed every ``lease_s / 3``, keeps it:
if the worker dies, the planner re-queues it when the lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from services.worker_control import (
    CONTROL_PREFETCH,
    ControlCache,
    ControlFlags,
    Decision,
    decide,
    declare_control_queue,
    parse_control,
)
from services.worker_device import prepare_device_environment
from services.worker_execution import StepExecutor
from services.worker_faults import backoff_s, delivery_number, is_infrastructure
from services.worker_logs import StepLogs
from services.worker_presence import WorkerPresence
from services.worker_publish import WorkerPublisher
from services.worker_results import Outcome, Reports, ResultWriter, outcome_notice, step_notice, stored_notice
from shared.distributed_errors import BrokerError, MessageError
from shared.events import WorkerEventType
from shared.messages import DEFAULT_CANCEL_GRACE_S, StepDispatch, StepNotice, parse_dispatches
from shared.observability.health import MongoWatch, Readiness
from shared.observability.http import metrics_server
from shared.observability.metrics import WorkerMetrics, task_label
from shared.observability.reasons import RejectReason
from shared.outages import short, transient
from shared.plugin_catalog import builtin_plugins_root, plugin_dirs_from_env
from shared.plugin_registry import PluginRegistry
from shared.settings import Settings
from shared.states import StepState
from shared.store import Finish, JobRecord, Store
from shared.transport import Broker, declare_device_queue
from shared.transport.settle import HandBack, Reject, acknowledge, orphaned, settle

__all__ = ["Worker", "prepare_device_environment"]
log = logging.getLogger("theodolite.worker")
FINISHED_CACHE_SIZE = 4096
ACK_RETRY_S = 1.0
WORKER_ID_ENV = "THEODOLITE_WORKER_ID"
WORKER_DEVICE_ENV = "THEODOLITE_WORKER_DEVICE"
StepKey = tuple[str, str, int]
"""(job id, step, attempt)."""


def _key(dispatch: StepDispatch) -> StepKey:
    return (dispatch.job_id, dispatch.step, dispatch.attempt)


@dataclass
class Delivery:
    """One broker message and the steps it carries (one step, or a batch of a fan-out)."""

    message: AbstractIncomingMessage
    steps: list[InFlight] = field(default_factory=list)
    acked: bool = False
    deciding: int = 0
    """Steps still being decided on (see :meth:`Worker._run_step`): no early ack meanwhile."""


@dataclass
class InFlight:
    """A step running on this worker."""

    dispatch: StepDispatch
    delivery: Delivery
    claimed: bool = False
    timer: asyncio.TimerHandle | None = None
    started_s: float = field(default_factory=time.monotonic)


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
        self._inflight: dict[StepKey, InFlight] = {}
        self._starting: set[StepKey] = set()
        """Steps of deliveries being decided on (job read, claim, stop): not run twice either."""
        self._control = ControlCache()
        self._finished: OrderedDict[StepKey, None] = OrderedDict()
        """Steps this worker finished recently: a duplicate delivery of one is not run again."""
        self._writer = ResultWriter(self.store)
        self._logs = StepLogs(self.store, self.worker_id)
        self._executor = StepExecutor(settings, self.store, self.registry, concurrency=self.concurrency, device=device,
                                      on_timeout_warning=lambda dispatch, elapsed_s, timeout_s: self._publisher.timeout_warning(
                                          dispatch, elapsed_s, timeout_s), worker_id=self.worker_id, on_logs=self._logs.append,
                                      on_metric=lambda dispatch, metric: self._publisher.metric(dispatch, metric))
        self._background: set[asyncio.Task[Any]] = set()
        self._publisher = WorkerPublisher(self.broker, self.worker_id)
        self._presence = WorkerPresence(self.broker, self.worker_id, device, self.concurrency, settings.heartbeat_s,
                                        lambda: (len(self._inflight), self.completed))
        self._stopping = asyncio.Event()
        """Set when draining starts: deliveries waiting out a backoff are handed back at once."""
        self.completed = 0
        self.metrics = WorkerMetrics(device, self.concurrency)
        self._mongo = MongoWatch(lambda: self.store.db.command("ping"))
        self._http = metrics_server(settings.metrics_port, settings.metrics_host, self.metrics.registry, self.readiness,
                                    name=self.worker_id)

    def readiness(self) -> Readiness:
        """``/readyz``: connected to RabbitMQ and MongoDB, and consuming (not draining)."""
        return Readiness(mongodb=self._mongo.reachable, rabbitmq=self.broker.connected.is_set(),
                         consuming=self.broker.consuming and not self._stopping.is_set())

    # lifecycle ----------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        os.environ[WORKER_ID_ENV] = self.worker_id
        os.environ[WORKER_DEVICE_ENV] = self.device
        try:
            async with self._http, self.store, self._mongo, self.broker:
                # Consumers are subscribed again on every new connection (a RabbitMQ restart
                # closes it: the broker reconnects with backoff; this worker and its running
                # steps carry on, and their notices go out once it is back).
                self.broker.on_lost(self._on_broker_lost)
                await self.broker.subscribe(self._subscribe)
                # One handler per delivery we may hold; the execution slots bound execution to
                # ``concurrency``, so result writes and notices overlap with running steps.
                runners = [asyncio.create_task(self._run_loop(), name=f"worker-handler-{i}") for i in range(max(self.prefetch, self.concurrency))]
                heartbeat = asyncio.create_task(self._heartbeat_loop(), name="worker-heartbeat")
                events = asyncio.create_task(self._publisher.run(), name="worker-events")
                writer = asyncio.create_task(self._writer.run(), name="worker-results")
                live_logs = asyncio.create_task(self._logs.run(), name="worker-live-logs")
                log.info("worker %s consuming %s (concurrency %d, prefetch %d)", self.worker_id,
                         self.broker.names.steps_queue(self.device), self.concurrency, self.prefetch)
                await self._presence.announce(WorkerEventType.ONLINE)
                presence = asyncio.create_task(self._presence.run(), name="worker-presence")
                stopped = asyncio.create_task(stop.wait())
                await asyncio.wait([stopped, *runners], return_when=asyncio.FIRST_COMPLETED)
                await self._drain(runners)
                for task in (stopped, heartbeat, events, writer, presence, live_logs):
                    task.cancel()
                await asyncio.gather(stopped, heartbeat, events, writer, presence, live_logs, *runners, return_exceptions=True)
                await self._flush_events()
                await self._presence.announce(WorkerEventType.OFFLINE, timeout_s=min(2.0, self.settings.heartbeat_s))
                if self._background:
                    await asyncio.gather(*self._background, return_exceptions=True)
        finally:
            self._executor.shutdown()
            self.registry.close()
        log.info("worker %s stopped after %d steps", self.worker_id, self.completed)

    async def _subscribe(self) -> None:
        """This worker's queues and consumers on the current connection (run again by the
        broker after every reconnect). Control words first: a job record read from now on
        cannot miss a later one. The exclusive control queue is gone with a lost connection:
        words published while it was lost are missed (a job record cached before may lack them)."""
        control_channel = await self.broker.channel(prefetch=CONTROL_PREFETCH)
        control_queue = await declare_control_queue(control_channel, self.broker.names, self.worker_id)
        await self.broker.consume(control_channel, control_queue.name, self._on_control)
        channel = await self.broker.channel(prefetch=self.prefetch)
        queue = await declare_device_queue(channel, self.broker.names, self.settings, self.device)
        await self.broker.consume(channel, queue.name, self._inbox.put)

    def _on_broker_lost(self) -> None:
        """The connection is lost: RabbitMQ requeues every delivery this worker holds and will
        deliver them again, maybe to another worker. Steps running here unclaimed are claimed
        now, so that such a copy finds them held (and is dropped); they run on, record their
        results, and report once the connection is back."""
        unclaimed = [inflight for inflight in self._inflight.values() if not inflight.claimed]
        if unclaimed:
            log.info("claiming %d running step(s) whose deliveries RabbitMQ takes back", len(unclaimed))
        for inflight in unclaimed:
            self._spawn_claim(inflight)

    async def _flush_events(self) -> None:
        """The last running events, without waiting long for a lost connection."""
        try:
            await asyncio.wait_for(self._publisher.flush(), self.settings.drain_timeout_s)
        except TimeoutError:
            log.warning("running events not published: RabbitMQ is unavailable")

    async def _drain(self, runners: list[asyncio.Task[None]]) -> None:
        """Stop consuming, hand back prefetched deliveries, let running steps finish (bounded)."""
        log.info("worker %s draining (%d running)", self.worker_id, len(self._inflight))
        self._stopping.set()
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
            if not inflight.delivery.acked and not message.processed and not orphaned(message):
                log.warning("handing back step %s of job %s (still running at shutdown)", inflight.dispatch.step, inflight.dispatch.job_id)
                async with settle(message):
                    raise HandBack
        for task in pending:
            task.cancel()

    # the per-delivery pipeline ------------------------------------------------------------
    async def _run_loop(self) -> None:
        while True:
            message = await self._inbox.get()
            if message is None:
                return
            await self.handle(message)

    async def handle(self, message: AbstractIncomingMessage) -> None:
        if orphaned(message):  # prefetched on a connection lost since: RabbitMQ delivers it again
            log.debug("skipping delivery %s of a closed channel", message.delivery_tag)
            return
        async with settle(message, ack=False, on_reject=self.metrics.rejected):
            try:
                dispatches = parse_dispatches(message.body, self.settings.max_message_bytes)
            except MessageError as problem:
                raise Reject(problem.reason, RejectReason.MALFORMED) from None
            wrong = next((d.device for d in dispatches if d.device != self.device), None)
            if wrong is not None:
                raise Reject(f"step for device {wrong!r} delivered to a {self.device!r} worker", RejectReason.WRONG_DEVICE)
            delivery = Delivery(message)
            deadline = asyncio.get_running_loop().call_later(self.settings.ack_deadline_s, self._ack_early, delivery)
            try:
                results = await asyncio.gather(*(self._run_step(d, delivery) for d in dispatches), return_exceptions=True)
                ready = [result for result in results if isinstance(result, StepNotice)]
                if ready:
                    try:
                        await asyncio.shield(self._publisher.notices(ready))
                    except BrokerError as error:  # the outcomes are in MongoDB: the planner's scan finds them
                        log.warning("notice of %d step(s) not sent (%s); the planner finds the results in MongoDB",
                                    len(ready), error)
            finally:
                deadline.cancel()
            failed = [(d, result) for d, result in zip(dispatches, results) if isinstance(result, BaseException)]
            if failed:
                await self._hand_back(delivery, failed)
            if not delivery.acked:
                await acknowledge(message)  # skipped if its channel died: the copy RabbitMQ sends again finds the step finished

    async def _hand_back(self, delivery: Delivery, failed: list[tuple[StepDispatch, BaseException]]) -> None:
        """Steps of ``delivery`` raised: a bug is re-raised (``settle`` decides); the store's
        failures hand the delivery back to RabbitMQ after a backoff (nothing is held meanwhile
        but the delivery: its steps are done or never started)."""
        for _, error in failed:
            if not (isinstance(error, Exception) and is_infrastructure(error)):
                raise error
        dispatch, error = failed[0]
        names = ", ".join(d.step for d, _ in failed[:5]) + (f" and {len(failed) - 5} more" if len(failed) > 5 else "")
        number = delivery_number(delivery.message.headers)
        if delivery.acked or delivery.message.processed:
            log.warning("job %s step(s) %s (delivery %d): %s: %s; acked early already: the planner re-queues "
                        "the step(s) when their leases expire", dispatch.job_id, names, number, type(error).__name__, error)
            return
        delay_s = backoff_s(number)
        log.warning("job %s step(s) %s (delivery %d): %s: %s; handing the delivery back in %.1f s",
                    dispatch.job_id, names, number, type(error).__name__, error, delay_s)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), delay_s)
        raise HandBack

    async def _run_step(self, dispatch: StepDispatch, delivery: Delivery) -> StepNotice | None:
        """Decide on, run and record one step of a delivery; the notice to send for it, if any.
        Raises the store's errors (see :meth:`_hand_back`), never the task's."""
        key = _key(dispatch)
        if key in self._finished or key in self._inflight or key in self._starting:
            return await self._finished_notice(dispatch)
        redelivered = bool(delivery.message.redelivered)
        inflight = InFlight(dispatch, delivery)
        self._starting.add(key)
        delivery.deciding += 1
        try:
            job = await self._executor.job_or_rejection(dispatch)
            record = job if isinstance(job, JobRecord) else None
            decision = decide(dispatch, redelivered, ControlFlags.of_record(record), self._control.get(dispatch.job_id))
            if decision.stop is not None:
                return await self._stop(dispatch, decision.stop)
            if decision is Decision.CLAIM:
                if not await self.store.claim(dispatch.job_id, dispatch.step, dispatch.attempt, self.worker_id, take_over=redelivered,
                                              publisher=dispatch.publisher):
                    return await self._finished_notice(dispatch)
                inflight.claimed = True
            elif orphaned(delivery.message) and not await self._claim(inflight):
                return await self._finished_notice(dispatch)  # its channel died meanwhile (a copy comes again): claim first
            delivery.steps.append(inflight)
            self._inflight[key] = inflight
        finally:
            self._starting.discard(key)
            delivery.deciding -= 1
        if not inflight.claimed:
            inflight.timer = asyncio.get_running_loop().call_later(self.settings.claim_after_s, self._spawn_claim, inflight)
        self._publisher.running(dispatch)
        try:
            outcome = await self._execute(dispatch, job)
            retry_at = None if outcome.retry_delay_s is None else time.time() + outcome.retry_delay_s
            reports = outcome.reports or Reports()
            await self._logs.final(dispatch, reports, outcome.error)  # before the result: a finished job has all its logs
            recorded = await asyncio.shield(self._writer.write(Finish(
                dispatch.job_id, dispatch.step, dispatch.attempt, self.worker_id, succeeded=outcome.error is None,
                outputs=outcome.outputs, error=outcome.error, duration_s=outcome.duration_s, retry_at=retry_at,
                cancelled=outcome.cancelled, metrics=reports.metrics, artifacts=reports.artifacts,
            )))
            self._remember_finished(key)
            if recorded:
                self._executor.remember_outputs(dispatch, outcome)
                self.completed += 1
                return outcome_notice(dispatch, outcome, self.worker_id, retry_at=retry_at)
            log.info("step %s of job %s attempt %d finished but was superseded; result discarded",
                     dispatch.step, dispatch.job_id, dispatch.attempt)
            return await self._finished_notice(dispatch)
        finally:
            if inflight.timer is not None:
                inflight.timer.cancel()
            self._inflight.pop(key, None)

    async def _stop(self, dispatch: StepDispatch, state: StepState) -> StepNotice | None:
        """The job is stopping: record the step ``state`` instead of running it, if it has not
        started; otherwise report it as MongoDB holds it (if finished under this attempt)."""
        if not await self.store.stop_unstarted(dispatch.job_id, dispatch.step, dispatch.attempt, state, self.worker_id):
            return await self._finished_notice(dispatch)
        self._remember_finished(_key(dispatch))
        return step_notice(dispatch, state, self.worker_id)

    def _remember_finished(self, key: StepKey) -> None:
        """Only outcomes that reached MongoDB count: a step whose write failed runs again."""
        self._finished[key] = None
        while len(self._finished) > FINISHED_CACHE_SIZE:
            self._finished.popitem(last=False)

    async def _finished_notice(self, dispatch: StepDispatch) -> StepNotice | None:
        """A duplicate delivery, or a step this worker may not run. If the step finished under
        this attempt, the notice may have been lost with a crashed worker: send it again (the
        planner ignores duplicates)."""
        return stored_notice(dispatch, await self.store.step_doc(dispatch.job_id, dispatch.step), self.worker_id)

    # claims and the ack deadline ----------------------------------------------------------
    def _spawn_claim(self, inflight: InFlight) -> None:
        self._spawn(self._claim_quietly(inflight))

    async def _claim(self, inflight: InFlight) -> bool:
        """Record a running step as running, with a lease (idempotent). A failed claim never
        undoes one that succeeded meanwhile (a timer's and a control word's may overlap)."""
        if not inflight.claimed:
            dispatch = inflight.dispatch
            claimed = await self.store.claim(dispatch.job_id, dispatch.step, dispatch.attempt, self.worker_id, take_over=False,
                                             publisher=dispatch.publisher)
            inflight.claimed = inflight.claimed or claimed
        return inflight.claimed

    async def _claim_quietly(self, inflight: InFlight) -> None:
        """A claim in the background (timer, control word): if the store fails, the step runs
        on unclaimed and the ack deadline tries again."""
        try:
            await self._claim(inflight)
        except Exception as error:
            if not is_infrastructure(error):
                log.exception("claiming step %s of job %s failed", inflight.dispatch.step, inflight.dispatch.job_id)
                return
            log.warning("claiming step %s of job %s failed: %s: %s", inflight.dispatch.step, inflight.dispatch.job_id,
                        type(error).__name__, error)

    def _ack_early(self, delivery: Delivery) -> None:
        """The ack deadline passed: ack now (consumer_timeout); leases keep the claims. Not
        while a step of it is still being decided on: acked, a step whose job read then fails
        could be neither handed back nor re-queued (it holds no lease)."""
        if delivery.acked or delivery.message.processed:
            return
        if delivery.deciding:
            asyncio.get_running_loop().call_later(ACK_RETRY_S, self._ack_early, delivery)
            return
        self._spawn(self._ack_claimed(delivery))

    async def _ack_claimed(self, delivery: Delivery) -> None:
        """Claim every step of the delivery still running, then ack it. A claim that fails
        means that step finished or moved to a newer attempt: nothing to keep for it. A store
        failure is retried while the step runs: acked unclaimed, nothing would re-queue it if
        this worker died."""
        for inflight in delivery.steps:
            failures = 0
            while _key(inflight.dispatch) in self._inflight and not self._stopping.is_set():
                try:
                    await self._claim(inflight)
                    break
                except Exception as error:
                    if not is_infrastructure(error):
                        raise
                    failures += 1
                    log.warning("claiming step %s of job %s before its early ack failed: %s: %s",
                                inflight.dispatch.step, inflight.dispatch.job_id, type(error).__name__, error)
                    await asyncio.sleep(backoff_s(failures))
        if delivery.acked or delivery.message.processed:
            return  # handed back meanwhile
        delivery.acked = True
        log.info("a delivery of %d step(s) runs past the ack deadline: acknowledged early, kept by leases", len(delivery.steps))
        await acknowledge(delivery.message)

    # control words, leases ----------------------------------------------------------------
    async def _on_control(self, message: AbstractIncomingMessage) -> None:
        """A ``job.control`` word: remember it; with ``claim``, claim the job's running steps now."""
        async with settle(message, on_reject=self.metrics.rejected):
            control = parse_control(message, self.settings.max_message_bytes)
            flags = self._control.update(control)
            self._executor.forget_job(control.job_id)
            log.info("job %s: control word claim=%s stop=%s", control.job_id, flags.claim, flags.stop)
            if control.stop is StepState.CANCELLED:
                grace_s = DEFAULT_CANCEL_GRACE_S if control.grace_s is None else control.grace_s
                told = self._executor.cancel_job(control.job_id, grace_s)
                if told:
                    log.info("job %s cancelled: %d running step(s) stop within %g s", control.job_id, told, grace_s)
            if flags.claim:
                for inflight in list(self._inflight.values()):
                    if inflight.dispatch.job_id == control.job_id and not inflight.claimed:
                        self._spawn_claim(inflight)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.lease_s / 3)
            claimed = [key for key, inflight in self._inflight.items() if inflight.claimed]
            if claimed:
                try:
                    await self.store.renew_leases(claimed, self.worker_id)
                except Exception as error:
                    if not transient(error):
                        log.exception("renewing leases failed")
                    else:  # MongoDB is away: renewed on the next beat (leases outlast a few missed ones)
                        log.warning("renewing %d lease(s) failed (%s); trying again in %.1f s", len(claimed), short(error),
                                    self.settings.lease_s / 3)

    async def _execute(self, dispatch: StepDispatch, job: JobRecord | Outcome) -> Outcome:
        """Run the step (:meth:`StepExecutor.execute`), counted in the worker's metrics."""
        document = job.document if isinstance(job, JobRecord) else None
        with self.metrics.step(task_label(document, dispatch.step)) as run:
            outcome = await self._executor.execute(dispatch, job)
            run.ended(succeeded=outcome.error is None, duration_s=outcome.duration_s)
        return outcome

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
