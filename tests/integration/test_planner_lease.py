"""The planners' lease and its fence, against the Mongo-wire server (store level, no services)."""

from __future__ import annotations

import asyncio
import time

import pytest

from shared.settings import Settings
from shared.states import JobState, StepState
from shared.store import Store
from shared.store.lease import LeaseLost
from tests.integration import documents
from tests.support.distributed import TEST_PLUGINS

pytestmark = [pytest.mark.mongo]


def _document():  # type: ignore[no-untyped-def]
    from shared.document import catalog_for, check_text

    document = check_text(documents.DIAMOND, "d.yaml", catalog_for(None, [TEST_PLUGINS])).document
    assert document is not None
    return document


def test_one_planner_holds_the_lease_and_another_takes_it_only_once_it_expires(settings: Settings) -> None:
    async def scenario() -> None:
        async with Store(settings) as first, Store(settings) as second:
            now = time.time()
            held = await first.acquire_lease("ns", "p1", 2.0, now)
            assert held is not None and held.token == 1
            assert await second.acquire_lease("ns", "p2", 2.0, now + 1.0) is None  # still held
            assert await first.renew_lease("ns", "p1", held, now + 1.5)
            assert (await first.acquire_lease("ns", "p1", 2.0, now + 1.6)).token == 1  # type: ignore[union-attr]  # re-acquiring keeps the token
            taken = await second.acquire_lease("ns", "p2", 2.0, now + 10.0)  # p1 died: expired
            assert taken is not None and taken.token == 2
            assert not await first.renew_lease("ns", "p1", held, now + 10.1)  # p1 learns it lost it
            info = await second.lease_info("ns")
            assert info is not None and (info.holder, info.token) == ("p2", 2)
            await second.release_lease("ns", "p2", taken)
            assert (await first.acquire_lease("ns", "p1", 2.0, now + 10.2)).token == 3  # type: ignore[union-attr]

    asyncio.run(scenario())


def test_a_planner_that_lost_the_lease_cannot_write_a_job_the_new_holder_wrote(settings: Settings) -> None:
    async def scenario() -> None:
        async with Store(settings) as old, Store(settings) as new:
            await old.ensure_indexes()
            now = time.time()
            old.fence = await old.acquire_lease("ns", "old", 60.0, now)
            assert await old.insert_job("j1", _document(), {"x": 1}, name="d.yaml", fail_fast=True, submitted_at=now)
            assert await old.set_job_state("j1", [JobState.PENDING], JobState.RUNNING)
            await new.db["planner_lease"].update_one({"_id": "ns"}, {"$set": {"until": 0.0}})  # the old holder froze
            new.fence = await new.acquire_lease("ns", "new", 60.0, time.time())
            assert new.fence is not None and new.fence.token == 2
            assert await new.set_job_state("j1", [JobState.RUNNING], JobState.RUNNING)  # restored: the job is fenced
            assert not await old.set_job_state("j1", [JobState.RUNNING], JobState.FAILED), "a stale planner wrote a job"
            assert (await new.job_state("j1"))["state"] == JobState.RUNNING  # type: ignore[index]
            assert await new.set_job_state("j1", [JobState.RUNNING], JobState.SUCCEEDED)

    asyncio.run(scenario())


def test_a_planner_stops_writing_once_its_lease_runs_out_by_its_own_clock(settings: Settings) -> None:
    async def scenario() -> None:
        async with Store(settings) as store:
            store.fence = await store.acquire_lease("ns", "p", 0.4, time.time())
            await store.mark_dispatched("j", ["a"])  # held: allowed
            await asyncio.sleep(0.35)  # within the safety margin before expiry
            with pytest.raises(LeaseLost):
                await store.stop_steps("j", ["a"], StepState.SKIPPED)
            with pytest.raises(LeaseLost):
                await store.record_events([{"type": "x"}])

    asyncio.run(scenario())
