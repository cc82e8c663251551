"""Acknowledgement in offset order, for records processed concurrently.

Consumes the records of one partition as they are taken (`add`, in offset order) and as they
finish (`complete`, in any order). Produces the Faust events that may now be acked: those of the
finished records at the head of the partition, so a committed offset never passes a record
still in flight (a crash redelivers it instead of losing it). Used by the agents' dispatcher and
the recipe runner.

    acks = PartitionAcks[Work](); acks.add(work)
    for event in acks.complete(work): event.ack()
"""

from __future__ import annotations

from collections import deque
from typing import Any, Generic, Protocol, TypeVar

__all__ = ["PartitionAcks"]


class _Tracked(Protocol):
    done: bool
    event: Any  # the Faust event; released (None) once handed out


_T = TypeVar("_T", bound=_Tracked)


class PartitionAcks(Generic[_T]):
    """The records of one partition, in the order they were taken."""

    def __init__(self) -> None:
        self._queue: deque[_T] = deque()

    def add(self, record: _T) -> None:
        self._queue.append(record)

    def complete(self, record: _T) -> list[Any]:
        """Mark `record` done; the events now ackable, in offset order."""
        record.done = True
        events = []
        while self._queue and self._queue[0].done:
            head = self._queue.popleft()
            events.append(head.event)
            head.event = None
        return events
