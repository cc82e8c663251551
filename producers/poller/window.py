"""The late window, pure: the items published shortly before a stream's cursor, so that an item
that becomes visible late (a slow database transaction, skewed clocks) is still published
once, and an item seen twice is not.

    window = LateWindow(mark, late_window_s=60.0, max_tracked=5000)
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from datetime import datetime, timedelta

import structlog

from bus.records.poller import Mark, Recent

__all__ = ["LateWindow"]

_log = structlog.get_logger(__name__)

# Above every Dastra id: (at, _MAX_ID) sorts after every pair stamped `at`.
_MAX_ID = 2**63


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
        # `mark()` runs once per batch over up to `late_max_tracked` pairs: it keeps `recent`
        # sorted (`_order`, plus the pairs taken since, `_added`, mostly in order, so that the
        # sort merges two runs) and reuses the `Recent` models already built. Comparing and
        # hashing aware datetimes is slow enough for this to matter in a backfill.
        self._order = sorted((at, item_id) for item_id, at in self.recent)
        self._added: list[tuple[datetime, int]] = []
        self._models = {(r.at, r.id): r for r in mark.recent}

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
        if (item_id, stamp) not in self.recent:
            self.recent.add((item_id, stamp))
            self._added.append((stamp, item_id))

    def mark(self, limit: int) -> Mark:
        """The mark to commit: `recent` trimmed to the late window and to `limit` pairs. The
        window is trimmed alike, so it goes on exactly as `LateWindow(mark)` would."""
        recent = self._order + self._added
        recent.sort()
        since = self.recent_since
        if self.after is not None:
            low = self.after - self._late_window
            recent = recent[bisect_left(recent, (low,)) :]
        if len(recent) > limit:
            # Forget the oldest; the window is complete only after the newest one forgotten.
            dropped = recent[len(recent) - limit - 1][0]
            recent = recent[bisect_right(recent, (dropped, _MAX_ID)) :]
            since = dropped + timedelta(microseconds=1)
        models = self._models
        kept = [models.get(pair) or Recent(id=pair[1], at=pair[0]) for pair in recent]
        self._models = dict(zip(recent, kept, strict=True))
        self.recent = {(item_id, at) for at, item_id in recent}
        self._order, self._added = recent, []
        if self.after is not None:
            at_after = {(item_id, self.after) for item_id in self.seen} - self.recent
            if at_after:
                self.recent |= at_after
                self._order = sorted(recent + [(at, item_id) for item_id, at in at_after])
        self.recent_since = since
        return Mark(after=self.after, seen=sorted(self.seen), recent=kept, recent_since=since)
