"""The checked job document: what the planner core and the runners execute.

Built by :func:`shared.document.validation.validate_data` only from a document that passed
validation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from shared.plugin_api import OutputSpec
from shared.retry_policy import RetryOverride, RetryPolicy

SCHEMA_VERSION = 1


class TaskBinding(BaseModel):
    """A task short name bound to the plugin function that implements it."""

    model_config = ConfigDict(frozen=True)

    name: str
    plugin: str
    """Dotted coordinate ``package.module.function``."""
    outputs: OutputSpec = OutputSpec()
    device: str = "cpu"
    retries: int = 0
    timeout_s: float | None = None
    retry: RetryPolicy = RetryPolicy()
    """The task's retry policy (``retries`` is its count, kept for readers of the old field)."""


@dataclass(slots=True)
class Step:
    """One invocation in the graph, with its arguments still holding ``$references``.

    A slotted dataclass rather than a model: documents hold up to 100,000 of them and
    pydantic validates, serialises and exports the schema of dataclass fields just the same.
    """

    name: str
    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    """Every upstream step: referenced ones first, then explicit ``dependencies``; no repeats."""
    retry: RetryOverride | None = None
    """The step's ``x-retry:`` override of its task's retry policy."""


class ArtifactInput(BaseModel):
    name: str
    outputs: OutputSpec


class ArtifactOutput(BaseModel):
    name: str
    contents: str
    task: str
    args: dict[str, Any] = Field(default_factory=dict)


class Parameter(BaseModel):
    name: str
    type: str | None = None
    has_default: bool = False
    default: Any = None


class JobDocument(BaseModel):
    """A validated document, ready to plan; steps keep document order."""

    schema_version: int = SCHEMA_VERSION
    types: dict[str, Any] = Field(default_factory=dict)
    """The document's own type definitions, kept to check run-time parameter values."""
    parameters: dict[str, Parameter] = Field(default_factory=dict)
    tasks: dict[str, TaskBinding] = Field(default_factory=dict)
    steps: dict[str, Step] = Field(default_factory=dict)
    artifact_inputs: dict[str, ArtifactInput] = Field(default_factory=dict)
    artifact_outputs: dict[str, ArtifactOutput] = Field(default_factory=dict)

    def binding(self, step_name: str) -> TaskBinding:
        return self.tasks[self.steps[step_name].task]

    def retry_policy(self, step_name: str) -> RetryPolicy:
        """The step's retry policy: its task's, with the step's ``x-retry`` on top."""
        binding = self.binding(step_name)
        return binding.retry.model_copy(update={"retries": binding.retries}).overridden(self.steps[step_name].retry)
