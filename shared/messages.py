"""The messages of the distributed mode: pydantic models with a ``schema_version``.

Bodies are JSON (``application/json``); their JSON Schemas are exported by
``theodolite schema`` so other systems can publish jobs without our Python code. Every
incoming body goes through :func:`parse`, which enforces the size limit and the schema.
"""

from __future__ import annotations

import time
import uuid
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.distributed_errors import MessageError
from shared.states import ErrorKind, StepState

SCHEMA_VERSION: Literal[1] = 1
_NAME = r"^[A-Za-z0-9_.:-]{1,200}$"
JobId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,100}$")]
StepName = Annotated[str, Field(min_length=1, max_length=1000)]


def new_job_id() -> str:
    return uuid.uuid4().hex


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION


class JobSubmission(_Message):
    """A job for the planner: the document's text, its parameter values and the job id."""

    kind: Literal["job.submit"] = "job.submit"
    job_id: JobId = Field(default_factory=new_job_id)
    document: str = Field(description="The job document's YAML/JSON text, validated again by the planner.")
    document_name: str = Field(default="job.yaml", max_length=500, description="Shown in FILE:LINE: problems.")
    parameters: dict[str, Any] = Field(default_factory=dict)
    artifacts: list[str] = Field(default_factory=list, description=(
        "Artifact inputs the submitter stored in MongoDB beforehand: collection artifact_inputs, "
        "document _id = job_id, field values.<name> (codec trees). Every artifact input the document "
        "declares must be listed."))
    fail_fast: bool = True
    submitted_at: float = Field(default_factory=time.time)


class JobCancel(_Message):
    """Cancel a job: steps not started are cancelled; running steps may finish."""

    kind: Literal["job.cancel"] = "job.cancel"
    job_id: JobId


JobMessage = Annotated[JobSubmission | JobCancel, Field(discriminator="kind")]


class StepDispatch(_Message):
    """A ready step for a worker of ``device``; inputs are read from MongoDB."""

    kind: Literal["step.dispatch"] = "step.dispatch"
    job_id: JobId
    step: StepName
    attempt: int = Field(ge=1, description="Dispatch number; a late message of an older attempt is dropped.")
    device: str = Field(pattern=_NAME)
    claim: bool = Field(default=False, description=(
        "Claim the step in MongoDB before running it (re-published by a restarted planner: "
        "another copy of this message may exist, and only the claim's winner runs)."))
    publisher: str = Field(default="", max_length=200, description=(
        "Who published this copy (the planner's id). A redelivered message may take over a "
        "running claim only if that claim was made through a copy from the same publisher: "
        "a restarted planner's copy and its predecessor's never take over each other's claims."))


class StepRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    step: StepName
    attempt: int = Field(ge=1)


class StepBatch(_Message):
    """Several ready steps of one job for one worker: how the planner sends a wide fan-out
    (one message and one acknowledgement per batch instead of per step)."""

    kind: Literal["step.batch"] = "step.batch"
    job_id: JobId
    device: str = Field(pattern=_NAME)
    steps: list[StepRef] = Field(min_length=1, max_length=1000)
    claim: bool = False
    publisher: str = Field(default="", max_length=200)

    def dispatches(self) -> list[StepDispatch]:
        return [StepDispatch(job_id=self.job_id, step=s.step, attempt=s.attempt, device=self.device, claim=self.claim,
                             publisher=self.publisher) for s in self.steps]


DispatchMessage = Annotated[StepDispatch | StepBatch, Field(discriminator="kind")]


class StepErrorInfo(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str
    message: str
    kind: ErrorKind = ErrorKind.TASK


class StepNotice(_Message):
    """A worker's report of a step: its outcome is already durable in MongoDB.

    ``skipped`` and ``cancelled`` report a dispatched step that its worker did not start
    because the job was stopping (see :class:`JobControl`)."""

    kind: Literal["step.done"] = "step.done"
    job_id: JobId
    step: StepName
    attempt: int = Field(ge=1)
    outcome: Literal[StepState.SUCCEEDED, StepState.FAILED, StepState.SKIPPED, StepState.CANCELLED]
    worker_id: str
    error: StepErrorInfo | None = None
    duration_s: float = 0.0
    retry_at: float | None = Field(default=None, description=(
        "With outcome failed: the attempt failed but the task may retry; MongoDB holds the step "
        "queued as the next attempt, to be dispatched at this time (seconds since the epoch)."))


class NoticeBatch(_Message):
    """The completion notices of steps a worker finished together."""

    kind: Literal["step.done.batch"] = "step.done.batch"
    notices: list[StepNotice] = Field(min_length=1, max_length=10000)


NoticeMessage = Annotated[StepNotice | NoticeBatch, Field(discriminator="kind")]


class JobControl(_Message):
    """The planner's word to every worker about one job (the control fanout exchange).

    ``claim``: the job was restored by a restarted planner, so copies of its step messages
    may exist; claim every step of it in MongoDB before running it (and claim the ones
    running now). ``stop``: the job is stopping (a fail-fast failure, or a cancel); a step of
    it that has not started is not run but recorded with this state and reported. The job's
    MongoDB record carries the same flags for workers that were not listening."""

    kind: Literal["job.control"] = "job.control"
    job_id: JobId
    claim: bool = False
    stop: Literal[StepState.SKIPPED, StepState.CANCELLED] | None = None


class Event(_Message):
    """A state change of a job or a step, for monitors (events exchange and stream)."""

    kind: Literal["event"] = "event"
    type: str = Field(description="job.<state> (job.rejected: the submission was invalid), step.<state>, message.rejected, ...")
    job_id: str | None = None
    step: str | None = None
    state: str | None = None
    attempt: int | None = None
    worker_id: str | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    at: float = Field(default_factory=time.time)


class EventBatch(_Message):
    """Many step events of one job in one message (a 5,000-step fan-out is 5,000 events)."""

    kind: Literal["event.batch"] = "event.batch"
    job_id: str | None = None
    events: list[Event]


MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "job.submit": JobSubmission,
    "job.cancel": JobCancel,
    "step.dispatch": StepDispatch,
    "step.batch": StepBatch,
    "step.done": StepNotice,
    "step.done.batch": NoticeBatch,
    "job.control": JobControl,
    "event": Event,
    "event.batch": EventBatch,
}

M = TypeVar("M", bound=BaseModel)
_job_adapter: TypeAdapter[JobSubmission | JobCancel] = TypeAdapter(JobMessage)
_dispatch_adapter: TypeAdapter[StepDispatch | StepBatch] = TypeAdapter(DispatchMessage)
_notice_adapter: TypeAdapter[StepNotice | NoticeBatch] = TypeAdapter(NoticeMessage)


def encode(message: BaseModel) -> bytes:
    return message.model_dump_json().encode("utf-8")


def _check_size(body: bytes, max_bytes: int) -> None:
    if len(body) > max_bytes:
        raise MessageError(f"message of {len(body)} bytes exceeds the limit of {max_bytes} bytes")


def parse(model: type[M], body: bytes, max_bytes: int) -> M:
    """Decode and validate one body; raises MessageError with a readable reason."""
    _check_size(body, max_bytes)
    try:
        return model.model_validate_json(body)
    except ValidationError as error:
        raise MessageError(_describe(error), kind=model.__name__) from error


def parse_job_message(body: bytes, max_bytes: int) -> JobSubmission | JobCancel:
    _check_size(body, max_bytes)
    try:
        return _job_adapter.validate_json(body)
    except ValidationError as error:
        raise MessageError(_describe(error), kind="job") from error


def parse_dispatches(body: bytes, max_bytes: int) -> list[StepDispatch]:
    """A step message (one step or a batch) as its steps."""
    _check_size(body, max_bytes)
    try:
        message = _dispatch_adapter.validate_json(body)
    except ValidationError as error:
        raise MessageError(_describe(error), kind="step") from error
    return [message] if isinstance(message, StepDispatch) else message.dispatches()


def parse_notices(body: bytes, max_bytes: int) -> list[StepNotice]:
    """A completion message (one notice or a batch) as its notices."""
    _check_size(body, max_bytes)
    try:
        message = _notice_adapter.validate_json(body)
    except ValidationError as error:
        raise MessageError(_describe(error), kind="notice") from error
    return [message] if isinstance(message, StepNotice) else list(message.notices)


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "invalid message: " + "; ".join(parts)


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every message, by kind."""
    schemas = {kind: model.model_json_schema() for kind, model in MESSAGE_MODELS.items()}
    for kind, schema in schemas.items():
        schema.setdefault("$id", f"theodolite/{kind}/v{SCHEMA_VERSION}")
    return schemas
