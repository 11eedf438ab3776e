"""The planner core: a pure state machine over a job's step DAG, with no I/O.

Both the embedded runner and the distributed planner service drive this class; neither
keeps its own notion of which steps may run. Every method is O(work it reports), so a
100,000-step chain advances in constant time per step.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.states import FINISHED_STEP_STATES, JobState, StepState

__all__ = ["FINISHED_STEP_STATES", "JobState", "PlannerCore", "Restored", "StepState", "topological_order"]


@dataclass
class Restored:
    """What :meth:`PlannerCore.restore` decided for the steps that were not finished."""

    publish: list[str] = field(default_factory=list)
    """Not started and ready (queued or waiting before, or pending with its inputs done): to
    (re)publish."""
    running: list[str] = field(default_factory=list)
    """Stored as running: their workers hold leases and will report."""
    stopped: list[str] = field(default_factory=list)
    """Not started in a stopping job: finished now with :attr:`PlannerCore.stop_state`."""
    skipped: list[str] = field(default_factory=list)
    """Without fail-fast: descendants of stored failures (and skips), skipped now as the live
    run skipped them when the failure came."""


class PlannerCore:
    """Tracks step states and answers "what may run now?".

    ``dependencies`` maps each step to the steps it waits for. With ``fail_fast`` (the
    default, like Argo and Dioptra) a failure stops the job: nothing more is released, steps
    never dispatched are skipped, and dispatched steps (``QUEUED`` or ``RUNNING``) keep their
    outcome: a running one finishes, a queued one is skipped when it would start
    (:meth:`begin`) or reported skipped by whoever holds it (:meth:`stopped`). Without it,
    independent branches keep going and only the failed step's descendants are skipped. A
    cancel stops the job the same way with ``CANCELLED``. The job is finished when every
    step is.
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
    def stop_state(self) -> StepState | None:
        """What a step not yet started becomes now: None while the job runs normally."""
        if self._cancelled:
            return StepState.CANCELLED
        if self._failed and self.fail_fast:
            return StepState.SKIPPED
        return None

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

    def begin(self, step: str) -> StepState:
        """A queued step is about to start: ``RUNNING`` if it may, else the state it is in
        now (in a stopping job a queued step becomes :attr:`stop_state` here)."""
        state = self._state[step]
        if state in (StepState.QUEUED, StepState.RUNNING):
            stop = self.stop_state
            if stop is not None and state is StepState.QUEUED:
                self._finish(step, stop)
                return stop
            self._state[step] = StepState.RUNNING
            return StepState.RUNNING
        return state

    def running(self, step: str) -> bool:
        """Mark a queued step as running (see :meth:`begin`); False if it may not start."""
        return self.begin(step) is StepState.RUNNING

    def succeeded(self, step: str) -> list[str]:
        """Record a success; returns the steps that just became ready (now queued)."""
        if self._state[step] in FINISHED_STEP_STATES:
            return []
        self._finish(step, StepState.SUCCEEDED)
        ready: list[str] = []
        release = self.stop_state is None
        for child in self._children[step]:
            self._waiting[child] -= 1
            if release and self._waiting[child] == 0 and self._state[child] is StepState.PENDING:
                self._state[child] = StepState.QUEUED
                ready.append(child)
        return ready

    def failed(self, step: str) -> list[str]:
        """Record a failure; returns the steps skipped because of it (never dispatched ones:
        see the class docstring for the dispatched)."""
        if self._state[step] in FINISHED_STEP_STATES:
            return []
        self._finish(step, StepState.FAILED)
        self._failed = True
        if self.fail_fast:
            return self._finish_pending(StepState.SKIPPED)
        return self._skip_descendants(step)

    def stopped(self, step: str, state: StepState) -> bool:
        """A dispatched step was not started because its job is stopping, and is recorded
        with ``state`` (skipped or cancelled); False if it had finished already."""
        if self._state[step] in FINISHED_STEP_STATES:
            return False
        self._finish(step, state)
        return True

    def cancel(self) -> list[str]:
        """Cancel the job: steps never dispatched become cancelled (returned); dispatched
        ones are cancelled when they would start, running ones may finish."""
        self._started = True
        self._cancelled = True
        return self._finish_pending(StepState.CANCELLED)

    def requeue(self, step: str) -> bool:
        """Put a queued or running step back to queued (lost worker, expired lease)."""
        if self._state[step] in (StepState.QUEUED, StepState.RUNNING):
            self._state[step] = StepState.QUEUED
            return True
        return False

    def restore(self, states: Mapping[str, StepState], *, cancelled: bool = False) -> Restored:
        """Rebuild from stored step states (a restarted planner; absent steps are pending).

        Gives the decisions the live run would have made: nothing succeeded runs again; a
        stored failure (under fail-fast) or ``cancelled`` stops the job, so steps not started
        are finished with :attr:`stop_state` while running ones keep running; otherwise steps
        not started whose inputs are done are returned to publish.
        """
        self._started = True
        self._cancelled |= cancelled
        for name, state in states.items():
            state = state.core
            if state is StepState.SUCCEEDED:
                self._finish(name, state)
                for child in self._children[name]:
                    self._waiting[child] -= 1
            elif state in FINISHED_STEP_STATES:
                self._finish(name, state)
                self._failed |= state is StepState.FAILED
                self._cancelled |= state is StepState.CANCELLED
            elif state is StepState.RUNNING:
                self._state[name] = StepState.RUNNING
        restored = Restored(running=[n for n, s in self._state.items() if s is StepState.RUNNING])
        stop = self.stop_state
        if stop is None:
            for name, state in list(self._state.items()):
                if state in (StepState.FAILED, StepState.SKIPPED):
                    restored.skipped += self._skip_descendants(name)
        for name, state in self._state.items():
            if state is not StepState.PENDING:
                continue
            stored = states.get(name, StepState.PENDING).core
            if stop is not None:
                restored.stopped.append(name)
            elif stored is StepState.QUEUED or self._waiting[name] == 0:
                restored.publish.append(name)
        for name in restored.stopped:
            self._finish(name, stop)  # type: ignore[arg-type]
        for name in restored.publish:
            self._state[name] = StepState.QUEUED
        return restored

    # internals --------------------------------------------------------------------------
    def _finish(self, step: str, state: StepState) -> None:
        if self._state[step] not in FINISHED_STEP_STATES:
            self._unfinished -= 1
        self._state[step] = state

    def _finish_pending(self, state: StepState) -> list[str]:
        names = [n for n, s in self._state.items() if s is StepState.PENDING]
        for name in names:
            self._finish(name, state)
        return names

    def _skip_descendants(self, step: str) -> list[str]:
        skipped: list[str] = []
        stack = list(self._children[step])
        while stack:
            name = stack.pop()
            if self._state[name] is StepState.PENDING:
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
