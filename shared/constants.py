"""Exchange, queue and routing-key names; every name is prefixed with the namespace."""

from __future__ import annotations

from dataclasses import dataclass

JOB_SUBMIT_KEY = "job.submit"
JOB_CANCEL_KEY = "job.cancel"
NOTICE_KEY = "step.done"
HEADER_KIND = "x-theodolite-kind"
CONTENT_TYPE = "application/json"


@dataclass(frozen=True)
class Names:
    """Every broker object of one namespace."""

    namespace: str

    def _n(self, suffix: str) -> str:
        return f"{self.namespace}.{suffix}"

    @property
    def jobs_exchange(self) -> str:
        return self._n("jobs")

    @property
    def jobs_queue(self) -> str:
        return self._n("jobs")

    @property
    def steps_exchange(self) -> str:
        return self._n("steps")

    def steps_queue(self, device: str) -> str:
        return self._n(f"steps.{device}")

    @property
    def notices_exchange(self) -> str:
        return self._n("notices")

    @property
    def notices_queue(self) -> str:
        return self._n("completions")

    @property
    def events_exchange(self) -> str:
        return self._n("events")

    @property
    def events_stream(self) -> str:
        return self._n("events.history")

    @property
    def control_exchange(self) -> str:
        """Fanout: :class:`~shared.messages.JobControl` to every worker (one exclusive queue each)."""
        return self._n("control")

    @property
    def dead_exchange(self) -> str:
        return self._n("dead")

    @property
    def dead_queue(self) -> str:
        return self._n("dead")


def job_event_key(job_id: str, state: str) -> str:
    return f"job.{job_id}.{state}"


def step_event_key(job_id: str) -> str:
    return f"steps.{job_id}"


# MongoDB collections
JOBS = "jobs"
STEPS = "steps"
EVENTS = "events"
ARTIFACT_INPUTS = "artifact_inputs"
DISPATCHED = "dispatched"
GRIDFS_BUCKET = "values"
