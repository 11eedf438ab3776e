"""Per-job event numbers (``Event.seq``), assigned by the job book, pure.

Every event of a job is numbered 1, 2, 3, ... in the order of the effects that carry it, so
that a consumer of the job's events can tell when it missed one. Numbers must never be
reused, also across planners: a planner takes them in blocks (:data:`SEQ_BLOCK`) that it
reserves on the job's document (``event_seq_reserved``, through the fenced ordered writer:
:class:`~shared.planner.effects.ReserveSeq`), and the shell publishes no event above the
last reservation that is durable. A planner that takes a job over (``JobBook.restore``)
starts after the stored reservation: the consumer sees the numbers jump ahead (a gap: it
may have missed events of the old planner; the job's state is in MongoDB), never a number
twice.

Numbering is a pass over an input's effects (:func:`numbered`, applied by the
:func:`numbering` decorator on the book's inputs) rather than part of every place that
creates an event: the effect order is the publication order, whatever the input.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Concatenate, ParamSpec, Protocol, TypeVar

from shared.messages import Event
from shared.planner.effects import Effect, Emit, FinishJob, RejectJob, ReserveSeq, StartJob

SEQ_BLOCK = 1000
"""Numbers reserved per write: one MongoDB write per thousand events of a job."""


@dataclass
class EventNumbers:
    """One job's numbers in this planner's term."""

    first: int = 1
    """The first number this planner gives the job."""
    next: int = 1
    reserved_to: int = 0
    """The highest number reserved (asked for: the shell knows when it is durable)."""

    @classmethod
    def after(cls, stored_reservation: int) -> EventNumbers:
        """A job taken over: numbers start after what another planner reserved."""
        return cls(first=stored_reservation + 1, next=stored_reservation + 1, reserved_to=stored_reservation)

    def take(self, events: Sequence[Event]) -> tuple[Event, ...]:
        """``events`` numbered (those that have a number already keep it)."""
        out = []
        for event in events:
            if event.seq is None:
                event = event.model_copy(update={"seq": self.next})
                self.next += 1
            out.append(event)
        return tuple(out)

    def reservation(self, job_id: str) -> ReserveSeq | None:
        """The reservation the numbers given so far need, if the last one does not cover them."""
        last = self.next - 1
        if last <= self.reserved_to:
            return None
        self.reserved_to += -(-(last - self.reserved_to) // SEQ_BLOCK) * SEQ_BLOCK
        return ReserveSeq(job_id, self.first, self.reserved_to)


class Numbered(Protocol):
    def numbers(self, job_id: str) -> EventNumbers | None: ...


def numbered(effects: Sequence[Effect], numbers: Callable[[str], EventNumbers | None]) -> list[Effect]:
    """Number the events ``effects`` carry, in order, per job; a ``ReserveSeq`` goes first for
    each job whose numbers passed its reservation. Events of a job ``numbers`` does not know are
    left alone, except ``job.rejected``: the one event of a submission that never became a job
    is number 1."""
    out: list[Effect] = []
    touched: dict[str, EventNumbers] = {}
    for effect in effects:
        match effect:
            case Emit(job_id=job_id, events=events) if (job := numbers(job_id)) is not None:
                effect = dataclasses.replace(effect, events=job.take(events))
                touched[job_id] = job
            case StartJob(job_id=job_id) | FinishJob(job_id=job_id) if (job := numbers(job_id)) is not None:
                effect = dataclasses.replace(effect, event=job.take([effect.event])[0])
                touched[job_id] = job
            case RejectJob(event=event) if event.seq is None:
                effect = dataclasses.replace(effect, event=event.model_copy(update={"seq": 1}))
        out.append(effect)
    reservations: list[Effect] = [r for job_id, job in touched.items() if (r := job.reservation(job_id)) is not None]
    return reservations + out if reservations else out


S = TypeVar("S", bound=Numbered)
P = ParamSpec("P")


def numbering(method: Callable[Concatenate[S, P], list[Effect]]) -> Callable[Concatenate[S, P], list[Effect]]:
    """Decorates an input of the book: its effects come out numbered (:func:`numbered`)."""

    @functools.wraps(method)
    def wrapper(self: S, /, *args: P.args, **kwargs: P.kwargs) -> list[Effect]:
        return numbered(method(self, *args, **kwargs), self.numbers)

    return wrapper
