"""The planners' lease: one planner per namespace acts, the others wait, fenced by a token.

One document in ``planner_lease`` (``_id`` = the namespace): ``holder``, ``token`` and
``until``. A planner acquires the lease when it is free or expired, which increments the
token (the *fencing token*); the holder renews it every ``lease_s / 3``. The store of the
planner holding it is then *fenced* (:class:`Fence`):

* every write that decides a job's fate (the job's state, its control word, a new job) carries
  the token: it sets ``fence`` on the job document and matches only a job whose ``fence`` is
  not newer, so once a newer holder has touched a job, an older holder cannot write it;
* every other planner write (step marks, dead-lettered steps, re-queues, events) first checks
  that the lease is still held by its own clock, with a margin; a planner that cannot renew
  in time stops acting before its lease can expire and goes back to standby.

Written without ``$or`` (nx-27017 answers it with a full scan) and without transactions (a
single-node MongoDB or nx-27017 may lack them): standard commands only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared.distributed_errors import StoreError

LEASES = "planner_lease"
SAFETY_MARGIN = 0.25
"""Fraction of the lease a holder gives up early: it stops acting this long before expiry."""


class LeaseLost(StoreError):
    """This planner no longer holds the lease: it must not write."""


@dataclass
class Fence:
    """The lease as its holder sees it: the token its writes carry, and until when it may act."""

    token: int
    until: float
    lease_s: float

    def check(self, now: float | None = None) -> None:
        """Raise :class:`LeaseLost` unless the lease is safely held at ``now``."""
        if (now if now is not None else time.time()) >= self.until - self.lease_s * SAFETY_MARGIN:
            raise LeaseLost(f"the planner lease (token {self.token}) was not renewed in time")


@dataclass(frozen=True)
class LeaseInfo:
    holder: str
    token: int
    until: float


class LeaseMixin:
    """Lease operations of :class:`~shared.store.Store`."""

    @property
    def db(self) -> Any:
        raise NotImplementedError

    async def acquire_lease(self, name: str, holder: str, lease_s: float, now: float) -> Fence | None:
        """Take the lease if it is free, expired or already ours; None when another holds it."""
        until = now + lease_s
        mine = await self.db[LEASES].find_one_and_update(
            {"_id": name, "holder": holder}, {"$set": {"until": until}}, return_document=ReturnDocument.AFTER)
        if mine is None:
            mine = await self.db[LEASES].find_one_and_update(
                {"_id": name, "until": {"$lt": now}}, {"$set": {"holder": holder, "until": until}, "$inc": {"token": 1}},
                return_document=ReturnDocument.AFTER)
        if mine is None:
            try:
                await self.db[LEASES].insert_one({"_id": name, "holder": holder, "token": 1, "until": until})
            except DuplicateKeyError:
                return None
            return Fence(1, until, lease_s)
        return Fence(int(mine["token"]), until, lease_s)

    async def renew_lease(self, name: str, holder: str, fence: Fence, now: float) -> bool:
        """Extend our lease; False when it is no longer ours (taken over)."""
        until = now + fence.lease_s
        result = await self.db[LEASES].update_one({"_id": name, "holder": holder, "token": fence.token}, {"$set": {"until": until}})
        if result.matched_count != 1:
            return False
        fence.until = until
        return True

    async def release_lease(self, name: str, holder: str, fence: Fence) -> None:
        """Give the lease up at once (a clean stop): a standby takes over without waiting."""
        await self.db[LEASES].update_one({"_id": name, "holder": holder, "token": fence.token}, {"$set": {"until": 0.0}})

    async def lease_info(self, name: str) -> LeaseInfo | None:
        doc = await self.db[LEASES].find_one({"_id": name})
        return None if doc is None else LeaseInfo(str(doc["holder"]), int(doc["token"]), float(doc["until"]))
