"""Fuzzing what reaches the planner: 10,000 generated documents and 10,000 generated messages.

* **Documents** (YAML or JSON text built from random structures with the language's keys,
  graphs of fixture tasks referring to each other, and random text edits) go through
  ``shared.document.check_text``, which must never raise and must give either a document or
  located problems; every valid one becomes the planner's ``JobPlan``
  (``services.planner_intake.plan_of``) and is accepted, reported on and cancelled by a
  ``JobBook``, which must never raise either.
* **Messages** (random bytes, random JSON, and valid ``JobSubmission``, ``JobCancel``,
  ``StepDispatch``, ``StepBatch``, ``StepNotice`` and ``NoticeBatch`` bodies with fields
  dropped, replaced, added, retyped, truncated or bit-flipped) go through
  ``parse_job_message``, ``parse_dispatches`` and ``parse_notices``, which may raise only
  ``MessageError``; the notices and dispatches that parse are fed to a ``JobBook`` holding a
  small job (as reports, dead letters, routing confirmations, lease expiries and re-queues
  with random names and attempts), which must never raise.

Each example checks several items (documents: 2,500 x 4; messages: 2,000 x 5), so that the
whole stays well under a minute: 10,000 of each.
"""

from __future__ import annotations

import copy
import json
import random
import time
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.planner_intake import plan_of
from shared.distributed_errors import MessageError
from shared.document import check_text
from shared.messages import (
    JobCancel,
    JobSubmission,
    NoticeBatch,
    StepBatch,
    StepDispatch,
    StepErrorInfo,
    StepNotice,
    StepRef,
    encode,
    parse_dispatches,
    parse_job_message,
    parse_notices,
)
from shared.planner.book import JobBook, JobPlan, StoredStep
from shared.planner.effects import Publish, Requeue
from shared.states import ErrorKind, StepState
from tests.unit.conftest import fixture_catalog

CATALOG = fixture_catalog()
DOCUMENT_EXAMPLES, PER_DOCUMENT_EXAMPLE = 2_500, 4
MESSAGE_EXAMPLES, PER_MESSAGE_EXAMPLE = 2_000, 5
SLOW_S = 5.0
"""No single document may take this long to check."""
COUNTS: dict[str, int] = {"documents": 0, "valid": 0, "messages": 0, "parsed": 0}

# documents ---------------------------------------------------------------------------------

KEYS = ["graph", "tasks", "parameters", "types", "artifact_inputs", "artifact_outputs", "plugin", "inputs", "outputs",
        "dependencies", "task", "args", "kwargs", "name", "type", "default", "contents", "list", "tuple", "union",
        "mapping", "is_a", "required", "s", "t", "u", "v", "p", "q"]
TASK_NAMES = ["tp_echo", "tp_add", "tp_pair", "tp_collect", "tp_stamp", "tp_nothing", "tp_tasks.tp_echo", "nosuch", "echo"]
REFERENCES = ["$s", "$t", "$u.value", "$v.first", "$p", "$q", "$$x", "$", "$nope", "$s.nope", "$data"]
STEP_NAMES = ["s", "t", "u", "v", "w"]

scalars = (st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=6) | st.sampled_from(REFERENCES) | st.sampled_from(KEYS))
values = st.recursive(scalars, lambda children: st.lists(children, max_size=3)
                      | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=3), children, max_size=3), max_leaves=10)
arguments = st.lists(st.sampled_from(REFERENCES[:6]) | scalars, max_size=3) | st.dictionaries(
    st.sampled_from(["value", "a", "b", "extra", "x"]), st.sampled_from(REFERENCES[:6]) | scalars, max_size=3) | values


@st.composite
def step_bodies(draw: st.DrawFn) -> Any:
    task = draw(st.sampled_from(TASK_NAMES))
    form = draw(st.integers(0, 4))
    if form == 0:
        body: Any = {task: draw(arguments)}
    elif form == 1:
        body = {"task": task, "args": draw(st.lists(scalars | st.sampled_from(REFERENCES[:6]), max_size=3)),
                "kwargs": draw(st.dictionaries(st.sampled_from(["value", "a", "b"]), scalars, max_size=2))}
    elif form == 2:
        body = {task: draw(arguments), "dependencies": draw(st.lists(st.sampled_from(STEP_NAMES), max_size=3)
                                                            | st.sampled_from(STEP_NAMES))}
    elif form == 3:
        body = {task: draw(arguments), draw(st.sampled_from(KEYS)): draw(values)}
    else:
        body = draw(values)
    return body


@st.composite
def document_data(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(st.sampled_from(STEP_NAMES) | st.text(min_size=1, max_size=4), min_size=1, max_size=5, unique=True))
    data: dict[str, Any] = {"graph": {name: draw(step_bodies()) for name in names}}
    if draw(st.booleans()):
        data["parameters"] = draw(st.dictionaries(st.sampled_from(["p", "q", "n"]), scalars
                                                  | st.fixed_dictionaries({"type": st.sampled_from(["integer", "string", "any", "nope"]),
                                                                           "default": scalars}), max_size=2))
    if draw(st.integers(0, 3)) == 0:
        data["tasks"] = {"echo": {"plugin": draw(st.sampled_from(["tp_tasks.tp_echo", "tp_tasks.nosuch", "os.system"])),
                                  "inputs": [{"value": "any"}], "outputs": draw(st.sampled_from([{"value": "any"}, "value", []]))}}
    if draw(st.integers(0, 4)) == 0:
        data["types"] = draw(st.dictionaries(st.sampled_from(["vec", "u", "integer"]), st.sampled_from(
            [{"list": "number"}, {"union": ["integer", "string"]}, {"mapping": {"x": "number"}}, None, "vec"]), max_size=2))
    if draw(st.integers(0, 5)) == 0:
        data["artifact_inputs"] = {"data": draw(st.sampled_from([{"x": "any"}, None, [1]]))}
    if draw(st.integers(0, 5)) == 0:
        data["artifact_outputs"] = {"out": {"contents": draw(st.sampled_from(REFERENCES)), "task": {"name": "tp_echo"}}}
    for _ in range(draw(st.integers(0, 1))):
        data[draw(st.sampled_from(KEYS) | st.text(max_size=4))] = draw(values)
    return data


@st.composite
def dag_data(draw: st.DrawFn) -> dict[str, Any]:
    """A graph of fixture tasks that mostly validates: each step refers to earlier ones (now
    and then to a later one: a cycle), in every step form; sometimes one value is junk."""
    count = draw(st.integers(1, 8))
    graph: dict[str, Any] = {}
    for index in range(count):
        earlier = [f"n{i}" for i in range(index)]
        pool = earlier or ["p"]
        if draw(st.integers(0, 9)) == 0:
            pool = [f"n{count - 1}"]
        ref = "$" + draw(st.sampled_from(pool)) if earlier or draw(st.booleans()) else draw(st.integers(0, 9))
        form = draw(st.integers(0, 3))
        if form == 0:
            body: dict[str, Any] = {"tp_add": [ref, draw(st.integers(0, 9))]}
        elif form == 1:
            body = {"tp_echo": {"value": ref}}
        elif form == 2:
            body = {"task": "tp_collect", "args": [ref], "kwargs": {"k": [ref, "$$lit"]}}
        else:
            body = {"tp_pair": [ref, {"nested": [ref]}]}
        if earlier and draw(st.booleans()):
            body["dependencies"] = draw(st.lists(st.sampled_from(earlier), max_size=2, unique=True))
        graph[f"n{index}"] = body
    data: dict[str, Any] = {"parameters": {"p": draw(st.integers(0, 5))}, "graph": graph}
    if draw(st.integers(0, 3)) == 0:
        step = graph[draw(st.sampled_from(sorted(graph)))]
        step[draw(st.sampled_from(KEYS))] = draw(values)
    return data


FRAGMENTS = ["[", "]", "{", "}", ": ", "- ", "&a ", "*a", "\n", "\n  ", "#", "'", '"', "\t", "!!float ", "<<: ", "\x00", "é"]


def edited(text: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        at = rng.randint(0, len(text))
        choice = rng.randint(0, 2)
        if choice == 0:
            text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
        elif choice == 1:
            text = text[:at] + text[at + rng.randint(1, 8):]
        else:
            text = text[:at] + text[at:at + 6] * 3 + text[at:]
    return text


def texts_of(data: dict[str, Any], rng: random.Random) -> list[str]:
    block = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    texts = [block, yaml.safe_dump(data, sort_keys=False, default_flow_style=True), json.dumps(data, default=str)]
    texts.append(edited(rng.choice(texts), rng))
    return texts[:PER_DOCUMENT_EXAMPLE]


def exercise_planner(document: Any, rng: random.Random) -> None:
    """A valid document as the planner takes it: its plan accepted, reports, a cancel."""
    plan = plan_of(document, fail_fast=rng.random() < 0.7)
    book = JobBook(lease_s=3.0)
    now = time.time()
    effects = book.accept("job1", plan, now)
    names = list(plan.dependencies)
    for _ in range(rng.randint(0, 2 * len(names) + 1)):
        step = rng.choice([*names, "nosuch"])
        outcome = rng.choice([StepState.SUCCEEDED, StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED])
        error = StepErrorInfo(type="E", message="m", kind=ErrorKind.TASK) if outcome is StepState.FAILED else None
        effects += book.notices([StepNotice(job_id="job1", step=step, attempt=rng.randint(1, 3), outcome=outcome,
                                            worker_id="w", error=error)], now)
    effects += book.cancel("job1", now)
    restored = JobBook(lease_s=3.0)
    stored = {name: StoredStep(rng.choice(list(StepState)), rng.randint(0, 3)) for name in names if rng.random() < 0.5}
    effects += restored.restore("job1", plan, stored, now)
    assert isinstance(effects, list)


@settings(max_examples=DOCUMENT_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(data=document_data() | dag_data(), seed=st.integers(0, 2**32 - 1))
def test_generated_documents_never_crash_the_validator_or_the_planner(data: dict[str, Any], seed: int) -> None:
    rng = random.Random(seed)
    for text in texts_of(copy.deepcopy(data), rng):
        began = time.monotonic()
        result = check_text(text, "fuzz.yaml", CATALOG)
        took = time.monotonic() - began
        COUNTS["documents"] += 1
        assert took < SLOW_S, f"checking took {took:.1f} s:\n{text[:2000]}"
        codes = [issue.code for issue in result.issues]
        assert "document.internal" not in codes, f"the validator failed internally: {result.issues}\n{text[:2000]}"
        assert result.document is not None or result.errors, f"neither a document nor an error:\n{text[:2000]}"
        if result.document is not None and not result.errors:
            COUNTS["valid"] += 1
            exercise_planner(result.document, rng)


# messages ----------------------------------------------------------------------------------

JOB = "job1"
BOOK_STEPS = ["a", "b", "c"]
step_names = st.sampled_from([*BOOK_STEPS, "nosuch"]) | st.text(min_size=1, max_size=6)
job_ids = st.sampled_from([JOB, JOB, "job2", "other-job"])
attempts = st.integers(1, 4)
outcomes = st.sampled_from([StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED])
errors = st.none() | st.builds(StepErrorInfo, type=st.sampled_from(["E", "DeadLettered"]), message=st.text(max_size=8),
                               kind=st.sampled_from(list(ErrorKind)))
notices = st.builds(StepNotice, job_id=job_ids, step=step_names, attempt=attempts, outcome=outcomes,
                    worker_id=st.sampled_from(["w1", "w2"]), error=errors, duration_s=st.floats(0, 10))
dispatches = st.builds(StepDispatch, job_id=job_ids, step=step_names, attempt=attempts, device=st.sampled_from(["cpu", "gpu"]),
                       claim=st.booleans(), publisher=st.sampled_from(["", "planner-1"]))
batches = st.builds(StepBatch, job_id=job_ids, device=st.just("cpu"),
                    steps=st.lists(st.builds(StepRef, step=step_names, attempt=attempts), min_size=1, max_size=4))
valid_messages = st.one_of(
    notices, dispatches, batches, st.builds(NoticeBatch, notices=st.lists(notices, min_size=1, max_size=4)),
    st.builds(JobSubmission, document=st.sampled_from(["graph: {s: {tp_echo: [1]}}", ""]), job_id=job_ids,
              parameters=st.dictionaries(st.text(max_size=3), scalars, max_size=2)),
    st.builds(JobCancel, job_id=job_ids),
)
KINDS = ["job.submit", "job.cancel", "step.dispatch", "step.batch", "step.done", "step.done.batch", "event", "nope", 1, None]


def mutated(body: bytes, rng: random.Random, junk: Any) -> bytes:
    """``body`` (a valid message) with one random change."""
    choice = rng.randint(0, 6)
    if choice <= 3:
        data = json.loads(body)
        target = data
        while rng.random() < 0.5:  # sometimes change something nested (a batch's steps or notices)
            inner = [v for v in target.values() if isinstance(v, dict) and v] + [
                item for v in target.values() if isinstance(v, list) for item in v if isinstance(item, dict) and item]
            if not inner:
                break
            target = rng.choice(inner)
        key = rng.choice(list(target))
        if choice == 0:
            del target[key]
        elif choice == 1:
            target[key] = junk
        elif choice == 2:
            target[rng.choice(["extra", "kind", "schema_version", "attempt", "steps", "notices"])] = junk
        else:
            data["kind"] = rng.choice(KINDS)
        return json.dumps(data, default=str).encode()
    if choice == 4:
        return body[:rng.randint(0, len(body))]
    if choice == 5:
        flipped = bytearray(body)
        for _ in range(rng.randint(1, 4)):
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
        return bytes(flipped)
    return body.replace(b'"', b"'", 1)


def fresh_book() -> JobBook:
    book = JobBook(lease_s=3.0)
    book.accept(JOB, JobPlan({"a": [], "b": ["a"], "c": ["a", "b"]}, dict.fromkeys(BOOK_STEPS, "cpu")), 1.0)
    return book


def feed(book: JobBook, parsed: list[Any], rng: random.Random) -> None:
    """What the planner does with messages that parse (and with what workers stored): notices
    are reports (so are finished steps read back from MongoDB, whatever their names), a
    dispatch back from the dead-letter queue fails its step, a cancel cancels, and a stored
    step whose lease expired is re-queued. (``routed`` and ``requeued`` only ever answer the
    book's own effects, so they get the names it published.)"""
    now = time.time()
    effects = book.notices([m for m in parsed if isinstance(m, StepNotice)], now)
    for message in parsed:
        if isinstance(message, StepDispatch):
            effects += book.dead_letter(message.job_id, message.step, message.attempt, "delivery_limit",
                                        rng.choice([ErrorKind.LOST, ErrorKind.REJECTED]), now)
            effects += book.lease_expired(message.job_id, message.step, message.attempt, "w1", now)
        elif isinstance(message, JobCancel):
            effects += book.cancel(message.job_id, now)
    for effect in list(effects):
        if isinstance(effect, Publish):
            names = [name for name, _ in effect.steps]
            effects += book.routed(effect.job_id, names, rng.random() < 0.8, now)
        elif isinstance(effect, Requeue):
            effects += book.requeued(effect.job_id, effect.step, effect.attempt + 1, now)
    effects += book.presence({"cpu": rng.choice([None, 0, 1])}, now)
    book.tick(now)
    assert isinstance(effects, list)


@settings(max_examples=MESSAGE_EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
@given(message=valid_messages, junk=values, raw=st.binary(max_size=300), seed=st.integers(0, 2**32 - 1))
def test_generated_messages_raise_only_message_errors_and_never_crash_the_book(message: Any, junk: Any, raw: bytes,
                                                                                seed: int) -> None:
    rng = random.Random(seed)
    body = encode(message)
    bodies = [raw, json.dumps(junk, default=str).encode(), body, mutated(body, rng, junk), mutated(body, rng, junk)]
    book = fresh_book()
    for item in bodies[:PER_MESSAGE_EXAMPLE]:
        COUNTS["messages"] += 1
        limit = rng.choice([16 * 1024 * 1024, 64])
        parsed: list[Any] = []
        try:
            parsed.append(parse_job_message(item, limit))
        except MessageError:
            pass
        for parse in (parse_dispatches, parse_notices):
            try:
                parsed += parse(item, limit)
            except MessageError:
                continue
        COUNTS["parsed"] += bool(parsed)
        feed(book, parsed, rng)


def test_the_fuzz_reached_its_counts() -> None:
    """Runs after the two fuzz tests (file order): they checked 10,000 items each, and some
    documents were valid and some messages parsed (the generators are not all noise)."""
    if COUNTS["documents"] == 0:
        return  # run alone
    print(f"fuzz: {COUNTS}")
    assert COUNTS["documents"] >= DOCUMENT_EXAMPLES * PER_DOCUMENT_EXAMPLE * 0.99, COUNTS
    assert COUNTS["messages"] >= MESSAGE_EXAMPLES * PER_MESSAGE_EXAMPLE * 0.99, COUNTS
    assert COUNTS["valid"] > 1000 and COUNTS["parsed"] > 1000, COUNTS
