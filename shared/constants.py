"""Exchange, queue and routing-key names; every name is prefixed with the namespace."""

from __future__ import annotations

from dataclasses import dataclass

JOB_SUBMIT_KEY = "job.submit"
JOB_CANCEL_KEY = "job.cancel"
JOB_RESUME_KEY = "job.resume"
NOTICE_KEY = "step.done"
PROGRESS_KEY = "step.progress"
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


# Routing keys of the events exchange: ``<scope>.<id>.<type>``, where the event type is
# always two words (``step.failed``, ``worker.heartbeat``). So ``job.<job id>.#`` is one job,
# ``*.*.step.failed`` one kind everywhere, ``worker.gpu.#`` one device's workers, ``#`` all
# (docs/events.md).


def key_word(value: str) -> str:
    """``value`` as one word of a routing key (dots would split it; device labels may have them)."""
    return value.replace(".", "_") or "_"


def job_event_key(job_id: str, event_type: str) -> str:
    """Every event of a job: ``job.<job id>.job.running``, ``job.<job id>.step.succeeded``, ..."""
    return f"job.{key_word(job_id)}.{event_type}"


def worker_event_key(device: str, event_type: str) -> str:
    """A worker's presence: ``worker.<device>.worker.heartbeat``."""
    return f"worker.{key_word(device)}.{event_type}"


def planner_event_key(planner_id: str, event_type: str) -> str:
    """Events of the planner about no job: ``planner.<planner id>.message.rejected``."""
    return f"planner.{key_word(planner_id)}.{event_type}"


HISTORY_KEYS = ("job.#", "planner.#", "worker.*.worker.online", "worker.*.worker.offline")
"""What the events history stream keeps: everything but heartbeats (liveness, stale in seconds)."""


# MongoDB collections
JOBS = "jobs"
STEPS = "steps"
EVENTS = "events"
ARTIFACT_INPUTS = "artifact_inputs"
DISPATCHED = "dispatched"
GRIDFS_BUCKET = "values"
