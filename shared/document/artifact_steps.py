"""Artifact outputs as steps of their own, for runners that schedule steps (the cluster).

Dioptra serialises ``artifact_outputs`` after the whole graph has run. On a cluster that
work has to run on a worker too (it calls a plugin task), so each artifact output becomes a
step ``artifact.NAME`` — a name no document step can have, since step names have no dots —
that depends on every step of the graph, calls the serialiser with the resolved contents and
the ``args``, and keeps the serialised payload as its output ``artifact``. Clients take these
steps out of the result again and list the artifacts instead.
"""

from __future__ import annotations

from shared.document.model import JobDocument, Step, TaskBinding
from shared.plugin_api import OutputSpec

ARTIFACT_STEP_PREFIX = "artifact."
ARTIFACT_OUTPUT = "artifact"


def artifact_step_name(artifact: str) -> str:
    return ARTIFACT_STEP_PREFIX + artifact


def is_artifact_step(step: str) -> bool:
    return step.startswith(ARTIFACT_STEP_PREFIX)


def with_artifact_steps(document: JobDocument) -> JobDocument:
    if not document.artifact_outputs:
        return document
    graph_steps = list(document.steps)
    steps = dict(document.steps)
    tasks = dict(document.tasks)
    for name, artifact in document.artifact_outputs.items():
        step_name = artifact_step_name(name)
        tasks[step_name] = TaskBinding(name=step_name, plugin=artifact.task,
                                       outputs=OutputSpec(names=(ARTIFACT_OUTPUT,), types=("any",)))
        steps[step_name] = Step(step_name, step_name, [artifact.contents], dict(artifact.args), list(graph_steps))
    return document.model_copy(update={"steps": steps, "tasks": tasks})
