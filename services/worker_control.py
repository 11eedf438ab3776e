"""The planner's control word to workers, and what a worker does with a step because of it.

The planner sets a job's flags in two places (see :class:`~shared.messages.JobControl`):
on the job's MongoDB record, which a worker loads once per job and caches, and as a
``job.control`` message on the control fanout exchange, which every worker receives on its
own exclusive queue. A cached record may predate the latest word and a worker that started
late never saw the earlier messages, so the flags that count are the OR of both.

:func:`decide` is the whole decision, without I/O: the worker's shell feeds it a delivery's
flags and carries out the :class:`Decision`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import Enum

from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue

from shared.constants import HEADER_KIND, Names
from shared.distributed_errors import MessageError
from shared.messages import JobControl, StepDispatch, parse
from shared.observability.reasons import RejectReason
from shared.states import StepState
from shared.store import JobRecord
from shared.transport.settle import Reject

CONTROL_CACHE_SIZE = 4096
"""Jobs whose latest control word a worker keeps (least recently used dropped first)."""
CONTROL_PREFETCH = 64
CONTROL_KIND = "job.control"


def stronger_stop(first: StepState | None, second: StepState | None) -> StepState | None:
    """The stop state that wins: cancelled over skipped (a cancel is the user's word, as in the
    planner core's ``stop_state``); anything that is not a stop state counts as none."""
    stops = {first, second}
    if StepState.CANCELLED in stops:
        return StepState.CANCELLED
    if StepState.SKIPPED in stops:
        return StepState.SKIPPED
    return None


@dataclass(frozen=True)
class ControlFlags:
    """A job's control flags from one source (its record, or its latest control message)."""

    claim: bool = False
    stop: StepState | None = None

    @classmethod
    def of_record(cls, record: JobRecord | None) -> ControlFlags:
        return NO_FLAGS if record is None else cls(record.claim, stronger_stop(record.stop, None))

    @classmethod
    def of_message(cls, control: JobControl) -> ControlFlags:
        return cls(control.claim, stronger_stop(control.stop, None))

    def merged(self, other: ControlFlags | None) -> ControlFlags:
        """Both sources together: either one's claim, the stronger stop."""
        if other is None:
            return self
        return ControlFlags(self.claim or other.claim, stronger_stop(self.stop, other.stop))


NO_FLAGS = ControlFlags()


class Decision(Enum):
    """What a worker does with a step it does not hold or has not finished already."""

    RUN = "run"
    """The fast path: run it unclaimed (no MongoDB round trip before it runs); it is claimed
    only if it is still running after ``claim_after_s``."""
    CLAIM = "claim"
    """Claim it in MongoDB first (taking over a running claim when redelivered); run it only
    if the claim holds."""
    SKIP = "skip"
    """Do not run it: record it skipped if it has not started, and report that."""
    CANCEL = "cancel"
    """Do not run it: record it cancelled if it has not started, and report that."""

    @property
    def stop(self) -> StepState | None:
        """The state to record instead of running, for :attr:`SKIP` and :attr:`CANCEL`."""
        return _STOP_STATES.get(self)


_STOP_STATES = {Decision.SKIP: StepState.SKIPPED, Decision.CANCEL: StepState.CANCELLED}


def decide(dispatch: StepDispatch, redelivered: bool, record_flags: ControlFlags, control: ControlFlags | None) -> Decision:
    """The decision for one step of a delivery.

    A stopping job wins over everything (even a redelivery: a step that did start elsewhere
    is not stopped by the store's compare-and-set). Otherwise the step is claimed first when
    another copy of its message may exist: the planner said so for this message
    (``dispatch.claim``) or for the whole job (a restored job), or RabbitMQ redelivered it (its
    previous holder lost its channel, maybe mid-run).
    """
    flags = record_flags.merged(control)
    if flags.stop is StepState.CANCELLED:
        return Decision.CANCEL
    if flags.stop is StepState.SKIPPED:
        return Decision.SKIP
    if dispatch.claim or flags.claim or redelivered:
        return Decision.CLAIM
    return Decision.RUN


class ControlCache:
    """The latest control word per job, for the ``size`` most recently concerned jobs.

    A new message for a job replaces the previous one (the planner always sends both flags).
    """

    def __init__(self, size: int = CONTROL_CACHE_SIZE) -> None:
        if size < 1:
            raise ValueError(f"a control cache needs room for at least one job, not {size}")
        self.size = size
        self._flags: OrderedDict[str, ControlFlags] = OrderedDict()

    def __len__(self) -> int:
        return len(self._flags)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._flags

    def update(self, control: JobControl) -> ControlFlags:
        flags = ControlFlags.of_message(control)
        self._flags[control.job_id] = flags
        self._flags.move_to_end(control.job_id)
        while len(self._flags) > self.size:
            self._flags.popitem(last=False)
        return flags

    def get(self, job_id: str) -> ControlFlags | None:
        flags = self._flags.get(job_id)
        if flags is not None:
            self._flags.move_to_end(job_id)
        return flags


def parse_control(message: AbstractIncomingMessage, max_bytes: int) -> JobControl:
    """A control message's body; raises :class:`Reject` (drop it, with a log line) when it is
    of another kind or not a valid :class:`JobControl`."""
    kind = (message.headers or {}).get(HEADER_KIND)
    if kind is not None and str(kind) != CONTROL_KIND:
        raise Reject(f"a {kind!r} message on the control exchange", RejectReason.WRONG_KIND)
    try:
        return parse(JobControl, message.body, max_bytes)
    except MessageError as problem:
        raise Reject(f"bad job control message: {problem.reason}", RejectReason.MALFORMED) from None


async def declare_control_queue(channel: AbstractChannel, names: Names, worker_id: str) -> AbstractQueue:
    """This worker's own queue on the control fanout: exclusive, gone with its connection."""
    queue = await channel.declare_queue(f"{names.control_exchange}.{worker_id}", exclusive=True, auto_delete=True)
    await queue.bind(names.control_exchange, "")
    return queue
