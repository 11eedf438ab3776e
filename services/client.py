"""Submitting jobs to a running cluster and following them to the end, from code or the CLI.

``async with Client(settings) as client: result = await client.submit_and_wait(text)``
gives the same :class:`JobResult` as the embedded runner (``run --json`` and
``submit --wait --json`` print the same object). :func:`submit_and_wait` is the one-shot
form. A job the planner rejects raises :class:`JobRejected` with its ``FILE:LINE:`` problems.

Outages are waited out: the broker reconnects by itself and subscribes the client's events
queue again (events published meanwhile are missed, which is why ``wait`` also polls
MongoDB); MongoDB reads are retried with backoff, and ``wait`` keeps polling through an
outage until the job is finished (or its ``timeout_s`` passes).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from shared.constants import JOB_CANCEL_KEY, JOB_RESUME_KEY, JOB_SUBMIT_KEY
from shared.distributed_errors import BrokerError, JobRejected
from shared.document.artifact_steps import ARTIFACT_OUTPUT, ARTIFACT_STEP_PREFIX, is_artifact_step
from shared.execution.result import JobResult, StepError, StepReport
from shared.messages import (
    DEFAULT_CANCEL_GRACE_S,
    Event,
    EventBatch,
    JobCancel,
    JobResume,
    JobSubmission,
    encode,
)
from shared.outages import Streak, backoff_s, transient
from shared.resource import AsyncResource
from shared.settings import Settings
from shared.states import FINISHED_JOB_STATES, StepState
from shared.store import Store
from shared.task_context import Metric
from shared.transport import Broker, Outgoing
from shared.transport.settle import acknowledge

POLL_S = 1.0
log = logging.getLogger("theodolite.client")


class Client(AsyncResource):
    """Owns a broker connection and a store client for submitting and awaiting jobs."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings)
        self.broker = Broker(settings, name="theodolite-client")
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._waiters: dict[str, asyncio.Future[str]] = {}
        self._listeners: dict[str, Callable[[Event], None]] = {}


    async def open(self) -> None:
        await self.store.open()
        try:
            await self.broker.open()
            await self.broker.subscribe(self._subscribe_events)
        except BaseException:
            await self.close()
            raise

    async def _subscribe_events(self) -> None:
        """An exclusive, server-named queue for the events (a new one after each reconnect)."""
        self._channel = await self.broker.channel(prefetch=1000)
        queue = await self._channel.declare_queue(exclusive=True, auto_delete=True)
        await queue.bind(self.broker.names.events_exchange, "job.#")  # every job's events (docs/events.md)
        await self.broker.consume(self._channel, queue.name, self._on_event)

    async def close(self) -> None:
        await self.broker.close()
        await self.store.close()

    async def _on_event(self, message: AbstractIncomingMessage) -> None:
        await acknowledge(message)
        kind = (message.headers or {}).get("x-theodolite-kind")
        try:
            events = EventBatch.model_validate_json(message.body).events if kind == "event.batch" else [Event.model_validate_json(message.body)]
        except ValueError:
            return
        for event in events:
            if event.job_id is None:
                continue
            listener = self._listeners.get(event.job_id)
            if listener is not None:
                listener(event)
            waiter = self._waiters.get(event.job_id)
            if waiter is not None and not waiter.done() and event.type.startswith("job.") and event.state in FINISHED_JOB_STATES:
                waiter.set_result(event.state)

    # submitting ---------------------------------------------------------------------------
    async def submit(self, submission: JobSubmission) -> str:
        """Publish a job (confirmed); returns its id. The jobs queue keeps it until a planner runs."""
        self._waiters.setdefault(submission.job_id, asyncio.get_running_loop().create_future())
        routed = await self.broker.publish(Outgoing(self.broker.names.jobs_exchange, JOB_SUBMIT_KEY, encode(submission),
                                                    submission.kind, message_id=submission.job_id))
        if not routed:
            raise BrokerError(f"job {submission.job_id} could not be routed to {self.broker.names.jobs_queue}")
        return submission.job_id

    async def cancel(self, job_id: str, grace_s: float = DEFAULT_CANCEL_GRACE_S) -> None:
        """Ask the planner to cancel the job (confirmed; the jobs queue keeps it until a planner runs)."""
        message = JobCancel(job_id=job_id, grace_s=grace_s)
        await self.broker.publish(Outgoing(self.broker.names.jobs_exchange, JOB_CANCEL_KEY, encode(message), "job.cancel"))

    async def resume(self, message: JobResume) -> None:
        """Ask the planner to start the job's next run (confirmed)."""
        await self.broker.publish(Outgoing(self.broker.names.jobs_exchange, JOB_RESUME_KEY, encode(message), message.kind))

    async def wait(self, job_id: str, *, timeout_s: float | None = None,
                   on_event: Callable[[Event], None] | None = None) -> JobResult:
        """Follow a job to its end (events, with MongoDB polled as a fallback); its result."""
        waiter = self._waiters.setdefault(job_id, asyncio.get_running_loop().create_future())
        if on_event is not None:
            self._listeners[job_id] = on_event
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        polling = Streak(log, f"reading the state of job {job_id}")
        try:
            while True:
                try:
                    doc = await self.store.job_state(job_id)
                except Exception as error:
                    if not transient(error):
                        raise
                    polling.failed(error)  # MongoDB away: poll again (events may still come)
                    doc = None
                else:
                    polling.succeeded()
                if doc is not None and doc["state"] in FINISHED_JOB_STATES:
                    break
                remaining = POLL_S if deadline is None else min(POLL_S, deadline - time.monotonic())
                if remaining <= 0:
                    raise TimeoutError(f"job {job_id} did not finish within {timeout_s:g} s")
                try:
                    await asyncio.wait_for(asyncio.shield(waiter), remaining)
                except TimeoutError:
                    continue
        finally:
            self._waiters.pop(job_id, None)
            self._listeners.pop(job_id, None)
        return await self._patient_result(job_id, deadline)

    async def _patient_result(self, job_id: str, deadline: float | None) -> JobResult:
        """:meth:`result`, an outage of MongoDB waited out (until ``deadline``, if any)."""
        reading = Streak(log, f"reading the result of job {job_id}")
        while True:
            try:
                return await self.result(job_id)
            except Exception as error:
                if not transient(error) or (deadline is not None and time.monotonic() >= deadline):
                    raise
                delay = backoff_s(reading.failures + 1)
                reading.failed(error, delay)
                await asyncio.sleep(delay)

    async def result(self, job_id: str) -> JobResult:
        doc = await self.store.job_state(job_id)
        if doc is None:
            raise LookupError(f"no job {job_id}")
        if doc.get("problems"):
            raise JobRejected(job_id, list(doc["problems"]))
        steps = await self.store.all_outputs(job_id)
        reports: dict[str, StepReport] = {}
        payloads: dict[str, Any] = {}
        metrics: dict[str, list[Metric]] = {}
        for name in doc.get("step_names", []):
            state = StepState(steps[name]["state"]) if name in steps else StepState.PENDING
            outputs = steps[name]["outputs"] if name in steps and state is StepState.SUCCEEDED else {}
            if is_artifact_step(name):
                if ARTIFACT_OUTPUT in outputs:
                    payloads[name[len(ARTIFACT_STEP_PREFIX):]] = outputs[ARTIFACT_OUTPUT]
                continue
            record = steps.get(name, {})
            error_doc = record.get("error") or {}
            reports[name] = StepReport(status=state, outputs=outputs, duration_s=record.get("duration_s"),
                                       traceback=error_doc.get("traceback") if isinstance(error_doc, dict) else None,
                                       attempts=record.get("attempt"))
            points = [Metric.model_validate(point) for point in record.get("metrics") or [] if isinstance(point, dict)]
            if points:
                metrics[name] = points
        error = doc.get("error")
        return JobResult(status=doc["state"], steps=reports, artifact_payloads=payloads, metrics=metrics, seed=doc.get("seed"),
                         error=StepError(step=error["step"], type=error["type"], message=error["message"]) if error else None)

    async def submit_and_wait(self, document_text: str, parameters: Mapping[str, Any] | None = None, *,
                              name: str = "job.yaml", fail_fast: bool = True, timeout_s: float | None = None,
                              on_event: Callable[[Event], None] | None = None, seed: int | None = None) -> JobResult:
        submission = JobSubmission(document=document_text, document_name=name, parameters=dict(parameters or {}), fail_fast=fail_fast,
                                   **({} if seed is None else {"seed": seed}))
        job_id = await self.submit(submission)
        return await self.wait(job_id, timeout_s=timeout_s, on_event=on_event)


async def submit_and_wait(settings: Settings, document_text: str, parameters: Mapping[str, Any] | None = None, *,
                          name: str = "job.yaml", fail_fast: bool = True, timeout_s: float | None = None) -> JobResult:
    """Submit one job and await its :class:`JobResult` (opens and closes its own connections)."""
    async with Client(settings) as client:
        return await client.submit_and_wait(document_text, parameters, name=name, fail_fast=fail_fast, timeout_s=timeout_s)
