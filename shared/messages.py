"""The messages of the distributed mode: pydantic models with a ``schema_version``.

Bodies are JSON (``application/json``); their JSON Schemas are exported by
``theodolite schema`` so other systems can publish jobs without our Python code. Every
incoming body goes through :func:`parse`, which enforces the size limit and the schema.
"""

from __future__ import annotations

import secrets
import time
import uuid
from enum import StrEnum
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from shared.distributed_errors import MessageError
from shared.events import Event, EventBatch, WorkerEvent
from shared.labels import Labels
from shared.states import ErrorKind, StepState
from shared.task_context import Metric

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
    labels: Labels = Field(default_factory=dict)
    seed: int = Field(default_factory=lambda: secrets.randbits(63), ge=0, lt=2**63, description=(
        "The job's seed: each step's task context gets a seed derived from it and the step name."))


DEFAULT_CANCEL_GRACE_S = 10.0


class JobCancel(_Message):
    """Cancel a job: steps not started are cancelled; running steps see ``context.cancelled()``
    at once and are stopped after ``grace_s`` (a task that returns first keeps its result)."""

    kind: Literal["job.cancel"] = "job.cancel"
    job_id: JobId
    grace_s: float = Field(default=DEFAULT_CANCEL_GRACE_S, ge=0, le=86_400)


class JobResume(_Message):
    """Run a failed or cancelled job again as its next run: its succeeded steps keep their
    outputs; failed, skipped and cancelled steps (and ``from_steps`` with their descendants,
    even if they succeeded) run again, with ``parameters`` replacing the stored values for
    them."""

    kind: Literal["job.resume"] = "job.resume"
    job_id: JobId
    from_steps: list[StepName] = Field(default_factory=list, max_length=10_000)
    parameters: dict[str, Any] = Field(default_factory=dict)


JobMessage = Annotated[JobSubmission | JobCancel | JobResume, Field(discriminator="kind")]


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


class Progress(StrEnum):
    RUNNING = "running"
    """The worker started running the attempt (``step.running``)."""
    TIMEOUT_WARNING = "timeout_warning"
    """The attempt has used 80 % of its timeout (``step.timeout_warning``)."""
    METRIC = "metric"
    """The task logged a metric through its context (``step.metric``)."""


class StepProgress(_Message):
    """A worker's word about a running step attempt, for the planner, which numbers it into
    the job's events. Nothing durable stands behind it: a lost one is a missing event."""

    kind: Literal["step.progress"] = "step.progress"
    job_id: JobId
    step: StepName
    attempt: int = Field(ge=1)
    worker_id: str
    progress: Progress
    elapsed_s: float | None = Field(default=None, ge=0, description="With timeout_warning: seconds the attempt has run.")
    timeout_s: float | None = Field(default=None, gt=0, description="With timeout_warning: the step's timeout.")
    metric: Metric | None = Field(default=None, description="With metric: what the task logged.")
    at: float = Field(default_factory=time.time)


class ProgressBatch(_Message):
    """The progress a worker gathered since its last flush (every 50 ms: a fan-out starts
    thousands of steps at once)."""

    kind: Literal["step.progress.batch"] = "step.progress.batch"
    progress: list[StepProgress] = Field(min_length=1, max_length=10000)


class NoticeBatch(_Message):
    """The completion notices of steps a worker finished together, after the progress it
    had not sent yet (so that a fast step's ``running`` reaches the planner before its end)."""

    kind: Literal["step.done.batch"] = "step.done.batch"
    notices: list[StepNotice] = Field(min_length=1, max_length=10000)
    progress: list[StepProgress] = Field(default_factory=list, max_length=10000, description=(
        "Progress reported before these notices, in order (applied first)."))


NoticeMessage = Annotated[StepNotice | NoticeBatch | StepProgress | ProgressBatch, Field(discriminator="kind")]


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
    grace_s: float | None = Field(default=None, ge=0, le=86_400, description=(
        "With stop cancelled: running steps are stopped this many seconds after the word."))


MESSAGE_MODELS: dict[str, type[BaseModel]] = {
    "job.submit": JobSubmission,
    "job.cancel": JobCancel,
    "job.resume": JobResume,
    "step.dispatch": StepDispatch,
    "step.batch": StepBatch,
    "step.done": StepNotice,
    "step.done.batch": NoticeBatch,
    "step.progress": StepProgress,
    "step.progress.batch": ProgressBatch,
    "job.control": JobControl,
    "event": Event,
    "event.batch": EventBatch,
    "worker.event": WorkerEvent,
}
EVENT_MODELS: tuple[type[BaseModel], ...] = (Event, EventBatch, WorkerEvent)
"""Published for readers we do not know: their schemas are exported as published
(serialization mode: every field present, see :mod:`shared.events`)."""

M = TypeVar("M", bound=BaseModel)
_job_adapter: TypeAdapter[JobSubmission | JobCancel | JobResume] = TypeAdapter(JobMessage)
_dispatch_adapter: TypeAdapter[StepDispatch | StepBatch] = TypeAdapter(DispatchMessage)
_notice_adapter: TypeAdapter[StepNotice | NoticeBatch | StepProgress | ProgressBatch] = TypeAdapter(NoticeMessage)


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


def parse_job_message(body: bytes, max_bytes: int) -> JobSubmission | JobCancel | JobResume:
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


def parse_reports(body: bytes, max_bytes: int) -> tuple[list[StepNotice], list[StepProgress]]:
    """A worker's message to the planner (notices, progress, or both) as its notices and
    its progress (the progress came first)."""
    _check_size(body, max_bytes)
    try:
        message = _notice_adapter.validate_json(body)
    except ValidationError as error:
        raise MessageError(_describe(error), kind="notice") from error
    match message:
        case StepNotice():
            return [message], []
        case NoticeBatch():
            return list(message.notices), list(message.progress)
        case StepProgress():
            return [], [message]
        case ProgressBatch():
            return [], list(message.progress)
    raise MessageError(f"unexpected message {message.kind}", kind="notice")  # pragma: no cover - the union is closed


def parse_notices(body: bytes, max_bytes: int) -> list[StepNotice]:
    """A completion message (one notice or a batch) as its notices (progress is left out)."""
    return parse_reports(body, max_bytes)[0]


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors()[:5]:
        where = ".".join(str(p) for p in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "invalid message: " + "; ".join(parts)


def json_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of every message, by kind."""
    schemas = {kind: model.model_json_schema(mode="serialization" if model in EVENT_MODELS else "validation")
               for kind, model in MESSAGE_MODELS.items()}
    for kind, schema in schemas.items():
        schema.setdefault("$id", f"theodolite/{kind}/v{SCHEMA_VERSION}")
    return schemas
