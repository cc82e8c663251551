"""One subscription's read positions on the event topics: per partition, the offsets read but
not yet done (waiting or in flight) with their timestamps. Pure bookkeeping, no I/O.

The position to commit for a partition is its lowest open offset or, with nothing open, the
offset after the last record read (or the start offset chosen for it).

    positions.read(tp, [(10, ts10), (11, ts11)]); positions.done(tp, 10)
    positions.commit_point(tp)  # 11
"""

from __future__ import annotations

from collections.abc import Iterable

from aiokafka import TopicPartition

__all__ = ["Positions"]


class Positions:
    """The open offsets of one subscription, per partition (see the module docstring)."""

    def __init__(self) -> None:
        self._open: dict[TopicPartition, dict[int, int]] = {}
        self._next: dict[TopicPartition, int] = {}

    def read(self, tp: TopicPartition, offsets: list[tuple[int, int]]) -> None:
        """Records of `tp` handed over by the consumer (offset, timestamp ms): open until
        `done`."""
        if not offsets:
            return
        self._open.setdefault(tp, {}).update(offsets)
        last = max(offset for offset, _ in offsets)
        self._next[tp] = max(self._next.get(tp, 0), last + 1)

    def started(self, tp: TopicPartition, offset: int) -> None:
        """A start position chosen for `tp` (or the consumer's position, which can be past
        transaction markers): nothing before it is open."""
        self._next[tp] = max(self._next.get(tp, 0), offset)

    @property
    def partitions(self) -> list[TopicPartition]:
        """The partitions with a known position."""
        return list(self._next)

    def commit_point(self, tp: TopicPartition) -> int | None:
        """The offset to commit for `tp`: its lowest open one, else the one after the last
        read; None when nothing is known of it."""
        lowest = self.lowest_open(tp)
        return lowest if lowest is not None else self._next.get(tp)

    def done(self, tp: TopicPartition, offset: int) -> None:
        """Delivered, dead-lettered or not for this subscriber: the position may pass it."""
        opened = self._open.get(tp)
        if opened is not None:
            opened.pop(offset, None)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions revoked from this process: their open offsets are another's now."""
        for tp in partitions:
            self._open.pop(tp, None)
            self._next.pop(tp, None)

    def lowest_open(self, tp: TopicPartition) -> int | None:
        opened = self._open.get(tp)
        return min(opened) if opened else None

    def oldest_timestamp_ms(self) -> int | None:
        """The timestamp of the oldest open record of any partition."""
        stamps = [min(opened.values()) for opened in self._open.values() if opened]
        return min(stamps) if stamps else None

    @property
    def open_count(self) -> int:
        return sum(len(opened) for opened in self._open.values())
