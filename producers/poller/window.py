"""The late window, pure: the items published shortly before a stream's cursor, so that an item
that becomes visible late (a slow database transaction, skewed clocks) is still published
once, and an item seen twice is not.

    window = LateWindow(mark, late_window_s=60.0, max_tracked=5000)
"""

from __future__ import annotations

from datetime import datetime, timedelta

import structlog

from bus.records.poller import Mark, Recent

__all__ = ["LateWindow"]

_log = structlog.get_logger(__name__)


class LateWindow:
    """Working copy of a `Mark` while a stream is scanned."""

    def __init__(self, mark: Mark, late_window: timedelta) -> None:
        self.after = mark.after
        self.seen = set(mark.seen)
        self.recent = {(r.id, r.at) for r in mark.recent}
        if mark.after is not None:
            # The ids at `after` were published (or, for `--from now`, are old): never late.
            self.recent |= {(item_id, mark.after) for item_id in mark.seen}
        self.recent_since = mark.recent_since
        self._late_window = late_window

    def is_new(self, item_id: int, stamp: datetime) -> bool:
        if self.after is None or stamp > self.after:
            return True
        if stamp == self.after:
            return item_id not in self.seen
        return self.covers(stamp) and (item_id, stamp) not in self.recent

    def covers(self, stamp: datetime) -> bool:
        """Is `stamp` inside the late window, where `recent` says what was published?"""
        if self.after is None:
            return False
        low = self.after - self._late_window
        if self.recent_since is not None:
            low = max(low, self.recent_since)
        return stamp >= low

    def take(self, item_id: int, stamp: datetime) -> None:
        if self.after is None or stamp > self.after:
            self.after, self.seen = stamp, {item_id}
        elif stamp == self.after:
            self.seen.add(item_id)
        self.recent.add((item_id, stamp))

    def mark(self, limit: int) -> Mark:
        recent = sorted(self.recent, key=lambda pair: (pair[1], pair[0]))
        since = self.recent_since
        if self.after is not None:
            low = self.after - self._late_window
            recent = [pair for pair in recent if pair[1] >= low]
        if len(recent) > limit:
            # Forget the oldest; the window is complete only after the newest one forgotten.
            dropped = recent[len(recent) - limit - 1][1]
            recent = [pair for pair in recent if pair[1] > dropped]
            since = dropped + timedelta(microseconds=1)
        return Mark(
            after=self.after,
            seen=sorted(self.seen),
            recent=[Recent(id=i, at=at) for i, at in recent],
            recent_since=since,
        )
