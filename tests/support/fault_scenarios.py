"""The fault suite's scenarios (see tests/support/fault_suite.py for the framework).

Each is a :class:`~tests.support.fault_suite.Scenario`: the cluster it needs, its jobs, its
fault injected at a point drawn from the run's seeded RNG, and what it expects beyond the
common invariants. :data:`SCENARIOS` lists them in the order the suite runs them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
from pymongo.errors import PyMongoError

from services.cluster import Child
from shared.constants import JOB_SUBMIT_KEY, Names
from shared.messages import StepDispatch, encode
from shared.transport import Broker, Outgoing
from tests.faults.test_job_book_faults import Probe
from tests.support.fault_suite import Fault, Graph, Job, Observed, RunContext, Scenario


def _step_of(ctx: RunContext, name: str) -> tuple[str, str]:
    job_id, _, step = name.partition("/")
    return job_id, step


def ancestors(pid: int) -> list[int]:
    """The parent, grandparent, ... of ``pid`` (from /proc; empty where it cannot be read)."""
    found: list[int] = []
    while pid > 1 and len(found) < 10:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        pid = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), 0)
        found.append(pid)
    return found


class WorkerKill(Scenario):
    name = "worker SIGKILL mid-step"
    summary = "a worker running a traced step is SIGKILLed; the other worker takes the step over"

    async def inject(self, ctx: RunContext) -> None:
        await ctx.wait_started(ctx.rng.randint(1, 6))
        await asyncio.sleep(ctx.rng.uniform(0.0, 0.2))
        running = await ctx.wait_for("a traced step running", ctx.running, 10)
        victim = ctx.rng.choice(running)
        family = {victim.pid, victim.ppid, *ancestors(victim.pid)}
        worker = next((c for c in ctx.services("worker") if c.process.pid in family), None)
        if worker is None:
            raise AssertionError(f"no worker process runs {victim.name} (pid {victim.pid}, parent {victim.ppid})")
        ctx.kill(worker)
        ctx.fault(f"SIGKILL {worker.name} running {victim.name}")
        ctx.notes["victim"] = victim.name

    def recovered_at(self, ctx: RunContext, seen: Observed, fault: Fault) -> float | None:
        job_id, step = _step_of(ctx, ctx.notes.get("victim", ""))
        doc = seen.steps.get(job_id, {}).get(step) or {}
        return doc.get("finished_at")


class PlannerKill(Scenario):
    name = "planner SIGKILL mid-job"
    summary = "the planner is SIGKILLed mid-job and started again after a random pause"

    async def inject(self, ctx: RunContext) -> None:
        await ctx.wait_started(ctx.rng.randint(1, 7))
        await asyncio.sleep(ctx.rng.uniform(0.0, 0.3))
        ctx.kill(ctx.services("planner")[0])
        ctx.fault("SIGKILL planner")
        await asyncio.sleep(ctx.rng.uniform(0.2, 1.5))
        ctx.cluster.start_planner()


class PlannerStandby(Scenario):
    name = "active planner SIGKILL, standby takes over"
    summary = "two planners; the active one (the lease holder) is SIGKILLed and not restarted"
    planners = 2
    timeout_s = 45.0

    async def inject(self, ctx: RunContext) -> None:
        await ctx.wait_started(ctx.rng.randint(1, 7))
        await asyncio.sleep(ctx.rng.uniform(0.0, 0.3))
        planners = ctx.services("planner")
        holder = await _lease_holder_pid(ctx)
        victim = next((c for c in planners if c.process.pid == holder), planners[0])
        ctx.notes["lease"] = "lease holder" if holder is not None else "no planner_lease document: the first planner"
        ctx.kill(victim)
        ctx.fault(f"SIGKILL {victim.name} pid {victim.process.pid} ({ctx.notes['lease']})")


async def _lease_holder_pid(ctx: RunContext) -> int | None:
    """The pid in the planner id that holds the planner lease (``planner-HOST-PID-HEX``), if any."""
    with contextlib.suppress(PyMongoError, ValueError, IndexError, TypeError):
        async with Probe(ctx.settings) as probe:
            doc = await probe.db["planner_lease"].find_one({})
            if doc and doc.get("holder"):
                return int(str(doc["holder"]).split("-")[-2])
    return None


def rabbit_app(action: str) -> None:
    """``rabbitmqctl stop_app`` / ``start_app``."""
    command = shutil.which("rabbitmqctl")
    if command is None:
        raise AssertionError("rabbitmqctl is not installed")
    done = subprocess.run([command, action], capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise AssertionError(f"rabbitmqctl {action} failed ({done.returncode}): {done.stderr.strip() or done.stdout.strip()}")


def wait_for_rabbit(url: str, timeout_s: float = 90.0) -> None:
    """Until RabbitMQ accepts an AMQP connection again (after ``start_app``)."""

    async def answers() -> bool:
        try:
            connection = await aio_pika.connect(url, timeout=3)
        except Exception:  # noqa: BLE001 - not up yet
            return False
        await connection.close()
        return True

    deadline = time.monotonic() + timeout_s
    while not asyncio.run(answers()):
        if time.monotonic() > deadline:
            raise AssertionError(f"RabbitMQ did not accept connections {timeout_s:g} s after start_app")
        time.sleep(0.5)


class RabbitRestart(Scenario):
    name = "RabbitMQ restarted mid-job"
    summary = "rabbitmqctl stop_app, a random pause, start_app; services must reconnect"
    timeout_s = 60.0

    async def inject(self, ctx: RunContext) -> None:
        await ctx.wait_started(ctx.rng.randint(1, 7))
        await asyncio.sleep(ctx.rng.uniform(0.0, 0.3))
        try:
            ctx.fault("rabbitmqctl stop_app")
            await asyncio.to_thread(rabbit_app, "stop_app")
            await asyncio.sleep(ctx.rng.uniform(1.0, 3.0))
        finally:
            rabbit_app("start_app")  # always, even when cancelled
        await asyncio.to_thread(wait_for_rabbit, ctx.settings.amqp_url)

    def recover(self, ctx: RunContext) -> None:
        rabbit_app("start_app")  # a no-op when it runs
        wait_for_rabbit(ctx.settings.amqp_url)


class MongoRestart(Scenario):
    name = "Mongo-wire server restarted mid-job"
    summary = "the run's own nx-27017 is stopped for a random 1-4 s and started on the same port and data"
    own_mongo = True
    timeout_s = 60.0

    async def inject(self, ctx: RunContext) -> None:
        assert ctx.mongo is not None
        await ctx.wait_started(ctx.rng.randint(1, 7))
        await asyncio.sleep(ctx.rng.uniform(0.0, 0.3))
        try:
            ctx.fault("Mongo-wire server stopped")
            await asyncio.to_thread(ctx.mongo.stop)
            await asyncio.sleep(ctx.rng.uniform(1.0, 4.0))
        finally:
            if ctx.mongo.process is None:
                await asyncio.to_thread(ctx.mongo.start)


class CrashingStep(Scenario):
    """A step that crashes the process running it (or hangs, or eats memory) beside a healthy
    chain (keep-going, so the chain still runs); then a follow-up job must succeed: the crash
    cost one step, never the worker."""

    task = ""
    pattern = ""
    """A regular expression the failed step's error must match (type, kind or message)."""
    timeout_s = 40.0

    def jobs(self, ctx: RunContext) -> list[Job]:
        graph = Graph(ctx).chain("c", 4, 0.3)
        graph.special("bad", self.task, delay=round(ctx.rng.uniform(0.0, 0.8), 3))
        job = graph.job("failed", fail_fast=False)
        ctx.notes["main"] = job.job_id
        return [job]

    async def inject(self, ctx: RunContext) -> None:
        line = await ctx.wait_for("the bad step to start its fault",
                                  lambda: next((x for x in ctx.trace() if x.kind == "fault"), None), 20)
        ctx.fault(f"{line.fault} in step {line.name}", line.at)
        async with Probe(ctx.settings) as probe:
            await probe.finished_job(ctx.notes["main"], self.timeout_s - 5)
        await ctx.submit(Graph(ctx).chain("after", 3, 0.1).job())

    def check(self, ctx: RunContext, seen: Observed) -> list[str]:
        doc = seen.steps.get(ctx.notes.get("main", ""), {}).get("bad")
        if doc is None:
            return ["the bad step has no step document"]
        error = doc.get("error") or {}
        text = f"{error.get('type')} {error.get('kind')} {error.get('message')}"
        problems = []
        if doc.get("state") != "failed":
            problems.append(f"the bad step ({self.task}) is {doc.get('state')!r}, expected 'failed'")
        elif not re.search(self.pattern, text, re.IGNORECASE):
            problems.append(f"the bad step's error does not say what happened (/{self.pattern}/): {error}")
        return problems

    def recovered_at(self, ctx: RunContext, seen: Observed, fault: Fault) -> float | None:
        doc = seen.steps.get(ctx.notes.get("main", ""), {}).get("bad") or {}
        return doc.get("finished_at") if doc.get("state") == "failed" else None


class Segfault(CrashingStep):
    name = "step segfaults"
    summary = "a step kills its process with SIGSEGV"
    task = "fs_segfault"
    pattern = r"SIGSEGV|signal 11|segment|-11\b"


class HardExit(CrashingStep):
    name = "step calls os._exit(1)"
    summary = "a step ends its process with os._exit(1)"
    task = "fs_exit"
    pattern = r"exit|code 1\b"


LINGER_S = 3.0
"""How long the cluster stays up after a hanging step failed: a task still running shows."""


class Hang(CrashingStep):
    name = "step blocks past its timeout"
    summary = "a step (timeout 1.5 s) never returns; it must fail on time and be stopped"
    task = "fs_hang"
    pattern = r"timeout|timed out"

    async def inject(self, ctx: RunContext) -> None:
        await super().inject(ctx)
        async with Probe(ctx.settings) as probe:  # keep the cluster up: a task left running would show
            doc = await probe.step(ctx.notes["main"], "bad") or {}
        await asyncio.sleep(max(0.0, float(doc.get("finished_at") or 0.0) + LINGER_S - time.time()))

    def check(self, ctx: RunContext, seen: Observed) -> list[str]:
        problems = super().check(ctx, seen)
        doc = seen.steps.get(ctx.notes.get("main", ""), {}).get("bad") or {}
        fault = next((line for line in seen.trace if line.kind == "fault"), None)
        if doc.get("state") == "failed" and fault is not None:
            took = float(doc["finished_at"]) - fault.at
            if took > 1.5 + 3.0:
                problems.append(f"the step failed {took:.1f} s after it began to hang (timeout 1.5 s): not on time")
            beats = [line.at for line in seen.trace if line.kind == "beat" and line.at > float(doc["finished_at"]) + 1.0]
            if beats:
                problems.append(f"the timed-out task was not stopped: it still ran {max(beats) - float(doc['finished_at']):.1f} s "
                                f"after its step failed ({len(beats)} heartbeats later than 1 s after)")
        return problems


class MemoryHog(CrashingStep):
    name = "step exceeds its memory limit"
    summary = "a step declared with memory_mb=128 allocates 768 MB"
    task = "fs_hog"
    pattern = r"memory|MemoryError|OOM|rss"


class FailFastRestart(Scenario):
    name = "fail-fast beside a long step, planner restarted"
    summary = "one branch fails while another's 4 s step runs; the planner is SIGKILLed and restarted meanwhile"

    def jobs(self, ctx: RunContext) -> list[Job]:
        graph = Graph(ctx).special("boom", "fs_fail", traced=False, message="boom fails fast")
        graph.traced("long", 4.0)
        graph.traced("after_long", 0.05, after="long")
        graph.special("after_boom", "fs_traced", ["boom"], seconds=0.05)
        job = graph.job("failed")
        ctx.notes["main"] = job.job_id
        return [job]

    async def inject(self, ctx: RunContext) -> None:
        job_id = ctx.notes["main"]
        async with Probe(ctx.settings) as probe:
            async def boom_failed() -> bool:
                doc = await probe.step(job_id, "boom")
                return doc is not None and doc.get("state") == "failed"

            await ctx.wait_for("step boom to fail", boom_failed, 20)
        await ctx.wait_started(1)
        long_start = ctx.started()[0].at
        await asyncio.sleep(max(0.0, long_start + ctx.rng.uniform(0.3, 2.0) - time.time()))
        ctx.kill(ctx.services("planner")[0])
        ctx.fault("SIGKILL planner while long runs after boom failed")
        await asyncio.sleep(ctx.rng.uniform(0.3, 1.0))
        ctx.cluster.start_planner()

    def check(self, ctx: RunContext, seen: Observed) -> list[str]:
        job_id = ctx.notes.get("main", "")
        steps = seen.steps.get(job_id, {})
        expected = {"boom": "failed", "long": "succeeded", "after_boom": "skipped", "after_long": "skipped"}
        actual = {name: (steps.get(name) or {}).get("state", "no document") for name in expected}
        problems = [] if actual == expected else [f"step states {actual}, expected {expected}"]
        starts = [line for line in seen.trace if line.kind == "start" and line.name == f"{job_id}/long"]
        if len(starts) != 1:
            problems.append(f"long was executed {len(starts)} times, expected once")
        job = seen.jobs.get(job_id) or {}
        long = steps.get("long") or {}
        if job.get("finished_at") and long.get("finished_at") and job["finished_at"] < long["finished_at"]:
            problems.append("the job was finished before its running step long recorded its result")
        return problems

    def recovered_at(self, ctx: RunContext, seen: Observed, fault: Fault) -> float | None:
        job = seen.jobs.get(ctx.notes.get("main", "")) or {}
        return job.get("finished_at")


@dataclass
class Garbage:
    what: str
    exchange: str
    key: str
    body: bytes
    kind: str
    job_id: str | None = None
    step: str | None = None


class GarbageAndPoison(Scenario):
    name = "garbage and poison messages"
    summary = ("undecodable bodies, JSON of the wrong shape, dispatches naming an unknown job or an unknown step, to the "
               "steps, jobs and completions queues; and a step whose result cannot be stored")

    def jobs(self, ctx: RunContext) -> list[Job]:
        real = Graph(ctx).chain("c", 6, 0.3).job()
        unstorable = Graph(ctx).special("keep", "fs_traced", seconds=0.05).special("bad", "fs_unstorable", traced=False)
        poison = unstorable.job("failed", fail_fast=False)
        ctx.notes.update(real=real.job_id, unstorable=poison.job_id)
        return [real, poison]

    def messages(self, ctx: RunContext) -> list[Garbage]:
        names = Names(ctx.settings.namespace)
        rng = ctx.rng
        real = ctx.notes["real"]
        ghost = "ghost" + uuid.uuid4().hex[:12]
        unknown_job = StepDispatch(job_id=ghost, step="s0", attempt=1, device="cpu")
        unknown_step = StepDispatch(job_id=real, step="nosuch", attempt=1, device="cpu")
        return [
            Garbage("random bytes (steps)", names.steps_exchange, "cpu", rng.randbytes(rng.randint(1, 300)), "step.dispatch"),
            Garbage("JSON list (steps)", names.steps_exchange, "cpu", b"[1, 2, 3]", "step.dispatch"),
            Garbage("dispatch without fields", names.steps_exchange, "cpu", b'{"kind": "step.dispatch", "r": %d}'
                    % rng.randint(0, 10**9), "step.dispatch"),
            Garbage("empty batch", names.steps_exchange, "cpu", b'{"kind": "step.batch", "job_id": "x%d", "device": "cpu", '
                    b'"steps": []}' % rng.randint(0, 10**9), "step.batch"),
            Garbage("dispatch naming an unknown job", names.steps_exchange, "cpu", encode(unknown_job), "step.dispatch",
                    ghost, "s0"),
            Garbage("dispatch naming an unknown step of a running job", names.steps_exchange, "cpu", encode(unknown_step),
                    "step.dispatch", real, "nosuch"),
            Garbage("random bytes (jobs)", names.jobs_exchange, JOB_SUBMIT_KEY, rng.randbytes(rng.randint(1, 300)), "job.submit"),
            Garbage("submission of the wrong shape", names.jobs_exchange, JOB_SUBMIT_KEY,
                    b'{"kind": "job.submit", "document": %d}' % rng.randint(0, 10**9), "job.submit"),
            Garbage("random bytes (completions)", names.notices_exchange, "step.done", rng.randbytes(rng.randint(1, 300)),
                    "step.done"),
            Garbage("notice of the wrong shape", names.notices_exchange, "step.done",
                    b'{"kind": "step.done", "job_id": %d}' % rng.randint(0, 10**9), "step.done"),
        ]

    async def inject(self, ctx: RunContext) -> None:
        await ctx.wait_started(ctx.rng.randint(1, 3))
        garbage = self.messages(ctx)
        ctx.rng.shuffle(garbage)
        ctx.notes["garbage"] = garbage
        async with Broker(ctx.settings, name="fault-suite-poisoner") as broker:
            for item in garbage:
                await asyncio.sleep(ctx.rng.uniform(0.0, 0.15))
                routed = await broker.publish(Outgoing(item.exchange, item.key, item.body, item.kind))
                ctx.fault(item.what)
                if not routed:
                    raise AssertionError(f"{item.what} was not routed to a queue")

    def check(self, ctx: RunContext, seen: Observed) -> list[str]:
        problems: list[str] = []
        bodies: dict[str, set[str]] = defaultdict(set)
        for event in seen.events:
            if "body" in event:
                bodies[str(event.get("type"))].add(str(event["body"]))
        step_dead = {(e.get("job_id"), e.get("step")) for e in seen.events if e.get("type") == "step.dead_lettered"}
        for item in ctx.notes.get("garbage", []):
            shown = item.body[:500].decode("utf-8", "replace")
            dead_copy = shown in bodies["message.dead_lettered"] or (item.job_id, item.step) in step_dead
            if item.job_id is None:
                if not dead_copy:
                    problems.append(f"{item.what}: no dead-letter copy recorded (message.dead_lettered)")
                if item.exchange != Names(ctx.settings.namespace).steps_exchange and shown not in bodies["message.rejected"]:
                    problems.append(f"{item.what}: no message.rejected event recorded")
                continue
            doc = seen.steps.get(item.job_id, {}).get(item.step or "")
            failed = doc is not None and doc.get("state") == "failed"
            named = any(e.get("job_id") == item.job_id and e.get("step") == item.step for e in seen.events)
            if not (failed or named):
                problems.append(f"{item.what}: neither a failed step nor an event names {item.job_id}/{item.step}")
            if not dead_copy:
                problems.append(f"{item.what}: no dead-letter copy recorded (step.dead_lettered or message.dead_lettered)"
                                f"{'; the worker recorded it as a failed step and acked it' if failed else ''}")
        bad = seen.steps.get(ctx.notes.get("unstorable", ""), {}).get("bad") or {}
        error = bad.get("error") or {}
        if bad.get("state") != "failed" or not re.search(r"codec|store|encod", f"{error.get('type')} {error.get('message')}", re.IGNORECASE):
            problems.append(f"the step whose result cannot be stored should fail with a codec error: {bad.get('state')} {error}")
        return problems


class WorkerKillingMessage(Scenario):
    name = "message that kills its workers"
    summary = "a step SIGKILLs whichever worker runs it; delivery limit 1: dead-lettered, the step fails with that reason"
    workers: ClassVar[dict[str, int]] = {"cpu": 3}
    overrides: ClassVar[dict[str, Any]] = {"delivery_limit": 1}

    def jobs(self, ctx: RunContext) -> list[Job]:
        graph = Graph(ctx).traced("ok", 0.1)
        graph.special("poison", "fs_kill_worker", ["ok"], delay=round(ctx.rng.uniform(0.0, 0.5), 3))
        graph.traced("after", 0.05, deps=["poison"])
        job = graph.job("failed")
        ctx.notes["main"] = job.job_id
        return [job]

    def may_die(self, ctx: RunContext, child: Child) -> bool:
        return child.name.startswith("worker") and child.process.returncode == -signal.SIGKILL

    async def inject(self, ctx: RunContext) -> None:
        line = await ctx.wait_for("the poison step to run", lambda: next((x for x in ctx.trace() if x.kind == "fault"), None), 20)
        ctx.fault(f"{line.name} SIGKILLs its worker", line.at)

    def check(self, ctx: RunContext, seen: Observed) -> list[str]:
        job_id = ctx.notes.get("main", "")
        steps = seen.steps.get(job_id, {})
        poison = steps.get("poison") or {}
        error = poison.get("error") or {}
        problems = []
        kills = [line for line in seen.trace if line.kind == "fault"]
        extra = len(kills) - 1
        for _ in range(max(0, extra)):
            ctx.fault("the poison step killed another worker")
        if len(kills) > 2:
            problems.append(f"the poison step ran {len(kills)} times; delivery limit 1 allows 2 deliveries")
        if poison.get("state") != "failed" or not re.search(r"deliver", str(error.get("message")), re.IGNORECASE):
            problems.append(f"the poison step should fail naming the delivery limit: {poison.get('state')} {error}")
        if (steps.get("after") or {}).get("state") != "skipped":
            problems.append(f"after should be skipped: {(steps.get('after') or {}).get('state')}")
        return problems

    def recovered_at(self, ctx: RunContext, seen: Observed, fault: Fault) -> float | None:
        doc = seen.steps.get(ctx.notes.get("main", ""), {}).get("poison") or {}
        return doc.get("finished_at")


SCENARIOS: list[Scenario] = [
    WorkerKill(), PlannerKill(), PlannerStandby(), RabbitRestart(), MongoRestart(), Segfault(), HardExit(), Hang(),
    MemoryHog(), FailFastRestart(), GarbageAndPoison(), WorkerKillingMessage(),
]


def selected_scenarios() -> list[Scenario]:
    only = {name.strip() for name in os.environ.get("THEODOLITE_FAULT_ONLY", "").split(",") if name.strip()}
    return [s for s in SCENARIOS if not only or s.name in only or type(s).__name__ in only]
