"""The fault suite's framework: scenarios run several times with randomised fault points.

A :class:`Scenario` says which cluster it needs (workers, planners, settings, its own
Mongo-wire server), which jobs it submits, how it injects its fault (at a point drawn from a
seeded :class:`random.Random`) and what it expects beyond the common invariants.
:func:`run_scenario` runs it ``runs`` times, each time on a fresh cluster (planner and
workers as separate processes, real RabbitMQ, a Mongo-wire server) with its own namespace
and database, and returns a :class:`Row` of the suite's table (:data:`TABLE`).

After every run, read straight from MongoDB and RabbitMQ (never through the services):

* every job is terminal (in the state the scenario expects), no step of it unfinished;
* every succeeded step has outputs; a traced step's outputs carry the token of an execution
  that really ended (``fault-trace.log``, written by ``fs_traced``); an execution that ended
  belongs to a step that succeeded (a completed step's result is never dropped) — else the
  result counts as *lost*;
* no step recorded twice: at most one completed execution per (step, attempt), and per step
  for steps never re-queued (final attempt 1); a downstream step saw the upstream result
  that is stored (else that result was overwritten) — else the step counts as *duplicated*;
* the jobs queue, the completions (notices) queue, the dead-letter queue and every device
  queue hold no message (passive declares' message counts), within a few seconds;
* every service the scenario did not kill on purpose is still running, and exits 0 when
  stopped with SIGTERM.

Recovery time: from the fault to the first step *released* after the fault finishing (every
step it waits for ended after the fault, so the planner must have been working again; MongoDB
``finished_at``), or to the last job's terminal state when there is none; a killed worker's
step is measured to its own finish, a crash to the crashed step's failure being recorded.

A scenario stops at its first failing run (its failure is then known; the table says how
many runs were made). Environment: ``THEODOLITE_FAULT_RUNS`` (default 3),
``THEODOLITE_FAULT_SEED`` (default: drawn from the clock, printed in the table),
``THEODOLITE_FAULT_TABLE`` (a file to write the table to as markdown),
``THEODOLITE_FAULT_ONLY`` (comma-separated scenario names to run).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import random
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
import yaml
from pymongo.errors import PyMongoError

from services.cluster import Child, LocalCluster, MongoWireServer
from shared import codec
from shared.constants import JOB_SUBMIT_KEY, Names
from shared.messages import JobSubmission, encode
from shared.settings import Settings
from shared.transport import Broker, Outgoing
from tests.faults.test_job_book_faults import FINISHED_JOB_STATES, FINISHED_STEP_STATES, Probe
from tests.support.distributed import TEST_PLUGINS, cleanup, make_settings
from tests.support.fault_table import Row, RunResult

TRACE_FILE = "fault-trace.log"
DEFAULT_RUNS = 3
DEATH_GRACE_S = 6.0
"""How long the jobs are still awaited once a service died on its own (then the run fails)."""
QUIET_S = 6.0
"""How long the queues may take to empty after the jobs ended."""
SUITE_OVERRIDES: dict[str, Any] = {"lease_s": 3.0, "claim_after_s": 1.0, "tick_s": 0.3, "drain_timeout_s": 5.0,
                                   "delivery_limit": 2, "concurrency": 2}
"""Short leases, quick claims and small delivery limits: faults are detected in seconds."""


# the trace -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    """One line of ``fault-trace.log`` (see tests/integration/testplugins/fault_suite_tasks.py)."""

    kind: str
    name: str
    at: float
    attempt: str = "?"
    token: str = ""
    pid: int = 0
    ppid: int = 0
    after: str = "-"
    fault: str = ""


def read_trace(directory: Path) -> list[Line]:
    path = directory / TRACE_FILE
    if not path.exists():
        return []
    lines: list[Line] = []
    for raw in path.read_text(encoding="utf-8", errors="replace").splitlines():
        parts = raw.split()
        try:
            if parts[0] == "start" and len(parts) == 7:
                lines.append(Line("start", parts[1], float(parts[6]), parts[2], parts[3], int(parts[4]), int(parts[5])))
            elif parts[0] == "end" and len(parts) == 8:
                lines.append(Line("end", parts[1], float(parts[6]), parts[2], parts[3], int(parts[4]), int(parts[5]), parts[7]))
            elif parts[0] == "fault" and len(parts) == 6:
                lines.append(Line("fault", parts[1], float(parts[5]), pid=int(parts[3]), ppid=int(parts[4]), fault=parts[2]))
            elif parts[0] == "beat" and len(parts) == 4:
                lines.append(Line("beat", parts[1], float(parts[3]), pid=int(parts[2])))
        except (IndexError, ValueError):
            continue  # a line being written
    return lines


# jobs ------------------------------------------------------------------------------------------

@dataclass
class Job:
    """A job the scenario submits, and what it must end as."""

    job_id: str
    text: str
    expect: str = "succeeded"
    fail_fast: bool = True
    upstream: dict[str, str] = field(default_factory=dict)
    """Traced step -> the traced step whose token it receives (``after``)."""
    needs: dict[str, list[str]] = field(default_factory=dict)
    """Step -> every step it waits for (references and ``dependencies``)."""
    submitted_at: float = 0.0


class Graph:
    """Builds a job document whose steps are the fault suite's tasks."""

    def __init__(self, ctx: RunContext, job_id: str | None = None) -> None:
        self.ctx = ctx
        self.job_id = job_id or uuid.uuid4().hex
        self.steps: dict[str, dict[str, Any]] = {}
        self.upstream: dict[str, str] = {}
        self.needs: dict[str, list[str]] = {}

    def _common(self, step: str) -> dict[str, Any]:
        return {"trace": str(self.ctx.trace_dir), "job": self.job_id, "step": step}

    def traced(self, step: str, seconds: float, *, after: str | None = None, deps: Sequence[str] = ()) -> Graph:
        args: dict[str, Any] = {"seconds": round(seconds, 3), **self._common(step)}
        if after is not None:
            args["x"] = f"${after}.value"
            args["after"] = f"${after}.token"
            self.upstream[step] = after
        body: dict[str, Any] = {"fs_traced": args}
        if deps:
            body["dependencies"] = list(deps)
        self.steps[step] = body
        self.needs[step] = [*([after] if after else []), *deps]
        return self

    def special(self, step: str, task: str, deps: Sequence[str] = (), *, traced: bool = True, **args: Any) -> Graph:
        body: dict[str, Any] = {task: {**(self._common(step) if traced else {}), **args}}
        if deps:
            body["dependencies"] = list(deps)
        self.steps[step] = body
        self.needs[step] = list(deps)
        return self

    def chain(self, prefix: str, length: int, seconds: float, *, after: str | None = None) -> Graph:
        previous = after
        for index in range(length):
            self.traced(f"{prefix}{index}", seconds, after=previous)
            previous = f"{prefix}{index}"
        return self

    def job(self, expect: str = "succeeded", *, fail_fast: bool = True) -> Job:
        text = yaml.safe_dump({"graph": self.steps}, sort_keys=False)
        return Job(self.job_id, text, expect, fail_fast, dict(self.upstream), dict(self.needs))


def workload(ctx: RunContext, *, chain: int = 8, width: int = 4, seconds: float = 0.35) -> Job:
    """A chain ``c0..`` with a fan-out ``w0..`` off ``c0`` joined by ``join`` at the end."""
    graph = Graph(ctx).chain("c", chain, seconds)
    for index in range(width):
        graph.traced(f"w{index}", seconds * 1.5, after="c0")
    graph.traced("join", 0.05, after=f"c{chain - 1}", deps=[f"w{i}" for i in range(width)])
    return graph.job()


# one run ---------------------------------------------------------------------------------------

@dataclass
class Fault:
    what: str
    at: float


@dataclass
class Observed:
    """What MongoDB, RabbitMQ and the trace hold after a run."""

    jobs: dict[str, dict[str, Any] | None]
    steps: dict[str, dict[str, dict[str, Any]]]
    events: list[dict[str, Any]]
    trace: list[Line]
    queues: dict[str, int | None]


@dataclass
class RunContext:
    """Everything one run of a scenario shares with its hooks."""

    scenario: Scenario
    index: int
    rng: random.Random
    settings: Settings
    cluster: LocalCluster
    workdir: Path
    mongo: MongoWireServer | None = None
    jobs: list[Job] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    killed: set[int] = field(default_factory=set)
    """Pids the scenario killed on purpose."""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def trace_dir(self) -> Path:
        return self.workdir

    @property
    def log_dir(self) -> Path:
        return self.workdir / "logs"

    def trace(self) -> list[Line]:
        return read_trace(self.trace_dir)

    def started(self) -> list[Line]:
        return [line for line in self.trace() if line.kind == "start"]

    def running(self) -> list[Line]:
        """Traced executions that started and have not ended."""
        lines = self.trace()
        ended = {line.token for line in lines if line.kind == "end"}
        return [line for line in lines if line.kind == "start" and line.token not in ended]

    async def wait_for(self, what: str, check: Any, timeout_s: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout_s
        while True:
            value = check()
            if asyncio.iscoroutine(value):
                value = await value
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
            await asyncio.sleep(0.05)

    async def wait_started(self, count: int, timeout_s: float = 30.0) -> None:
        await self.wait_for(f"{count} traced step(s) to start", lambda: len(self.started()) >= count, timeout_s)

    def services(self, prefix: str) -> list[Child]:
        return [c for c in self.cluster.children if c.name.startswith(prefix) and c.process.poll() is None]

    def kill(self, child: Child) -> None:
        """SIGKILL a service on purpose (it then does not count as having died on its own)."""
        self.killed.add(child.process.pid)
        self.cluster.stop_child(child, kill=True)

    def fault(self, what: str, at: float | None = None) -> Fault:
        record = Fault(what, time.time() if at is None else at)
        self.faults.append(record)
        return record

    async def submit(self, job: Job) -> None:
        async with Broker(self.settings, name="fault-suite") as broker:
            submission = JobSubmission(job_id=job.job_id, document=job.text, fail_fast=job.fail_fast,
                                       document_name=f"{self.scenario.name}.yaml")
            routed = await broker.publish(Outgoing(broker.names.jobs_exchange, JOB_SUBMIT_KEY, encode(submission),
                                                   submission.kind, message_id=job.job_id))
        if not routed:
            raise AssertionError(f"the submission of job {job.job_id} was not routed")
        job.submitted_at = time.time()
        self.jobs.append(job)

    def unexpected_deaths(self) -> list[str]:
        """Services that exited although the scenario did not kill them."""
        return [f"{c.name} (pid {c.process.pid}) exited with {c.process.returncode}" for c in self.cluster.children
                if c.process.poll() is not None and c.process.pid not in self.killed
                and not self.scenario.may_die(self, c)]


class Scenario:
    """One kind of fault; subclasses override what differs."""

    name = ""
    summary = ""
    workers: ClassVar[dict[str, int]] = {"cpu": 2}
    planners = 1
    overrides: ClassVar[dict[str, Any]] = {}
    own_mongo = False
    timeout_s = 40.0
    """How long a run's jobs may take to end once submitted."""

    def jobs(self, ctx: RunContext) -> list[Job]:
        return [workload(ctx)]

    async def inject(self, ctx: RunContext) -> None:
        """Wait for a random point, inject the fault, record it with ``ctx.fault``."""

    def check(self, ctx: RunContext, seen: Observed) -> list[str]:
        """Problems beyond the common invariants."""
        return []

    def recover(self, ctx: RunContext) -> None:
        """After the run, whatever happened: start again what the fault stopped."""

    def may_die(self, ctx: RunContext, child: Child) -> bool:
        """Whether ``child`` exiting on its own is part of the scenario."""
        return False

    def recovered_at(self, ctx: RunContext, seen: Observed, fault: Fault) -> float | None:
        """When the system had recovered from ``fault`` (see the module docstring): the first
        step released after the fault (every step it waits for ended after the fault, so the
        planner was working again) finished; else the last job's end."""
        ended: dict[str, float] = {}
        for line in seen.trace:
            if line.kind == "end":
                ended[line.name] = max(ended.get(line.name, 0.0), line.at)
        finished = []
        for job in ctx.jobs:
            for step, needs in job.needs.items():
                doc = seen.steps.get(job.job_id, {}).get(step) or {}
                released = bool(needs) and all(ended.get(f"{job.job_id}/{n}", 0.0) > fault.at for n in needs)
                if released and doc.get("state") == "succeeded" and doc.get("finished_at"):
                    finished.append(float(doc["finished_at"]))
        if finished:
            return min(finished)
        ends = [float(job["finished_at"]) for job in seen.jobs.values() if job and job.get("finished_at")]
        return max(ends) if ends else None


# the run ---------------------------------------------------------------------------------------

def _cluster(settings: Settings, scenario: Scenario, workdir: Path) -> LocalCluster:
    options: dict[str, Any] = {}
    accepted = inspect.signature(LocalCluster).parameters
    if scenario.planners > 1 and "planners" in accepted:
        options["planners"] = scenario.planners
    return LocalCluster(settings, scenario.workers, plugin_dirs=[TEST_PLUGINS], start_mongo=False,
                        log_dir=workdir / "logs", **options)


def _start(cluster: LocalCluster, scenario: Scenario) -> None:
    cluster.start()
    planners = [c for c in cluster.children if c.name.startswith("planner")]
    for _ in range(scenario.planners - len(planners)):  # LocalCluster without a planners option
        cluster.start_planner()
    cluster.wait_ready(60)


async def queue_depths(settings: Settings, devices: Iterable[str]) -> dict[str, int | None]:
    """Messages ready in the jobs, completions, dead-letter and device queues (None: no queue)."""
    names = Names(settings.namespace)
    queues = [names.jobs_queue, names.notices_queue, names.dead_queue, *(names.steps_queue(d) for d in devices)]
    depths: dict[str, int | None] = {}
    connection = await aio_pika.connect(settings.amqp_url, timeout=5)
    try:
        for queue_name in queues:
            channel = await connection.channel()
            try:
                queue = await channel.declare_queue(queue_name, passive=True)
                depths[queue_name] = int(queue.declaration_result.message_count or 0)
            except aio_pika.exceptions.ChannelClosed:  # no such queue (ChannelNotFoundEntity)
                depths[queue_name] = None
            finally:
                if not channel.is_closed:
                    await channel.close()
    finally:
        await connection.close()
    return depths


async def _job_states(probe: Probe, jobs: list[Job]) -> dict[str, str | None]:
    states: dict[str, str | None] = {}
    for job in jobs:
        doc = await probe.job(job.job_id)
        states[job.job_id] = None if doc is None else str(doc.get("state"))
    return states


async def _drive(ctx: RunContext) -> None:
    """Submit, inject, await the jobs (reading MongoDB), then let the queues settle."""
    scenario = ctx.scenario
    for job in scenario.jobs(ctx):
        await ctx.submit(job)
    inject = asyncio.create_task(scenario.inject(ctx), name=f"inject-{scenario.name}")
    deadline = time.monotonic() + scenario.timeout_s
    died_at: float | None = None
    states: dict[str, str | None] = {}
    async with Probe(ctx.settings) as probe:
        while True:
            with contextlib.suppress(PyMongoError):  # the Mongo-wire server may be down on purpose
                states = await _job_states(probe, ctx.jobs)
            if inject.done() and states and all(s in FINISHED_JOB_STATES for s in states.values()) and \
                    len(states) == len(ctx.jobs):
                break
            dead = ctx.unexpected_deaths()
            now = time.monotonic()
            if dead:
                died_at = died_at or now
                if now - died_at > DEATH_GRACE_S:
                    ctx.problems.append(f"gave up waiting for the jobs {DEATH_GRACE_S:g} s after services died: "
                                        f"{'; '.join(dead)} (job states {states})")
                    break
            if now > deadline:
                ctx.problems.append(f"jobs not terminal {scenario.timeout_s:g} s after submission: {states}")
                break
            await asyncio.sleep(0.2)
    if not inject.done():  # the run failed already: stop injecting (its finally restarts what it stopped)
        inject.cancel()
        await asyncio.wait([inject], timeout=120)
    if inject.done() and not inject.cancelled() and inject.exception() is not None:
        error = inject.exception()
        ctx.problems.append(f"injecting the fault failed: {type(error).__name__}: {error}")
    await _settle(ctx)


async def _settle(ctx: RunContext) -> None:
    """Wait (bounded) until no message is left in the queues."""
    deadline = time.monotonic() + QUIET_S
    while time.monotonic() < deadline:
        try:
            depths = await queue_depths(ctx.settings, ctx.scenario.workers)
        except Exception:  # noqa: BLE001 - the broker may be restarting; the final read reports it
            depths = {"?": 1}
        if not any(depths.values()):
            return
        await asyncio.sleep(0.3)


async def _observe(ctx: RunContext) -> Observed:
    jobs: dict[str, dict[str, Any] | None] = {}
    steps: dict[str, dict[str, dict[str, Any]]] = {}
    events: list[dict[str, Any]] = []
    try:
        async with Probe(ctx.settings) as probe:
            for job in ctx.jobs:
                jobs[job.job_id] = await probe.job(job.job_id)
                steps[job.job_id] = await probe.steps(job.job_id)
            events = [doc async for doc in probe.db["events"].find({}, {"_id": 0})]
            extra = [doc async for doc in probe.db["steps"].find({"job": {"$nin": [j.job_id for j in ctx.jobs]}})]
            for doc in extra:
                steps.setdefault(str(doc.get("job")), {})[str(doc.get("step"))] = doc
    except PyMongoError as error:
        ctx.problems.append(f"cannot read MongoDB after the run: {type(error).__name__}: {error}")
    try:
        queues = await queue_depths(ctx.settings, ctx.scenario.workers)
    except Exception as error:  # noqa: BLE001 - reported
        ctx.problems.append(f"cannot read the queues after the run: {type(error).__name__}: {error}")
        queues = {}
    return Observed(jobs, steps, events, ctx.trace(), queues)


def stored_outputs(doc: dict[str, Any]) -> Any:
    try:
        return codec.decode(doc.get("outputs"))
    except Exception as error:  # noqa: BLE001 - reported as a lost result
        return error


def invariants(ctx: RunContext, seen: Observed) -> tuple[list[str], int, int]:
    """The common invariants (module docstring): problems, lost results, duplicated steps."""
    problems: list[str] = []
    lost: set[str] = set()
    duplicated: set[str] = set()
    ends: dict[str, list[Line]] = defaultdict(list)
    for line in seen.trace:
        if line.kind == "end":
            ends[line.name].append(line)
    tokens: dict[str, str] = {}
    for job in ctx.jobs:
        doc = seen.jobs.get(job.job_id)
        steps = seen.steps.get(job.job_id, {})
        if doc is None:
            problems.append(f"job {job.job_id} has no document in MongoDB")
            continue
        state = doc.get("state")
        if state not in FINISHED_JOB_STATES:
            problems.append(f"job {job.job_id} is not terminal: {state!r}")
        elif state != job.expect:
            problems.append(f"job {job.job_id} ended {state!r}, expected {job.expect!r} (error {doc.get('error')})")
        unfinished = {n: (steps[n]["state"] if n in steps else "no document") for n in doc.get("step_names", [])
                      if n not in steps or steps[n].get("state") not in FINISHED_STEP_STATES}
        if unfinished and state in FINISHED_JOB_STATES:
            problems.append(f"job {job.job_id} is {state} with unfinished steps {unfinished}")
        for name, step in steps.items():
            key = f"{job.job_id}/{name}"
            if step.get("state") == "succeeded":
                outputs = stored_outputs(step)
                if not isinstance(outputs, dict) or not outputs:
                    lost.add(key)
                    problems.append(f"succeeded step {key} has no readable outputs: {outputs!r}")
                    continue
                if key in ends or "token" in outputs:
                    token = outputs.get("token")
                    tokens[key] = str(token)
                    if token not in {line.token for line in ends.get(key, [])}:
                        lost.add(key)
                        problems.append(f"succeeded step {key} holds token {token!r}, which no completed execution produced")
            elif key in ends and step.get("state") in ("skipped", "cancelled", "failed"):
                lost.add(key)
                problems.append(f"step {key} completed its task ({len(ends[key])}x) but is recorded {step.get('state')!r}")
        for name in doc.get("step_names", []):
            key = f"{job.job_id}/{name}"
            if key in ends and name not in steps:
                lost.add(key)
                problems.append(f"step {key} completed its task but has no step document")
    for key, lines in ends.items():
        job_id, _, step = key.partition("/")
        final = seen.steps.get(job_id, {}).get(step, {})
        per_attempt = Counter(line.attempt for line in lines if line.attempt != "?")
        twice = {attempt: count for attempt, count in per_attempt.items() if count > 1}
        if twice:
            duplicated.add(key)
            problems.append(f"step {key} completed more than once in one attempt: {twice}")
        elif int(final.get("attempt") or 1) <= 1 and len(lines) > 1:
            duplicated.add(key)
            problems.append(f"step {key} (never re-queued) completed {len(lines)} times")
    for job in ctx.jobs:
        for step, upstream in job.upstream.items():
            stored = tokens.get(f"{job.job_id}/{upstream}")
            for line in ends.get(f"{job.job_id}/{step}", []):
                if stored is not None and line.after not in ("-", stored):
                    duplicated.add(f"{job.job_id}/{upstream}")
                    problems.append(f"step {job.job_id}/{step} received {upstream}'s result {line.after}, but {stored} is stored: "
                                    f"{upstream}'s result was recorded twice")
    stray = {queue: count for queue, count in seen.queues.items() if count}
    if stray:
        problems.append(f"messages left in queues {QUIET_S:g} s after the jobs ended: {stray}")
    return problems, len(lost), len(duplicated)


def run_once(scenario: Scenario, index: int, rng: random.Random, amqp_url: str, mongo_url: str, workdir: Path) -> RunResult:
    began = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    mongo: MongoWireServer | None = None
    if scenario.own_mongo:
        mongo = MongoWireServer(workdir / "mongo")
        mongo.start()
        mongo_url = mongo.url
    settings = make_settings(amqp_url, mongo_url, **{**SUITE_OVERRIDES, **scenario.overrides})
    cluster = _cluster(settings, scenario, workdir)
    ctx = RunContext(scenario, index, rng, settings, cluster, workdir, mongo)
    seen: Observed | None = None
    try:
        _start(cluster, scenario)
        asyncio.run(_drive(ctx))
        ctx.problems += [f"service {d}" for d in ctx.unexpected_deaths()]
        seen = asyncio.run(_observe(ctx))
    except Exception as error:  # noqa: BLE001 - the run fails with it
        ctx.problems.append(f"the run raised {type(error).__name__}: {error}")
    finally:
        try:
            scenario.recover(ctx)
        except Exception as error:  # noqa: BLE001 - reported; the next scenarios may fail too
            ctx.problems.append(f"what the fault stopped could not be started again: {error}")
        if mongo is not None and mongo.process is None:
            mongo.start()
        alive = [c for c in cluster.children if c.process.poll() is None]
        cluster.stop(grace_s=20)  # its codes are by name, and two planners share one
        bad = {f"{c.name} (pid {c.process.pid})": c.process.returncode for c in alive if c.process.returncode != 0}
        if bad:
            ctx.problems.append(f"services did not stop cleanly on SIGTERM: {bad}")
        with contextlib.suppress(Exception):
            cleanup(settings, list(scenario.workers))
        if mongo is not None:
            mongo.stop()
    lost = duplicated = 0
    recovery = None
    if seen is not None:
        common, lost, duplicated = invariants(ctx, seen)
        ctx.problems += common
        ctx.problems += scenario.check(ctx, seen)
        if ctx.faults:
            at = scenario.recovered_at(ctx, seen, ctx.faults[0])
            recovery = None if at is None else max(0.0, at - ctx.faults[0].at)
    if not ctx.faults:
        ctx.problems.append("no fault was injected")
    terminal = sum(1 for job in ctx.jobs if seen and (seen.jobs.get(job.job_id) or {}).get("state") in FINISHED_JOB_STATES)
    if ctx.problems:
        ctx.problems.append(f"logs and trace in {workdir}")
    return RunResult(ctx.problems, len(ctx.faults), len(ctx.jobs), terminal, lost, duplicated, recovery,
                     time.monotonic() - began)


def configured_runs() -> int:
    return max(1, int(os.environ.get("THEODOLITE_FAULT_RUNS", DEFAULT_RUNS)))


def configured_seed() -> int:
    value = os.environ.get("THEODOLITE_FAULT_SEED")
    return int(value) if value else int(time.time()) % 1_000_000


SEED = configured_seed()


def run_scenario(scenario: Scenario, amqp_url: str, mongo_url: str, workdir: Path, *, runs: int | None = None,
                 seed: int | None = None) -> Row:
    """Run ``scenario`` up to ``runs`` times (stopping at the first failing run)."""
    runs = runs or configured_runs()
    seed = SEED if seed is None else seed
    row = Row(scenario.name, scenario.summary, runs, [], seed)
    for index in range(runs):
        rng = random.Random(f"{seed}:{scenario.name}:{index}")
        result = run_once(scenario, index, rng, amqp_url, mongo_url, workdir / f"run{index + 1}")
        row.results.append(result)
        if not result.passed:
            break
    return row


