"""Which steps a resumed job runs again, and whether it may be resumed (pure).

Used by ``theodolite resume`` (to answer at once, with the problem) and by the planner (which
decides again: it is the one that writes). A job may be resumed once it has ended failed or
cancelled, or succeeded when ``--from`` names steps to run again; the steps that run again are
those that did not succeed (failed, skipped, cancelled, never run) plus each ``--from`` step
and its descendants. Parameters given again must be parameters of the document.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from shared.states import JobState, StepState


@dataclass(frozen=True)
class ResumePlan:
    rerun: list[str] = field(default_factory=list)
    """In document order."""
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def plan_resume(job_state: JobState, dependencies: Mapping[str, Sequence[str]], stored: Mapping[str, StepState],
                from_steps: Iterable[str] = (), parameters: Iterable[str] = (), known_parameters: Iterable[str] = ()) -> ResumePlan:
    """The steps to run again for a resume of a job in ``job_state`` whose steps (and their
    ``dependencies``) are stored with the states ``stored`` (absent: never run)."""
    wanted = list(dict.fromkeys(from_steps))
    problems: list[str] = []
    if not job_state.finished:
        problems.append(f"the job is {job_state.value}: only a job that has ended can be resumed")
    elif job_state is JobState.REJECTED:
        problems.append("the job was rejected: fix its document and submit it again")
    elif job_state is JobState.SUCCEEDED and not wanted:
        problems.append("the job succeeded: name steps to run again with --from")
    unknown = [name for name in wanted if name not in dependencies]
    if unknown:
        problems.append(f"no step named {', '.join(map(repr, unknown))} in the job")
    known = set(known_parameters)
    stray = [name for name in parameters if name not in known]
    if stray:
        problems.append(f"no parameter named {', '.join(map(repr, stray))} in the job's document"
                        + (f" (it has {', '.join(sorted(known))})" if known else ""))
    if problems:
        return ResumePlan(problems=problems)
    again = {name for name in dependencies if stored.get(name) is not StepState.SUCCEEDED}
    again |= descendants(dependencies, wanted) | set(wanted)
    return ResumePlan(rerun=[name for name in dependencies if name in again])


def descendants(dependencies: Mapping[str, Sequence[str]], roots: Iterable[str]) -> set[str]:
    children: dict[str, list[str]] = {name: [] for name in dependencies}
    for name, parents in dependencies.items():
        for parent in parents:
            children.setdefault(parent, []).append(name)
    found: set[str] = set()
    todo = list(roots)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found
