"""The planner's job events on their way out: in number order, and only reserved numbers.

The job book numbers every event of a job (``shared/planner/numbering.py``); the effect
runner buffers them here as their effects are carried out, which is not always in number
order (a job event waits for its write, the effects of two inputs interleave at a publish).
:meth:`EventOutbox.take` hands out, per job, only the events that continue the job's stream
without a hole *and* whose numbers a durable reservation covers, so a consumer of one job
sees 1, 2, 3, ... in order, and no number is published that a planner taking over could use
again. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.events import MAX_BATCH_EVENTS
from shared.messages import Event


@dataclass
class _Stream:
    next_seq: int | None = None
    """The next number to publish (None until the job's first reservation says where it starts)."""
    durable_to: int = 0
    held: dict[int, Event] = field(default_factory=dict)
    closed: bool = False


class EventOutbox:
    """Numbered events waiting for their turn, per job; unnumbered ones go out at once."""

    def __init__(self) -> None:
        self._streams: dict[str, _Stream] = {}
        self._loose: list[Event] = []

    def __len__(self) -> int:
        return len(self._loose) + sum(len(s.held) for s in self._streams.values())

    def begin(self, job_id: str, start: int) -> None:
        """This planner numbers ``job_id``'s events from ``start`` (the first word counts)."""
        stream = self._streams.setdefault(job_id, _Stream())
        if stream.next_seq is None:
            stream.next_seq = start

    def reserved(self, job_id: str, upto: int) -> None:
        """The numbers up to ``upto`` are durably this planner's."""
        stream = self._streams.setdefault(job_id, _Stream())
        stream.durable_to = max(stream.durable_to, upto)

    def add(self, events: Iterable[Event]) -> None:
        for event in events:
            if event.seq is None or event.job_id is None:
                self._loose.append(event)
            else:
                self._streams.setdefault(event.job_id, _Stream()).held[event.seq] = event

    def close(self, job_id: str) -> None:
        """The job finished here: forget it once everything of it is out."""
        stream = self._streams.get(job_id)
        if stream is not None:
            stream.closed = True
            if not stream.held:
                del self._streams[job_id]

    def take(self, job_id: str | None = None) -> list[Event]:
        """What may be published now (of one job, or of all), per job in number order."""
        out, self._loose = (self._loose, []) if job_id is None else ([e for e in self._loose if e.job_id == job_id],
                                                                       [e for e in self._loose if e.job_id != job_id])
        keys: list[str] = [job_id] if job_id is not None else list(self._streams)
        for key in keys:
            stream = self._streams.get(key)
            if stream is None or stream.next_seq is None:
                continue
            while stream.next_seq <= stream.durable_to and stream.next_seq in stream.held:
                out.append(stream.held.pop(stream.next_seq))
                stream.next_seq += 1
            if stream.closed and not stream.held:
                del self._streams[key]
        return out

    def waiting(self, job_id: str) -> int:
        """Events of ``job_id`` held back (a hole before them, or no durable reservation yet)."""
        stream = self._streams.get(job_id)
        return 0 if stream is None else len(stream.held)


def runs(events: Iterable[Event]) -> list[list[Event]]:
    """``events`` cut into messages: consecutive events of one job and one type together (one
    routing key per message), at most ``MAX_BATCH_EVENTS`` each, order kept."""
    out: list[list[Event]] = []
    for event in events:
        last = out[-1] if out else None
        if last and last[-1].job_id == event.job_id and last[-1].type == event.type and len(last) < MAX_BATCH_EVENTS:
            last.append(event)
        else:
            out.append([event])
    return out
