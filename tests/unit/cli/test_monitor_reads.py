"""`theodolite monitor`'s I/O edges without I/O: decoding the events of a message, where the
history stream is replayed from, and whether a terminal event was the job's last end."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from services.monitor_feed import decode
from services.monitor_reads import REPLAY_MARGIN_S, Beginning, is_last_end, stream_start
from shared.events import Event, EventBatch, WorkerEvent
from shared.store.queries import JobQuery

T = 1_700_000_000.0


def test_decode_reads_every_kind_and_skips_what_is_not_an_event() -> None:
    one = Event(type="step.queued", job_id="j", seq=2, step="a", state="queued", at=T)
    batch = EventBatch(job_id="j", events=[one, one.model_copy(update={"seq": 3, "step": "b"})])
    beat = WorkerEvent(type="worker.heartbeat", worker_id="w", device="cpu", seq=2, slots=1, busy=0, held=0, load=0.0,
                       completed=0, host="h", pid=1, heartbeat_s=5.0, at=T)
    assert decode(one.model_dump_json().encode(), "event") == [one]
    assert [e.seq for e in decode(batch.model_dump_json().encode(), "event.batch")] == [2, 3]  # type: ignore[union-attr]
    assert decode(beat.model_dump_json().encode(), "worker.event") == [beat]
    assert decode(b"not json", "event") == []
    assert decode(one.model_dump_json().replace('"schema_version":1', '"schema_version":2').encode(), "event") == []


class FakeStore:
    def __init__(self, jobs: dict[str, dict[str, Any]]) -> None:
        self.jobs = jobs
        self.queries: list[JobQuery] = []

    async def job_state(self, job_id: str) -> dict[str, Any] | None:
        return self.jobs.get(job_id)

    async def find_jobs(self, query: JobQuery) -> list[dict[str, Any]]:
        self.queries.append(query)
        return [doc for doc in self.jobs.values() if doc["state"] in query.states]


def start(store: FakeStore, job_id: str | None, replay: bool) -> Beginning:
    return asyncio.run(stream_start(store, job_id, replay, T))  # type: ignore[arg-type]


def moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def test_where_the_history_stream_is_read_from_and_which_jobs_are_read_at_once() -> None:
    store = FakeStore({"old": {"_id": "old", "state": "succeeded", "created_at": T - 8 * 86400, "finished_at": T - 8 * 86400 + 5},
                       "done": {"_id": "done", "state": "failed", "created_at": T - 100, "finished_at": T - 50},
                       "run1": {"_id": "run1", "state": "running", "created_at": T - 30},
                       "run2": {"_id": "run2", "state": "pending", "created_at": T - 500}})
    assert start(store, "done", replay=False) == Beginning("next", False, ("done",))
    assert start(store, "done", replay=True) == Beginning(moment(T - 100 - REPLAY_MARGIN_S), True, ("done",))
    assert start(store, "new", replay=True) == Beginning(moment(T - REPLAY_MARGIN_S), True, ("new",)), \
        "not recorded yet: from just before now"
    assert start(store, "old", replay=True) == Beginning("next", False, ("old",)), "gone from the 7-day stream: read from MongoDB"
    assert start(store, None, replay=True) == Beginning(moment(T - 500 - REPLAY_MARGIN_S), True, ("run2", "run1")), \
        "from the oldest job still running"
    assert set(store.queries[0].states) == {"pending", "running"}
    assert start(store, None, replay=False) == Beginning("next", False, ("run2", "run1")), "jobs still running are read"
    assert start(FakeStore({}), None, replay=True) == Beginning("next", False, ())


def test_a_terminal_event_is_the_last_end_unless_the_job_ran_again() -> None:
    assert is_last_end({"state": "succeeded", "finished_at": T}, T)
    assert is_last_end({"state": "failed", "finished_at": T + 0.001}, T)
    assert not is_last_end({"state": "running", "finished_at": None}, T), "resumed: runs again"
    assert not is_last_end({"state": "succeeded", "finished_at": T + 30}, T), "resumed and ended again since"
    assert is_last_end(None, T)
