"""Standby planners: wait for the lease, hold it while acting, give it up on a clean stop.

Several planners may run per namespace (``theodolite up --planners 2``, two replicas in
Kubernetes); the one holding the lease (``shared/store/lease.py``) acts, the others stand by
and poll. The lease lives ``lease_s / 2`` and is renewed every third of that, so a standby
takes over within about ``0.55 × lease_s`` of the holder's death (``THEODOLITE_LEASE_S``).
A holder that cannot renew in time (MongoDB unreachable, or another planner took over) stops
acting before its lease can expire, closes its broker connection (its unacknowledged
messages go back to their queues for the new holder), forgets every job and stands by again.
"""

from __future__ import annotations

import asyncio
import logging
import time

from shared.store import Store
from shared.store.lease import Fence, LeaseLost

log = logging.getLogger("theodolite.planner.lease")


def lease_ttl(lease_s: float) -> float:
    """How long one acquisition or renewal of the planner lease lasts."""
    return max(lease_s / 2, 0.5)


async def await_lease(store: Store, name: str, holder: str, lease_s: float, stop: asyncio.Event) -> Fence | None:
    """Stand by until this planner holds the lease (None if ``stop`` is set first)."""
    ttl, announced, unreachable = lease_ttl(lease_s), None, False
    while not stop.is_set():
        try:
            fence = await store.acquire_lease(name, holder, ttl, time.time())
            unreachable = False
        except Exception as error:  # noqa: BLE001 - MongoDB away: keep standing by
            if not unreachable:
                log.warning("planner %s: cannot reach the lease (%r); retrying until MongoDB answers", holder, error)
            unreachable, fence = True, None
        if fence is not None:
            log.info("planner %s holds the lease of namespace %s (token %d)", holder, name, fence.token)
            return fence
        info = await _info(store, name)
        if info is not None and info != announced:
            log.info("planner %s standing by: %s holds the lease (token %d)", holder, info[0], info[1])
            announced = info
        try:
            await asyncio.wait_for(stop.wait(), timeout=ttl / 10)
        except TimeoutError:
            pass
    return None


async def keep_lease(store: Store, name: str, holder: str, fence: Fence) -> None:
    """Renew the lease until it is lost; then raise :class:`LeaseLost` (never returns otherwise)."""
    while True:
        await asyncio.sleep(fence.lease_s / 3)
        try:
            if not await store.renew_lease(name, holder, fence, time.time()):
                raise LeaseLost(f"planner {holder}: another planner took the lease (token {fence.token} is stale)")
        except LeaseLost:
            raise
        except Exception as error:  # noqa: BLE001 - MongoDB away: retry while the lease lasts
            log.warning("planner %s: renewing the lease failed (%r)", holder, error)
        fence.check()


async def _info(store: Store, name: str) -> tuple[str, int] | None:
    try:
        info = await store.lease_info(name)
    except Exception:  # noqa: BLE001 - only for a log line
        return None
    return None if info is None else (info.holder, info.token)
