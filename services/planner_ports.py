"""What the planner shell needs of MongoDB and RabbitMQ (``Store`` and ``Broker`` provide it).

Typing the effect runner against these Protocols keeps the shell honest about the calls it
makes, and lets tests carry effects out against in-memory fakes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from shared.constants import Names
from shared.states import JobState, StepState
from shared.store import StepRecord
from shared.transport import Outgoing


class PlannerStore(Protocol):
    async def set_job_state(self, job_id: str, expected: Sequence[JobState], state: JobState, **fields: Any) -> bool: ...

    async def set_job_control(self, job_id: str, *, claim: bool, stop: StepState | None, grace_s: float | None = None) -> None: ...

    async def insert_rejected_job(self, job_id: str, name: str, problems: Sequence[str], *, at: float) -> None: ...

    async def record_events(self, events: Sequence[Mapping[str, Any]]) -> None: ...

    async def reserve_event_seq(self, job_id: str, upto: int) -> bool: ...

    async def next_event_seq(self, job_id: str) -> int | None: ...

    async def mark_dispatched(self, job_id: str, names: Sequence[str]) -> None: ...

    async def set_waiting(self, job_id: str, names: Sequence[str], waiting: bool) -> None: ...

    async def stop_steps(self, job_id: str, names: Sequence[str], state: StepState) -> None: ...

    async def fail_step(self, job_id: str, step: str, attempt: int, error: Mapping[str, Any], *,
                        publisher: str = "") -> StepRecord | None: ...

    async def requeue(self, job_id: str, step: str, attempt: int, *, reason: str) -> int | None: ...


class PlannerBroker(Protocol):
    @property
    def names(self) -> Names: ...

    async def publish(self, item: Outgoing) -> bool: ...

    async def publish_many(self, items: Sequence[Outgoing]) -> list[bool]: ...
