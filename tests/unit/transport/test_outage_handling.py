"""The pure parts of waiting out outages: backoff schedules, what counts as an outage, settling
deliveries of a dead channel, publishes that wait for a reconnect, the planner's patient
publishes, the worker's reaction to a lost connection, and ``up``'s restart policy."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import aiormq.exceptions
import pytest
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure, ServerSelectionTimeoutError

import services.worker as worker_module
from services.cluster import Child, ChildList, RestartPolicy, Supervisor, exit_text, planner_name
from services.planner_publish import PatientBroker
from services.worker import Worker
from shared import outages
from shared.distributed_errors import BrokerError, BrokerUnavailable, StoreError
from shared.messages import StepDispatch, encode
from shared.outages import Streak, backoff_s, retried_read, transient
from shared.settings import Settings
from shared.states import JobState
from shared.store import JobRecord
from shared.transport import Broker, Outgoing
from shared.transport.reconnect import close_reason, reconnect_delay_s
from shared.transport.settle import HandBack, ack_batch, acknowledge, orphaned, settle
from tests.unit.conftest import FIXTURE_PLUGINS, check
from tests.unit.worker.fakes import FakeBroker, FakeMessage, FakeStore

pytestmark = pytest.mark.timeout(30)


# backoff schedules ----------------------------------------------------------------------------

def test_reconnects_start_fast_and_back_off_to_five_seconds() -> None:
    assert [reconnect_delay_s(n, rng=lambda: 0.0) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    assert reconnect_delay_s(1, rng=lambda: 1.0) == pytest.approx(0.625)  # at most 25 % of jitter
    assert reconnect_delay_s(50, rng=lambda: 1.0) == pytest.approx(6.25)


def test_backoff_doubles_to_its_cap() -> None:
    assert [backoff_s(n, first_s=1, max_s=8, jitter=0, rng=lambda: 0.5) for n in range(1, 6)] == [1, 2, 4, 8, 8]


def test_restart_policy_doubles_from_one_to_thirty_seconds_and_resets_after_a_minute() -> None:
    policy = RestartPolicy()
    assert [policy.delay_s(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert policy.next(0, 0.5) == (1, 1.0)
    assert policy.next(1, 0.5) == (2, 2.0)
    assert policy.next(5, 59.0) == (6, 30.0)
    assert policy.next(5, 60.0) == (1, 1.0)  # it had run a minute: starts over


def test_exit_texts_and_planner_names() -> None:
    assert exit_text(1) == "exited with code 1"
    assert exit_text(0) == "exited with code 0"
    assert exit_text(-signal.SIGKILL) == "was killed by SIGKILL"
    assert [planner_name(i) for i in range(3)] == ["planner", "planner-1", "planner-2"]


# the supervisor ----------------------------------------------------------------------------------

class FakeProcess:
    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self.returncode


class FakeCluster:
    def __init__(self, clock: list[float]) -> None:
        self.clock = clock
        self.children = ChildList()
        self.pids = iter(range(100, 200))

    def add(self, name: str, role: str) -> Child:
        child = Child(name, FakeProcess(next(self.pids)), args=[role], role=role, started_at=self.clock[0])  # type: ignore[arg-type]
        self.children.append(child)
        return child

    def restart(self, child: Child) -> Child:
        self.children.remove(child)
        return self.add(child.name, child.role)


def test_the_supervisor_restarts_with_backoff_and_says_so() -> None:
    now = [0.0]
    cluster = FakeCluster(now)
    planner = cluster.add("planner", "planner")
    cluster.add("worker-cpu-0", "worker")
    supervisor = Supervisor(cluster, clock=lambda: now[0])  # type: ignore[arg-type]
    assert supervisor.poll() == []
    planner.process.returncode = 1  # type: ignore[attr-defined]
    now[0] = 10.0
    assert supervisor.poll() == ["planner exited with code 1; restarting in 1 s"]
    now[0] = 10.5
    assert supervisor.poll() == []
    now[0] = 11.0
    assert supervisor.poll() == ["planner restarted: pid 102"]
    assert [c.process.pid for c in cluster.children("planner")] == [102]
    again = cluster.children("planner")[0]
    again.process.returncode = 1  # type: ignore[attr-defined]
    now[0] = 11.5  # it ran half a second: the next wait doubles
    assert supervisor.poll() == ["planner exited with code 1; restarting in 2 s"]
    now[0] = 13.5
    assert supervisor.poll() == ["planner restarted: pid 103"]
    worker = cluster.children("worker")[0]
    worker.process.returncode = -signal.SIGKILL  # type: ignore[attr-defined]
    assert supervisor.poll() == ["worker-cpu-0 was killed by SIGKILL; restarting in 1 s"]
    latest = cluster.children("planner")[0]
    latest.process.returncode = 1  # type: ignore[attr-defined]
    now[0] = 80.0  # it had run more than a minute: back to 1 s
    assert supervisor.poll() == ["planner exited with code 1; restarting in 1 s", "worker-cpu-0 restarted: pid 104"]
    assert supervisor.restarts == 3


# what counts as an outage ------------------------------------------------------------------------

def _caused(error: BaseException, cause: BaseException) -> BaseException:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(("error", "expected"), [
    (AutoReconnect("connection closed"), True),
    (ServerSelectionTimeoutError("no servers"), True),
    (OSError("connection refused"), True),
    (BrokerUnavailable("publish", 3.0), True),
    (aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED"), True),
    (_caused(StoreError("read failed"), AutoReconnect("reset")), True),
    (OperationFailure("transient", details={"errorLabels": ["RetryableWriteError"]}), True),
    (DuplicateKeyError("dup"), False),
    (StoreError("GridFS checksum mismatch"), False),
    (BrokerError("unknown exchange"), False),
    (ValueError("bad"), False),
])
def test_transient_errors(error: BaseException, expected: bool) -> None:
    assert transient(error) is expected


def test_close_reasons_are_one_readable_line() -> None:
    text = close_reason(aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED - broker forced connection closure"))
    assert text == "ConnectionClosed: CONNECTION_FORCED - broker forced connection closure"
    assert close_reason(None) == "closed"


def test_a_streak_logs_its_start_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    streak = Streak(logging.getLogger("test.streak"), "reading things")
    with caplog.at_level(logging.WARNING, "test.streak"):
        for _ in range(3):
            streak.failed(AutoReconnect("down"), 1.0)
        streak.succeeded()
        streak.succeeded()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2
    assert lines[0] == "reading things failed (AutoReconnect: down); retrying in 1.0 s"
    assert lines[1].startswith("reading things works again after") and "(3 failed tries)" in lines[1]


# retried reads -------------------------------------------------------------------------------------

@dataclass
class ReadingStore:
    settings: Any
    failures: list[BaseException] = field(default_factory=list)
    calls: int = 0

    @retried_read
    async def job_state(self, job_id: str) -> dict[str, str]:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return {"_id": job_id}


@pytest.fixture
def quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outages, "backoff_s", lambda attempt, **_: 0.01)


@pytest.mark.usefixtures("quick_backoff")
async def test_a_read_waits_an_outage_out() -> None:
    store = ReadingStore(Settings(store_retry_s=5.0), [AutoReconnect("down"), ServerSelectionTimeoutError("down")])
    assert await store.job_state("j1") == {"_id": "j1"}
    assert store.calls == 3


@pytest.mark.usefixtures("quick_backoff")
async def test_a_read_gives_up_after_its_budget_and_never_retries_other_errors() -> None:
    store = ReadingStore(Settings(store_retry_s=0.0), [AutoReconnect("down")])
    with pytest.raises(AutoReconnect):
        await store.job_state("j1")
    store = ReadingStore(Settings(store_retry_s=5.0), [StoreError("corrupt")])
    with pytest.raises(StoreError):
        await store.job_state("j1")
    assert store.calls == 1


# settling deliveries of a dead channel -----------------------------------------------------------

class Channel:
    """Stands for the aiormq channel a delivery came on."""


@dataclass
class Delivered(FakeMessage):
    dead: bool = False
    on: Channel = field(default_factory=Channel)

    @property
    def channel(self) -> Channel:
        if self.dead:
            raise aiormq.exceptions.ChannelInvalidStateError("closed")
        return self.on

    async def ack(self, multiple: bool = False) -> None:
        await self._settle("ack+" if multiple else "ack", False)


async def test_deliveries_of_a_dead_channel_are_not_settled() -> None:
    dead = Delivered(b"{}", dead=True, redelivered=True)
    assert orphaned(dead) and not orphaned(Delivered(b"{}")) and not orphaned(FakeMessage(b"{}"))
    assert await acknowledge(dead) is False
    async with settle(dead):
        raise HandBack
    async with settle(dead):
        raise RuntimeError("a bug")
    assert dead.settled == []


async def test_an_outage_hands_a_message_back_even_when_redelivered() -> None:
    message = Delivered(b"{}", redelivered=True)
    async with settle(message):
        raise AutoReconnect("MongoDB restarting")
    assert message.settled == [("nack", True)]
    poison = Delivered(b"{}", redelivered=True)
    async with settle(poison):
        raise RuntimeError("a bug")
    assert poison.settled == [("reject", False)]  # a redelivered poison message is still dead-lettered


async def test_a_batch_is_acked_once_per_live_channel() -> None:
    old, new = Channel(), Channel()
    batch = [Delivered(b"", delivery_tag=7, on=old, dead=True), Delivered(b"", delivery_tag=8, on=old, dead=True),
             Delivered(b"", delivery_tag=1, on=new), Delivered(b"", delivery_tag=2, on=new)]
    await ack_batch(batch)
    assert [m.settled for m in batch] == [[], [], [], [("ack+", False)]]


# publishes wait for a reconnect --------------------------------------------------------------------

class FakeConnection:
    is_closed = False

    def closed(self) -> Any:
        return asyncio.sleep(0)


class FakeExchange:
    def __init__(self, connection: FakeConnection, failures: int = 0) -> None:
        self.connection = connection
        self.failures = failures
        self.sent: list[bytes] = []
        self.on_failure: Any = None

    async def publish(self, message: Any, routing_key: str, **_: Any) -> object:
        if self.failures:
            self.failures -= 1
            self.connection.is_closed = True
            error = aiormq.exceptions.ConnectionClosed(320, "CONNECTION_FORCED")
            if self.on_failure is not None:
                self.on_failure(error)
            raise error
        self.sent.append(message.body)
        return object()  # a Basic.Ack, not a returned message


def lost_broker() -> tuple[Broker, FakeExchange]:
    broker = Broker(Settings(namespace="unit"), name="unit")
    connection = FakeConnection()
    exchange = FakeExchange(connection)
    broker._connection = connection  # type: ignore[assignment]
    broker._exchanges = {broker.names.events_exchange: exchange}  # type: ignore[dict-item]
    broker.lost.set()
    return broker, exchange


def item(broker: Broker) -> Outgoing:
    return Outgoing(broker.names.events_exchange, "job.x", b"hello", "event")


async def test_a_publish_fails_at_once_on_a_broker_never_opened() -> None:
    broker = Broker(Settings(namespace="unit"), name="unit")
    with pytest.raises(BrokerError, match="not open"):
        await broker.publish(item(broker))


async def test_a_publish_waits_for_the_reconnect_then_goes_out() -> None:
    broker, exchange = lost_broker()
    publishing = asyncio.create_task(broker.publish(item(broker), timeout_s=5))
    await asyncio.sleep(0.1)
    assert not publishing.done() and exchange.sent == []
    broker.lost.clear()
    broker.connected.set()  # what the reconnect does once the topology is restored
    assert await asyncio.wait_for(publishing, 2) is True
    assert exchange.sent == [b"hello"]


async def test_a_publish_lost_with_its_connection_is_sent_again_on_the_next() -> None:
    broker, exchange = lost_broker()
    broker.lost.clear()
    broker.connected.set()
    reconnects: list[str] = []

    async def reconnect() -> None:  # stands for the real reconnect (no RabbitMQ here)
        reconnects.append("started")

    broker._reconnect = reconnect  # type: ignore[method-assign]
    lost: list[str] = []
    broker.on_lost(lambda: lost.append("lost"))
    exchange.failures = 1
    exchange.on_failure = lambda error: broker._on_close(broker._connection, error)  # the close callback
    publishing = asyncio.create_task(broker.publish(item(broker), timeout_s=5))
    await asyncio.sleep(0.2)
    assert not publishing.done() and broker.lost.is_set() and lost == ["lost"] and reconnects == ["started"]
    broker._on_close(object())  # another connection's close changes nothing
    assert broker.outages == 1
    broker._connection = FakeConnection()  # type: ignore[assignment]  # what the reconnect does, then:
    broker.lost.clear()
    broker.connected.set()
    assert await asyncio.wait_for(publishing, 2) is True
    assert exchange.sent == [b"hello"]


async def test_a_publish_past_its_deadline_is_an_error_the_caller_handles() -> None:
    broker, _ = lost_broker()
    with pytest.raises(BrokerUnavailable, match="RabbitMQ unavailable"):
        await broker.publish(item(broker), timeout_s=0.2)


async def test_closing_the_broker_ends_waiting_publishes() -> None:
    broker, _ = lost_broker()
    broker._connection = None
    publishing = asyncio.create_task(broker.publish(item(broker), timeout_s=30))
    await asyncio.sleep(0.05)
    await broker.close()
    with pytest.raises(BrokerError, match="closed"):
        await asyncio.wait_for(publishing, 2)


# the planner's patient publishes ----------------------------------------------------------------

class FlakyBroker:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.names = Broker(Settings(namespace="unit"), name="unit").names
        self.calls = 0

    async def publish(self, item: Outgoing, *, timeout_s: float | None = None) -> bool:
        self.calls += 1
        if self.failures:
            self.failures -= 1
            raise BrokerUnavailable("publish", 300.0)
        return True


async def test_the_planner_never_drops_a_publish_while_it_serves() -> None:
    flaky = FlakyBroker(failures=2)
    patient = PatientBroker(flaky, asyncio.Event(), stopping_timeout_s=1.0)  # type: ignore[arg-type]
    assert await patient.publish_many([item(flaky), item(flaky)]) == [True, True]  # type: ignore[arg-type]
    assert flaky.calls == 4


async def test_once_stopping_the_planner_gives_a_publish_up() -> None:
    stop = asyncio.Event()
    stop.set()
    patient = PatientBroker(FlakyBroker(failures=1), stop, stopping_timeout_s=1.0)  # type: ignore[arg-type]
    with pytest.raises(BrokerUnavailable):
        await patient.publish(item(patient))  # type: ignore[arg-type]


# the worker when its connection is lost ----------------------------------------------------------

@pytest.fixture
def worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    monkeypatch.setattr(worker_module, "Store", FakeStore)
    monkeypatch.setattr(worker_module, "Broker", FakeBroker)
    made = Worker(Settings(namespace="unit", concurrency=2, claim_after_s=60.0), "cpu", plugin_dirs=[FIXTURE_PLUGINS], worker_id="w1")
    document = check("graph:\n  a: {tp_slow: [0.15]}\n", FIXTURE_PLUGINS).document
    assert document is not None
    made.store.jobs["j1"] = JobRecord("j1", JobState.RUNNING, document, {}, ["a"], True, None)  # type: ignore[attr-defined]
    yield made
    made._executor.shutdown()
    made.registry.close()


def delivered(step: str = "a", **fields: Any) -> Delivered:
    return Delivered(encode(StepDispatch(job_id="j1", step=step, attempt=1, device="cpu")), **fields)


async def _serving(worker: Worker, *coroutines: Any) -> list[Any]:
    writer = asyncio.create_task(worker._writer.run())
    try:
        return list(await asyncio.gather(*coroutines))
    finally:
        writer.cancel()
        await asyncio.gather(*worker._background, return_exceptions=True)


async def test_a_prefetched_delivery_of_a_lost_connection_is_skipped(worker: Worker) -> None:
    message = delivered(dead=True)
    await _serving(worker, worker.handle(message))
    store: FakeStore = worker.store  # type: ignore[assignment]
    assert store.calls == [] and message.settled == []


async def test_losing_the_connection_claims_the_steps_running_unclaimed(worker: Worker) -> None:
    message = delivered()
    store: FakeStore = worker.store  # type: ignore[assignment]

    async def lose_connection_midway() -> None:
        await asyncio.sleep(0.05)
        assert store.steps.get(("j1", "a")) is None  # running on the fast path, unclaimed
        worker._on_broker_lost()
        message.dead = True
        await asyncio.sleep(0.02)
        assert store.steps[("j1", "a")]["state"] == "running" and store.steps[("j1", "a")]["worker"] == "w1"

    await _serving(worker, worker.handle(message), lose_connection_midway())
    assert store.steps[("j1", "a")]["state"] == "succeeded"  # recorded by its runner
    assert message.settled == []  # not acked: its channel is gone (RabbitMQ's copy finds it finished)


async def test_a_step_decided_after_its_channel_died_runs_only_if_it_can_claim_it(worker: Worker) -> None:
    store: FakeStore = worker.store  # type: ignore[assignment]
    store.steps[("j1", "a")] = {"state": "running", "attempt": 1, "worker": "w2", "publisher": ""}  # the copy elsewhere
    message = delivered()
    load_job = store.load_job

    async def load_then_lose(job_id: str) -> Any:
        message.dead = True
        return await load_job(job_id)

    store.load_job = load_then_lose  # type: ignore[method-assign]
    await _serving(worker, worker.handle(message))
    assert store.steps[("j1", "a")]["worker"] == "w2" and "finish_many" not in store.calls  # not run here



# the planner holds a job message through a store outage ------------------------------------------

async def test_a_submission_meeting_a_store_outage_is_retried_then_acked(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.planner import Planner
    from shared.messages import JobSubmission

    monkeypatch.setattr("services.planner.backoff_s", lambda attempt, **_: 0.01)
    planner = Planner(Settings(namespace="unit"))
    planner._stopping = asyncio.Event()
    failures = [AutoReconnect("MongoDB restarting"), ServerSelectionTimeoutError("no servers")]
    submitted: list[str] = []

    async def submit(submission: JobSubmission, intake: object) -> None:
        if failures:
            raise failures.pop(0)
        submitted.append(submission.job_id)

    planner.submit = submit  # type: ignore[method-assign]
    message = Delivered(encode(JobSubmission(document="graph: {}\n")), redelivered=True)
    await planner._handle_job_message(message, intake=None)  # type: ignore[arg-type]
    assert len(submitted) == 1 and message.settled == [("ack", False)]  # held, retried, acked: never dead-lettered

    failures.append(AutoReconnect("MongoDB restarting"))
    planner._stopping.set()  # shutting down: handed back for the next planner
    again = Delivered(encode(JobSubmission(document="graph: {}\n")), redelivered=True)
    await planner._handle_job_message(again, intake=None)  # type: ignore[arg-type]
    assert again.settled == [("nack", True)]


async def test_a_planner_whose_fence_refused_a_write_tries_again_instead_of_dead_lettering() -> None:
    """Seen in CI: a starved planner renewed its lease late, the fence refused the write of a
    submission (LeaseLost), and the message was dead-lettered: the job was lost."""
    from services.planner import Planner
    from shared.store.lease import LeaseLost

    planner = Planner(Settings(namespace="unit"))
    planner._stopping = asyncio.Event()
    calls: list[int] = []

    async def write() -> str:
        calls.append(1)
        if len(calls) == 1:
            raise LeaseLost("the planner lease (token 1) was not renewed in time")
        return "stored"

    assert await planner._patiently(write, "handling the submission of job j1") == "stored"
    assert len(calls) == 2
    planner._stopping.set()
    calls.clear()
    with pytest.raises(HandBack):  # stopping: back to its queue, for the next holder
        await planner._patiently(write, "handling the submission of job j1")


async def test_a_cancel_handled_while_the_store_is_asked_about_its_submission_is_kept() -> None:
    """Job messages are handled concurrently: a cancel handled while the submission's handler
    waits for MongoDB (does the job exist?) used to find no job and was lost; the job ran."""
    from services.planner import Planner
    from services.planner_intake import Accepted
    from shared.messages import JobSubmission

    planner = Planner(Settings(namespace="unit"))
    document = check("graph:\n  a: {tp_slow: [0.15]}\n", FIXTURE_PLUGINS).document
    assert document is not None
    asked = asyncio.Event()
    answer = asyncio.Event()

    class SlowStore:
        async def job_state(self, job_id: str) -> None:
            asked.set()
            await answer.wait()

        async def insert_job(self, *args: Any, **kwargs: Any) -> None:
            return None

    class Runner:
        async def run(self, effects: Any) -> None:
            return None

    class Intake:
        async def check(self, submission: JobSubmission) -> Accepted:
            return Accepted(document, {})  # type: ignore[arg-type]

    planner.store, planner.effects = SlowStore(), Runner()  # type: ignore[assignment]
    submitting = asyncio.create_task(planner.submit(JobSubmission(document="graph: {}", job_id="j1"), Intake()))  # type: ignore[arg-type]
    await asyncio.wait_for(asked.wait(), 5)
    await planner.cancel("j1", 0.0)
    answer.set()
    await asyncio.wait_for(submitting, 5)
    job = planner.book.job("j1")
    assert job is not None and job.cancel_grace_s == 0.0, "the cancel reached the job once it was accepted"
