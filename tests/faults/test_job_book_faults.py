"""Faults around the planner's book of jobs: real RabbitMQ and nx-27017, services as processes.

Each test reproduces one defect and asserts the repaired behaviour:

* fail-fast beside a long step: the job ends only after the running step has finished, and
  that step's result is kept (with and without a planner killed in between);
* a restarted planner runs no step a second time;
* a dead-lettered step fails its job instead of leaving it hanging;
* MongoDB gone for 30 s mid-job delays the job but does not fail it;
* a submission the validator rejects, or gives up on, is recorded as ``rejected`` (job
  document, ``job.rejected`` event) and does not hold up other jobs.

State is read straight from MongoDB (collections ``jobs``, ``steps``, ``events``) rather than
through ``shared.store``, so that the assertions are about what is stored, not about the
store's API. Executions are counted with ``traced_sleep`` (tests/integration/testplugins/
job_book_tasks.py), which writes ``start NAME TIME`` before and ``end NAME TIME`` after each
run, so a duplicate run shows as soon as it starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Self, TypeVar

import pytest
from aio_pika.abc import AbstractIncomingMessage
from pymongo import AsyncMongoClient
from pymongo.errors import PyMongoError

from services.cluster import LocalCluster, MongoWireServer
from shared import codec
from shared.constants import HEADER_KIND, JOB_SUBMIT_KEY
from shared.messages import Event, EventBatch, JobSubmission, StepDispatch, encode
from shared.settings import Settings
from shared.transport import Broker, Outgoing
from tests.integration import documents
from tests.support.distributed import TEST_PLUGINS, cleanup, make_settings

pytestmark = [pytest.mark.rabbit, pytest.mark.mongo]

T = TypeVar("T")
FINISHED_JOB_STATES = {"succeeded", "failed", "cancelled", "rejected"}
FINISHED_STEP_STATES = {"succeeded", "failed", "skipped", "cancelled"}
NO_DOCUMENT = "pending (no step document)"
DISCARDED = "superseded; result discarded"
LONG_S = 8.0


# helpers ------------------------------------------------------------------------------------

@contextlib.contextmanager
def started_cluster(settings: Settings, tmp_path: Path, workers: dict[str, int], **options: Any) -> Iterator[LocalCluster]:
    """Planner and workers as processes (logs in ``tmp_path/logs``), ready to take jobs."""
    with LocalCluster(settings, workers, plugin_dirs=[TEST_PLUGINS], start_mongo=False, log_dir=tmp_path / "logs",
                      **options) as cluster:
        cluster.wait_ready(60)
        yield cluster


def service_logs(tmp_path: Path, prefix: str = "") -> dict[str, str]:
    """The services' log files (``planner.log``, ``worker-cpu-0.log``, ...) by file name."""
    return {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted((tmp_path / "logs").glob(f"{prefix}*.log"))}


def trace(log_dir: Path) -> list[tuple[str, str, float]]:
    """``(start|end, step, time.time())`` for every line ``traced_sleep`` wrote, in order."""
    path = log_dir / "trace.log"
    if not path.exists():
        return []
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    return [(parts[0], parts[1], float(parts[2])) for parts in lines if len(parts) == 3]  # a line being written is skipped


def runs(log_dir: Path, kind: str = "start") -> Counter[str]:
    """How often each traced step started (or ended)."""
    return Counter(name for k, name, _ in trace(log_dir) if k == kind)


def ended_at(log_dir: Path, step: str) -> float | None:
    """When the (first) execution of ``step`` returned, by the task's own clock."""
    return next((at for kind, name, at in trace(log_dir) if kind == "end" and name == step), None)


def executions(log_dir: Path) -> list[str]:
    """The step names ``logged_sleep`` appended (one per finished execution)."""
    path = log_dir / "executions.log"
    return path.read_text(encoding="utf-8").split() if path.exists() else []


async def wait_until(check: Callable[[], Awaitable[T | None]] | Callable[[], T | None], timeout_s: float, what: str,
                     *, every_s: float = 0.1) -> T:
    """Poll ``check`` (sync or async) until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        assert time.monotonic() < deadline, f"timed out after {timeout_s:g} s waiting for {what}"
        await asyncio.sleep(every_s)


class Probe:
    """Reads jobs, steps and events straight from MongoDB."""

    def __init__(self, settings: Settings) -> None:
        self._client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(settings.mongo_url, serverSelectionTimeoutMS=2000)
        self.db = self._client[settings.db]

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self._client.close()

    async def job(self, job_id: str) -> dict[str, Any] | None:
        return await self.db["jobs"].find_one({"_id": job_id}, {"document": 0, "parameters": 0})

    async def steps(self, job_id: str) -> dict[str, dict[str, Any]]:
        return {doc["step"]: doc async for doc in self.db["steps"].find({"job": job_id})}

    async def step(self, job_id: str, step: str) -> dict[str, Any] | None:
        return await self.db["steps"].find_one({"job": job_id, "step": step})

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        return [doc async for doc in self.db["events"].find({"job_id": job_id}, {"_id": 0})]

    async def finished_job(self, job_id: str, timeout_s: float, *, outage_ok: bool = False) -> dict[str, Any]:
        """The job's document once its state is final; with ``outage_ok``, errors of an
        unreachable server are retried until the deadline instead of failing the test."""
        last: dict[str, Any] | None = None
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                last = await self.job(job_id)
            except PyMongoError:
                if not outage_ok:
                    raise
            if last is not None and last.get("state") in FINISHED_JOB_STATES:
                return last
            assert time.monotonic() < deadline, f"job {job_id} not finished after {timeout_s:g} s; its document: {last}"
            await asyncio.sleep(0.2)

    async def step_states(self, job_id: str, names: list[str]) -> dict[str, str]:
        steps = await self.steps(job_id)
        return {name: steps[name]["state"] if name in steps else NO_DOCUMENT for name in names}


class EventTap:
    """An exclusive queue bound to the events exchange: what a monitor sees."""

    def __init__(self, settings: Settings, keys: tuple[str, ...] = ("job.#",)) -> None:
        self.broker = Broker(settings, name="job-book-faults-tap")
        self.keys = keys
        self.events: list[Event] = []

    async def __aenter__(self) -> Self:
        await self.broker.open()
        channel = await self.broker.channel(prefetch=1000)
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        for key in self.keys:
            await queue.bind(self.broker.names.events_exchange, key)
        await self.broker.consume(channel, queue.name, self._on_message)
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.broker.close()

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        await message.ack()
        try:
            if (message.headers or {}).get(HEADER_KIND) == "event.batch":
                self.events.extend(EventBatch.model_validate_json(message.body).events)
            else:
                self.events.append(Event.model_validate_json(message.body))
        except ValueError:
            pass

    def of(self, job_id: str) -> list[Event]:
        return [e for e in self.events if e.job_id == job_id]


async def submit(broker: Broker, document: str, **fields: Any) -> str:
    """Publish a JobSubmission to the jobs exchange, as Client.submit does; the job id."""
    submission = JobSubmission(document=document, **fields)
    routed = await broker.publish(Outgoing(broker.names.jobs_exchange, JOB_SUBMIT_KEY, encode(submission), submission.kind,
                                           message_id=submission.job_id))
    assert routed, f"the submission of job {submission.job_id} was not routed to the jobs queue"
    return submission.job_id


def decoded_outputs(step_doc: dict[str, Any]) -> Any:
    try:
        return codec.decode(step_doc.get("outputs"))
    except Exception as error:  # noqa: BLE001 - shown in the assertion message
        return f"<undecodable outputs {step_doc.get('outputs')!r}: {error!r}>"


def unfinished_steps(job: dict[str, Any], steps: dict[str, dict[str, Any]]) -> dict[str, str]:
    """Steps of ``job`` whose stored state is not final (no document counts as pending)."""
    return {name: steps[name]["state"] if name in steps else NO_DOCUMENT
            for name in job.get("step_names", []) if name not in steps or steps[name]["state"] not in FINISHED_STEP_STATES}


def describe(steps: dict[str, dict[str, Any]]) -> dict[str, tuple[Any, ...]]:
    """Each stored step as (state, attempt, error type, error kind, error message), for messages."""
    return {name: (doc.get("state"), doc.get("attempt"), *((doc.get("error") or {}).get(k) for k in ("type", "kind", "message")))
            for name, doc in sorted(steps.items())}


def alive_problems(cluster: LocalCluster) -> list[str]:
    """Services that exited on their own (a planner the test killed with SIGKILL does not count)."""
    return [f"service {c.name} exited with {c.process.returncode}" for c in cluster.children
            if c.process.poll() is not None and c.process.returncode != -signal.SIGKILL]


# 1 and 2: fail-fast beside a long step ---------------------------------------------------------

def fail_fast_problems(job: dict[str, Any] | None, steps: dict[str, dict[str, Any]], worker_logs: dict[str, str],
                       long_returned_at: float | None) -> list[str]:
    """Everything wrong with a finished fail_beside_long job (empty when it is right);
    ``long_returned_at``: when the task of step long returned (its trace)."""
    if job is None:
        return ["the job has no document in MongoDB"]
    problems = []
    if job.get("state") != "failed":
        problems.append(f"job state is {job.get('state')!r}, expected 'failed'")
    unfinished = unfinished_steps(job, steps)
    if unfinished:
        problems.append(f"steps left unfinished in the finished job: {unfinished}")
    expected = {"boom": "failed", "long": "succeeded", "after_boom": "skipped", "after_long": "skipped"}
    actual = {name: steps[name]["state"] if name in steps else NO_DOCUMENT for name in expected}
    if actual != expected:
        problems.append(f"step states {actual}, expected {expected}")
    long = steps.get("long") or {}
    if long.get("state") == "succeeded" and decoded_outputs(long) != {"value": 1}:
        problems.append(f"long's stored outputs are {decoded_outputs(long)!r}, expected {{'value': 1}}")
    job_end = job.get("finished_at")
    if job_end is None:
        problems.append("the finished job has no finished_at")
    else:
        if long_returned_at is not None and job_end < long_returned_at:
            problems.append(f"the job was finished {long_returned_at - job_end:.2f} s before the task of its running step long returned")
        if long.get("state") == "succeeded":
            if long.get("finished_at") is None:
                problems.append("the succeeded step long has no finished_at")
            elif job_end < long["finished_at"]:
                problems.append(f"the job's finished_at is {long['finished_at'] - job_end:.2f} s before step long's")
    discarding = sorted(name for name, text in worker_logs.items() if DISCARDED in text)
    if discarding:
        problems.append(f"{discarding} logged {DISCARDED!r}: long's result was thrown away")
    return problems


async def follow_fail_fast_job(settings: Settings, tmp_path: Path, *, restart: LocalCluster | None) -> tuple[list[str], Any]:
    """Submit fail_beside_long, optionally kill and restart the planner once ``boom`` failed,
    await the job with Client.wait; the problems found and the Client's result."""
    from services.client import Client  # imported here: the client is not what these tests are about

    text = documents.fail_beside_long(str(tmp_path), seconds=LONG_S)
    async with Client(settings) as client, Probe(settings) as probe:
        job_id = await submit(client.broker, text)
        if restart is not None:
            await wait_until(lambda: _state_is(probe, job_id, "boom", "failed"), 20, "step boom to fail")
            await asyncio.sleep(1.0)  # the planner applies boom's failure
            assert "long" not in runs(tmp_path, "end"), "precondition: long must still be running when the planner is killed"
            restart.stop_child(restart.child("planner"), kill=True)  # SIGKILL: no drain
            await asyncio.sleep(1.0)
            restart.start_planner()
        result = await client.wait(job_id, timeout_s=60)
        # let long end (if the job was wrongly reported earlier) so that the stored state is final
        await wait_until(lambda: runs(tmp_path, "end")["long"], LONG_S + 15, "step long to end its sleep")
        await asyncio.sleep(1.0)
        job, steps = await probe.job(job_id), await probe.steps(job_id)
    problems = fail_fast_problems(job, steps, service_logs(tmp_path, "worker"), ended_at(tmp_path, "long"))
    return problems, result


async def _state_is(probe: Probe, job_id: str, step: str, state: str) -> bool:
    doc = await probe.step(job_id, step)
    return doc is not None and doc.get("state") == state


def client_result_problems(result: Any) -> list[str]:
    problems = []
    if result.status != "failed":
        problems.append(f"Client.wait reported the job {result.status!r}, expected 'failed'")
    long = result.steps.get("long")
    if long is None or long.status != "succeeded" or long.outputs != {"value": 1}:
        shown = None if long is None else (long.status, long.outputs)
        problems.append(f"Client.wait reported long as {shown!r}, expected ('succeeded', {{'value': 1}})")
    return problems


@pytest.mark.timeout(120)
def test_fail_fast_waits_for_the_running_step_and_keeps_its_result(settings: Settings, tmp_path: Path) -> None:
    with started_cluster(settings, tmp_path, {"cpu": 2}):
        problems, result = asyncio.run(follow_fail_fast_job(settings, tmp_path, restart=None))
    problems += client_result_problems(result)
    assert not problems, "fail-fast beside a running step:\n  " + "\n  ".join(problems) + f"\nlogs in {tmp_path / 'logs'}"


@pytest.mark.timeout(120)
def test_fail_fast_across_a_planner_restart_keeps_the_running_step_result(settings: Settings, tmp_path: Path) -> None:
    with started_cluster(settings, tmp_path, {"cpu": 2}) as cluster:
        problems, result = asyncio.run(follow_fail_fast_job(settings, tmp_path, restart=cluster))
        problems += alive_problems(cluster)
    problems += client_result_problems(result)
    starts = runs(tmp_path)["long"]
    if starts != 1:
        problems.append(f"long was executed {starts} times, expected once (trace: {[line[:2] for line in trace(tmp_path)]})")
    assert not problems, "fail-fast across a planner restart:\n  " + "\n  ".join(problems) + f"\nlogs in {tmp_path / 'logs'}"


# 3: a restart runs no step twice ----------------------------------------------------------------

@pytest.mark.timeout(120)
def test_planner_restart_runs_no_step_twice(settings: Settings, tmp_path: Path) -> None:
    """One worker (concurrency 2) holds the fan-out; the planner is killed as the first steps
    start, a second worker joins, and the restarted planner re-publishes what it cannot know
    to be done: copies reach the new worker, which must not run a step the first one runs
    or ran."""
    width = 12
    text = documents.fan_out_with_trace(str(tmp_path), width=width, seconds=1.5)  # under claim_after_s: never claimed
    with started_cluster(settings, tmp_path, {"cpu": 1}) as cluster:

        async def scenario() -> dict[str, Any]:
            async with Broker(settings, name="job-book-faults") as broker, Probe(settings) as probe:
                job_id = await submit(broker, text)
                await wait_until(lambda: runs(tmp_path), 30, "the first steps to start")
                cluster.stop_child(cluster.child("planner"), kill=True)  # SIGKILL: no drain
                started = sum(runs(tmp_path).values())
                assert started <= width // 2, f"precondition: most steps must still be queued at the kill ({started} started)"
                cluster.start_worker("cpu", 1)
                queue = broker.names.steps_queue("cpu")
                await wait_until(lambda: _consumers_at_least(broker, queue, 2), 30, "the second worker to consume")
                cluster.start_planner()
                job = await probe.finished_job(job_id, 60)
                await asyncio.sleep(2.0)  # a copy delivered by now would have started
                return job

        job = asyncio.run(scenario())
    starts, ends = runs(tmp_path, "start"), runs(tmp_path, "end")
    names = [f"f{i}" for i in range(width)]
    twice = {name: starts[name] for name in names if starts[name] > 1}
    never = [name for name in names if starts[name] == 0]
    assert job["state"] == "succeeded", f"the job ended {job['state']!r} after the planner restart: {job.get('error')}"
    assert not twice and not never, (f"after a planner restart, steps ran more than once: {twice}; never: {never} "
                                     f"(trace: {[line[:2] for line in trace(tmp_path)]})")
    assert all(ends[name] == 1 for name in names), f"every step must end exactly once: {dict(ends)}"


async def _consumers_at_least(broker: Broker, queue: str, count: int) -> bool:
    return (await broker.queue_consumers(queue) or 0) >= count


# 4: a dead-lettered step never hangs its job ---------------------------------------------------

@pytest.mark.timeout(120)
def test_dead_lettered_step_fails_its_job_instead_of_hanging(settings: Settings, tmp_path: Path) -> None:
    text = documents.chain_with_log(str(tmp_path), length=2, seconds=5.0)  # s0 sleeps 5 s, s1 depends on it
    with started_cluster(settings, tmp_path, {"cpu": 1}) as cluster:

        async def scenario() -> tuple[dict[str, Any], dict[str, dict[str, Any]], float]:
            async with Broker(settings, name="job-book-faults") as broker, Probe(settings) as probe:
                job_id = await submit(broker, text)
                await wait_until(lambda: _job_in(probe, job_id, {"running"}), 20, "the job to run")
                assert "s0" not in executions(tmp_path), "precondition: s0 must still be running"
                wrong_device = StepDispatch(job_id=job_id, step="s1", attempt=1, device="gpu")  # the cpu worker refuses it
                assert await broker.publish(Outgoing(broker.names.steps_exchange, "cpu", encode(wrong_device), wrong_device.kind))
                published = time.monotonic()
                job = await probe.finished_job(job_id, 30)
                took = time.monotonic() - published
                await wait_until(lambda: "s0" in executions(tmp_path), 15, "step s0 to end its sleep")
                await asyncio.sleep(1.0)  # its result is written
                return await probe.job(job_id) or job, await probe.steps(job_id), took

        job, steps, took = asyncio.run(scenario())
        problems = alive_problems(cluster)
    s1 = steps.get("s1") or {}
    if job["state"] != "failed":
        problems.append(f"the job ended {job['state']!r} {took:.1f} s after the dead letter, expected 'failed'")
    if s1.get("state") != "failed" or not isinstance(s1.get("error"), dict) or s1["error"].get("kind") != "rejected":
        problems.append(f"s1 should be failed with an error of kind 'rejected': state {s1.get('state', NO_DOCUMENT)!r}, "
                        f"error {s1.get('error')!r}")
    if "s1" in executions(tmp_path):
        problems.append("s1 ran although its message was dead-lettered")
    if unfinished_steps(job, steps):
        problems.append(f"steps left unfinished: {unfinished_steps(job, steps)}")
    assert not problems, ("a dead-lettered step:\n  " + "\n  ".join(problems) + f"\nsteps: {describe(steps)}"
                          f"\nlogs in {tmp_path / 'logs'}")


async def _job_in(probe: Probe, job_id: str, states: set[str]) -> bool:
    job = await probe.job(job_id)
    return job is not None and job.get("state") in states


# 5: MongoDB down for 30 s mid-job -------------------------------------------------------------

STEP_FAILURE = re.compile(r"(?i)fail.*\bs[0-5]\b|\bs[0-5]\b.*fail|\bjob \S+ failed\b|step\.failed")
"""A log line reporting a failure of one of the chain's steps (s0..s5) or of the job."""
STORE_DOWN = re.compile(r"ServerSelectionTimeoutError|AutoReconnect|NetworkTimeout|ConnectionFailure|Connect call failed"
                        r"|Connection refused|StoreUnreachable")
"""The store's connection errors while MongoDB is down: services retrying them (handing a
delivery back, retrying a write) report no step failure."""


def step_failure_lines(logs: dict[str, str]) -> dict[str, list[str]]:
    found = {name: [line for line in log.splitlines() if STEP_FAILURE.search(line) and not STORE_DOWN.search(line)]
             for name, log in logs.items()}
    return {name: lines[:5] for name, lines in found.items() if lines}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_mongodb_outage_mid_job_delays_the_job_but_does_not_fail_it(amqp_url: str, tmp_path: Path) -> None:
    server = MongoWireServer(tmp_path / "mongo")  # ours: stopped and started again on the same port and data
    server.start()
    settings = make_settings(amqp_url, server.url)
    length = 6
    text = documents.chain_with_log(str(tmp_path), length=length, seconds=1.0)
    try:
        with started_cluster(settings, tmp_path, {"cpu": 1}) as cluster:

            async def scenario() -> tuple[dict[str, Any], dict[str, str], list[dict[str, Any]]]:
                async with Broker(settings, name="job-book-faults") as broker:
                    job_id = await submit(broker, text)
                    await wait_until(lambda: len(executions(tmp_path)) >= 2, 30, "two steps to finish")
                    server.stop()
                    assert len(executions(tmp_path)) < length, "precondition: the job must still be running at the outage"
                    await asyncio.sleep(30.0)
                    server.start()
                async with Probe(settings) as probe:
                    job = await probe.finished_job(job_id, 120, outage_ok=True)
                    return job, await probe.step_states(job_id, [f"s{i}" for i in range(length)]), await probe.events(job_id)

            job, states, events = asyncio.run(scenario())
            alive = alive_problems(cluster)
    finally:
        if server.process is None:
            server.start()
        with contextlib.suppress(Exception):
            cleanup(settings)
        server.stop()
    failing = step_failure_lines(service_logs(tmp_path))
    assert job["state"] == "succeeded", f"the job ended {job['state']!r} after a 30 s MongoDB outage: {job.get('error')}; {alive}"
    assert set(states.values()) == {"succeeded"}, f"every step should have succeeded: {states}"
    assert not [e for e in events if str(e.get("type", "")).endswith("failed")], f"failure events recorded: {events}"
    assert not failing, f"the services' logs name step failures: {failing}"


# 6: rejected submissions are recorded ----------------------------------------------------------

@pytest.mark.timeout(120)
def test_invalid_submission_is_recorded_as_rejected_with_an_event(settings: Settings, tmp_path: Path) -> None:
    with started_cluster(settings, tmp_path, {"cpu": 1}):

        async def scenario() -> tuple[dict[str, Any], list[Event], list[dict[str, Any]]]:
            async with EventTap(settings, ("job.#",)) as tap, Probe(settings) as probe:
                job_id = await submit(tap.broker, documents.INVALID, document_name="invalid.yaml")
                job = await probe.finished_job(job_id, 20)
                with contextlib.suppress(AssertionError):  # reported by the assertions below
                    await wait_until(lambda: any(e.type == "job.rejected" for e in tap.of(job_id)), 10, "a job.rejected event")
                    await wait_until(lambda: _has_event(probe, job_id, "job.rejected"), 5, "the stored job.rejected event")
                return job, tap.of(job_id), await probe.events(job_id)

        job, published, stored = asyncio.run(scenario())
    problems = job.get("problems") or []
    assert job["state"] == "rejected", f"an invalid submission's job is {job['state']!r}, expected 'rejected' (problems {problems})"
    assert any("$nope" in str(p) for p in problems), f"the job's problems should name the bad reference: {problems}"
    assert [e.type for e in published if e.type == "job.rejected"], f"no job.rejected event published; saw {[e.type for e in published]}"
    assert [e for e in stored if e.get("type") == "job.rejected"], f"no job.rejected event stored; stored {[e.get('type') for e in stored]}"


@pytest.mark.timeout(120)
def test_a_malformed_job_message_with_a_readable_id_is_recorded_as_rejected(settings: Settings, tmp_path: Path) -> None:
    """A submission that fails the message schema (here: a document that is not text) never
    reaches the validator; whoever waits on its id still hears back, and the planner goes on."""
    body = b'{"kind": "job.submit", "job_id": "malformed-1", "document": {"graph": 5}}'
    with started_cluster(settings, tmp_path, {"cpu": 1}) as cluster:

        async def scenario() -> tuple[dict[str, Any], list[Event], dict[str, Any]]:
            async with EventTap(settings, ("job.#",)) as tap, Probe(settings) as probe:
                await tap.broker.publish(Outgoing(tap.broker.names.jobs_exchange, JOB_SUBMIT_KEY, body, "job.submit"))
                job = await probe.finished_job("malformed-1", 20)
                with contextlib.suppress(AssertionError):  # reported by the assertions below
                    await wait_until(lambda: any(e.type == "job.rejected" for e in tap.of("malformed-1")), 10, "a job.rejected event")
                after = await probe.finished_job(await submit(tap.broker, documents.DIAMOND), 30)
                return job, tap.of("malformed-1"), after

        job, published, after = asyncio.run(scenario())
        problems = alive_problems(cluster)
    assert job["state"] == "rejected" and any("document" in str(p) for p in job.get("problems") or []), job
    assert [e for e in published if e.type == "job.rejected"], f"no job.rejected event; saw {[e.type for e in published]}"
    assert after["state"] == "succeeded" and not problems, (after["state"], problems)


async def _has_event(probe: Probe, job_id: str, kind: str) -> bool:
    return any(e.get("type") == kind for e in await probe.events(job_id))


@pytest.mark.timeout(180)
def test_validation_over_budget_is_rejected_without_holding_up_other_jobs(settings: Settings, tmp_path: Path) -> None:
    from shared.document import catalog_for, check_text

    big = documents.slow_to_validate()
    began = time.monotonic()
    assert not check_text(big, "big.yaml", catalog_for(None, [TEST_PLUGINS])).errors, "precondition: the big document is valid"
    full_validation_s = time.monotonic() - began
    assert full_validation_s >= 3.0, f"precondition: the big document must take seconds to validate, took {full_validation_s:.2f} s"
    budget = {"THEODOLITE_VALIDATION_TIMEOUT_S": "0.5"}
    with started_cluster(settings, tmp_path, {"cpu": 1}, extra_env=budget):

        async def scenario() -> tuple[dict[str, Any], float, dict[str, Any]]:
            async with Broker(settings, name="job-book-faults") as broker, Probe(settings) as probe:
                big_id = await submit(broker, big, document_name="big.yaml")
                submitted = time.monotonic()
                small_id = await submit(broker, documents.DIAMOND, document_name="small.yaml")
                small = await probe.finished_job(small_id, 3 * full_validation_s + 30)
                small_s = time.monotonic() - submitted
                return small, small_s, await probe.finished_job(big_id, 60)

        small, small_s, big_job = asyncio.run(scenario())
    problems = [str(p) for p in big_job.get("problems") or []]
    assert small["state"] == "succeeded", (f"the small job, which validates in milliseconds, ended {small['state']!r} "
                                           f"beside the big one: {small.get('problems') or small.get('error')}")
    assert small_s < full_validation_s / 2, (f"the small job took {small_s:.1f} s: it waited for the big one "
                                             f"(validating that takes {full_validation_s:.1f} s; the budget is 0.5 s)")
    assert big_job["state"] == "rejected", f"the document over the validation budget ended {big_job['state']!r}: {problems}"
    assert any("0.5" in p and re.search(r"(?i)budget|took longer|time", p) for p in problems), (
        f"a problem should say that validation exceeded its 0.5 s budget: {problems[:5]}")
