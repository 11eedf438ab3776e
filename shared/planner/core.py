"""The planner core: a pure state machine over a job's step DAG, with no I/O.

Both the embedded runner and the distributed planner service drive this class; neither
keeps its own notion of which steps may run. Every method is O(work it reports), so a
100,000-step chain advances in constant time per step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum


class StepState(str, Enum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"


class JobState(str, Enum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_STEP_STATES = frozenset({StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED})


class PlannerCore:
    """Tracks step states and answers "what may run now?".

    ``dependencies`` maps each step to the steps it waits for. With ``fail_fast`` (the
    default, like Argo and Dioptra) a failure releases nothing more: dependents and all
    steps not yet started are skipped, while steps already running may finish. Without
    it, independent branches keep going and only the failed step's descendants are skipped.
    """

    def __init__(self, dependencies: Mapping[str, Sequence[str]], *, fail_fast: bool = True) -> None:
        self.fail_fast = fail_fast
        self._children: dict[str, list[str]] = {name: [] for name in dependencies}
        self._waiting: dict[str, int] = {}
        for name, upstream in dependencies.items():
            self._waiting[name] = len(upstream)
            for parent in upstream:
                self._children[parent].append(name)
        self._state: dict[str, StepState] = dict.fromkeys(dependencies, StepState.PENDING)
        self._unfinished = len(self._state)
        self._failed = False
        self._cancelled = False
        self._started = False

    # queries ----------------------------------------------------------------------------
    def state(self, step: str) -> StepState:
        return self._state[step]

    def states(self) -> Mapping[str, StepState]:
        return self._state

    @property
    def finished(self) -> bool:
        return self._unfinished == 0

    @property
    def job_state(self) -> JobState:
        if not self._started:
            return JobState.PENDING
        if not self.finished:
            return JobState.RUNNING
        if self._cancelled:
            return JobState.CANCELLED
        return JobState.FAILED if self._failed else JobState.SUCCEEDED

    def children(self, step: str) -> Sequence[str]:
        return self._children[step]

    # transitions ------------------------------------------------------------------------
    def start(self) -> list[str]:
        """Begin the job; returns the steps with no dependencies, now queued."""
        self._started = True
        ready = [name for name, waiting in self._waiting.items() if waiting == 0 and self._state[name] is StepState.PENDING]
        for name in ready:
            self._state[name] = StepState.QUEUED
        return ready

    def running(self, step: str) -> bool:
        """Mark a queued step as running; False if it was skipped or cancelled meanwhile."""
        if self._state[step] in (StepState.QUEUED, StepState.RUNNING):
            self._state[step] = StepState.RUNNING
            return True
        return False

    def succeeded(self, step: str) -> list[str]:
        """Record a success; returns the steps that just became ready (now queued)."""
        if self._state[step] in FINISHED_STEP_STATES:
            return []
        self._finish(step, StepState.SUCCEEDED)
        ready: list[str] = []
        release = not (self._failed and self.fail_fast) and not self._cancelled
        for child in self._children[step]:
            self._waiting[child] -= 1
            if release and self._waiting[child] == 0 and self._state[child] is StepState.PENDING:
                self._state[child] = StepState.QUEUED
                ready.append(child)
        return ready

    def failed(self, step: str) -> list[str]:
        """Record a failure; returns the steps skipped because of it."""
        if self._state[step] in FINISHED_STEP_STATES:
            return []
        self._finish(step, StepState.FAILED)
        self._failed = True
        if self.fail_fast:
            return self._skip_all_not_started()
        return self._skip_descendants(step)

    def cancel(self) -> list[str]:
        """Cancel the job: steps not started become cancelled; running ones may finish."""
        self._cancelled = True
        cancelled = [n for n, s in self._state.items() if s in (StepState.PENDING, StepState.QUEUED)]
        for name in cancelled:
            self._finish(name, StepState.CANCELLED)
        return cancelled

    def requeue(self, step: str) -> bool:
        """Put a queued or running step back to queued (lost worker, expired lease)."""
        if self._state[step] in (StepState.QUEUED, StepState.RUNNING):
            self._state[step] = StepState.QUEUED
            return True
        return False

    def restore(self, states: Mapping[str, StepState]) -> list[str]:
        """Rebuild from persisted step states (a restarted planner); returns steps to queue.

        Steps recorded as queued or running are returned too: they are re-published, and
        idempotent result writes make a duplicate delivery harmless.
        """
        self._started = True
        for name, state in states.items():
            if state is StepState.SUCCEEDED:
                self._finish(name, state)
                for child in self._children[name]:
                    self._waiting[child] -= 1
            elif state in (StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED):
                self._finish(name, state)
                self._failed |= state is StepState.FAILED
                self._cancelled |= state is StepState.CANCELLED
        if self._failed and self.fail_fast:
            self._skip_all_not_started()
        ready = [
            name for name, state in self._state.items()
            if state not in FINISHED_STEP_STATES
            and (states.get(name) in (StepState.QUEUED, StepState.RUNNING) or self._waiting[name] == 0)
        ]
        if self._failed and self.fail_fast or self._cancelled:
            ready = [n for n in ready if states.get(n) in (StepState.QUEUED, StepState.RUNNING)]
        for name in ready:
            self._state[name] = StepState.QUEUED
        return ready

    # internals --------------------------------------------------------------------------
    def _finish(self, step: str, state: StepState) -> None:
        if self._state[step] not in FINISHED_STEP_STATES:
            self._unfinished -= 1
        self._state[step] = state

    def _skip_all_not_started(self) -> list[str]:
        skipped = [n for n, s in self._state.items() if s in (StepState.PENDING, StepState.QUEUED)]
        for name in skipped:
            self._finish(name, StepState.SKIPPED)
        return skipped

    def _skip_descendants(self, step: str) -> list[str]:
        skipped: list[str] = []
        stack = list(self._children[step])
        while stack:
            name = stack.pop()
            if self._state[name] in (StepState.PENDING, StepState.QUEUED):
                self._finish(name, StepState.SKIPPED)
                skipped.append(name)
                stack.extend(self._children[name])
        return skipped


def topological_order(dependencies: Mapping[str, Iterable[str]]) -> list[str]:
    """A deterministic order respecting every edge (document order among equals)."""
    core = PlannerCore({k: list(v) for k, v in dependencies.items()})
    order: list[str] = []
    frontier = deque(core.start())
    while frontier:
        step = frontier.popleft()
        order.append(step)
        frontier.extend(core.succeeded(step))
    return order
