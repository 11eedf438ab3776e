"""Ready steps as the planner sees them: published, not yet started, not finished.

A pure record (no clock, no I/O) that the job book keeps up to date as it decides
(:attr:`shared.planner.book.JobBook.ready`): a step becomes ready when the book publishes it
(a ``Publish`` effect), and stops being ready when a worker reports that it started
(:meth:`ReadyTracker.started`), when its outcome is reported (a notice, also a failed attempt
its task will retry), when the planner ends it unstarted (skipped, cancelled), or when its
job is finished or forgotten. The planner's ``/metrics`` reads it per device
(``theodolite_ready_steps``, ``theodolite_oldest_ready_step_age_seconds``).

A step published again while still ready (an unrouted step once its queue exists) keeps the
time it first became ready: it has waited all along. A re-queued attempt (its lease
expired) or a retry is finished first by the book, so it is ready from its new publish.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReadyStep:
    device: str
    since: float
    """When it became ready (the ``now`` of its first publish)."""


class ReadyTracker:
    """The ready steps of every job of one planner, by job."""

    def __init__(self) -> None:
        self._jobs: dict[str, dict[str, ReadyStep]] = {}

    def __len__(self) -> int:
        return sum(len(steps) for steps in self._jobs.values())

    def published(self, job_id: str, steps: Iterable[str], device: str, now: float) -> None:
        """``steps`` of ``job_id`` were published to ``device``'s queue at ``now``."""
        ready = self._jobs.setdefault(job_id, {})
        for step in steps:
            if step not in ready:
                ready[step] = ReadyStep(device, now)
        if not ready:
            del self._jobs[job_id]

    def started(self, job_id: str, step: str) -> None:
        """A worker reported that it started running ``step``."""
        self._drop(job_id, step)

    def finished(self, job_id: str, step: str) -> None:
        """``step`` (this attempt of it) finished, or was ended without running."""
        self._drop(job_id, step)

    def forget(self, job_id: str) -> None:
        """The job finished or left the planner: none of its steps is ready any more."""
        self._jobs.pop(job_id, None)

    def is_ready(self, job_id: str, step: str) -> bool:
        return step in self._jobs.get(job_id, {})

    def by_device(self, now: float) -> dict[str, tuple[int, float]]:
        """Per device with ready steps: (how many, age in seconds of the oldest at ``now``)."""
        counts: dict[str, int] = {}
        oldest: dict[str, float] = {}
        for steps in self._jobs.values():
            for step in steps.values():
                counts[step.device] = counts.get(step.device, 0) + 1
                oldest[step.device] = min(oldest.get(step.device, step.since), step.since)
        return {device: (count, max(0.0, now - oldest[device])) for device, count in counts.items()}

    def _drop(self, job_id: str, step: str) -> None:
        steps = self._jobs.get(job_id)
        if steps is None:
            return
        steps.pop(step, None)
        if not steps:
            del self._jobs[job_id]
