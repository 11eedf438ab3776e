"""A finished job as people and scripts see it (the ``run --json`` / ``submit --json`` object)."""

from __future__ import annotations

import base64
import math
from typing import Any

from pydantic import BaseModel, Field

from shared.task_context import Metric


class StepError(BaseModel):
    step: str
    type: str
    message: str


class StepReport(BaseModel):
    """One step's result. ``status`` and ``outputs`` are the JSON contract; the rest is for
    the tables people read (left out of ``--json``)."""

    status: str
    outputs: dict[str, Any] = Field(default_factory=dict)
    task: str | None = Field(default=None, exclude=True)
    duration_s: float | None = Field(default=None, exclude=True)
    traceback: str | None = Field(default=None, exclude=True)
    attempts: int | None = Field(default=None, exclude=True)
    """Attempts the step ran (more than one: it was retried)."""
    logs: dict[int, str] = Field(default_factory=dict, exclude=True)
    """What each attempt printed and logged (capped), by attempt number."""
    logged_artifacts: dict[str, Any] = Field(default_factory=dict, exclude=True)


class JobResult(BaseModel):
    status: str
    steps: dict[str, StepReport] = Field(default_factory=dict)
    error: StepError | None = None
    artifacts: dict[str, str] | None = None
    """Artifact output name -> the file it was written to."""
    artifact_payloads: dict[str, Any] = Field(default_factory=dict, exclude=True)
    """Serialised artifacts not yet written to files (a cluster's result, before the client saves them)."""
    metrics: dict[str, list[Metric]] = Field(default_factory=dict)
    """Step -> what its task logged with ``context.log_metric``, in order."""
    seed: int | None = None
    """The job's seed (each step's context seed derives from it and the step name)."""

    def to_json_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "status": self.status,
            "steps": {
                name: {"status": report.status, "outputs": {k: to_jsonable(v) for k, v in report.outputs.items()}}
                for name, report in self.steps.items()
            },
            "error": self.error.model_dump() if self.error else None,
        }
        data["metrics"] = {step: [{"name": m.name, "value": to_jsonable(m.value), "step": m.step, "at": m.at} for m in points]
                           for step, points in self.metrics.items()}
        if self.seed is not None:
            data["seed"] = self.seed
        if self.artifacts:
            data["artifacts"] = self.artifacts
        return data


def to_jsonable(value: Any) -> Any:
    """Plain JSON for any step output: arrays become nested lists, tuples lists, bytes base64."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return {"$base64": base64.b64encode(bytes(value)).decode("ascii")}
    tolist = getattr(value, "tolist", None)
    if callable(tolist):  # numpy arrays and scalars, JAX arrays
        return to_jsonable(tolist())
    item = getattr(value, "__array__", None)
    if callable(item):
        return to_jsonable(item().tolist())
    return repr(value)
