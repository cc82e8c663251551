"""The late window (pure): `mark()` commits what the plain definition says, and the window it
trims goes on exactly as one rebuilt from that mark, batch after batch."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from bus.records.poller import Mark, Recent
from producers.poller.window import LateWindow

_T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)


def _plain_mark(window: LateWindow, late_window: timedelta, limit: int) -> Mark:
    """The definition: pairs within `late_window` of `after`, the newest `limit` of them (a
    timestamp is kept whole or not at all), sorted by (at, id)."""
    recent = sorted(window.recent, key=lambda pair: (pair[1], pair[0]))
    since = window.recent_since
    if window.after is not None:
        recent = [pair for pair in recent if pair[1] >= window.after - late_window]
    if len(recent) > limit:
        dropped = recent[len(recent) - limit - 1][1]
        recent = [pair for pair in recent if pair[1] > dropped]
        since = dropped + timedelta(microseconds=1)
    return Mark(
        after=window.after,
        seen=sorted(window.seen),
        recent=[Recent(id=i, at=at) for i, at in recent],
        recent_since=since,
    )


def _state(window: LateWindow) -> tuple[object, ...]:
    return (window.after, window.seen, window.recent, window.recent_since)


@pytest.mark.parametrize("seed", range(8))
def test_mark_matches_the_definition_and_the_window_goes_on_as_one_rebuilt(seed: int) -> None:
    rng = random.Random(seed)
    late_window = timedelta(seconds=rng.choice([0, 1, 5, 60]))
    limit = rng.choice([0, 3, 50, 400])
    start = Mark(after=None)
    if seed % 2:  # `--from now`: ids at `after` that were never taken
        start = Mark(after=_T0, seen=[1, 2], recent_since=_T0)
    kept = LateWindow(start, late_window)
    next_id = 10
    for _batch in range(12):
        for _ in range(rng.randint(0, 120)):
            base = kept.after or _T0
            # Mostly forward, some ties, some behind the cursor (late items).
            step = rng.choice([0, 0, 1, 2, 7, 40, -3, -900])
            stamp = base + timedelta(milliseconds=step * 10)
            item_id = next_id if rng.random() < 0.9 else rng.randint(1, next_id)
            next_id += 1
            if kept.is_new(item_id, stamp) or stamp >= base:
                kept.take(item_id, stamp)
        expected = _plain_mark(kept, late_window, limit)
        mark = kept.mark(limit)
        assert mark == expected
        rebuilt = LateWindow(mark, late_window)
        assert _state(kept) == _state(rebuilt)
        probes = [(i, at) for i, at in list(kept.recent)[:20]] + [(next_id + 1, _T0)]
        for item_id, at in probes:
            assert kept.is_new(item_id, at) == rebuilt.is_new(item_id, at)
