"""The change poller's settings (`POLLER_*`).

poller = PollerSettings(interval_max_s=5)
poller.idle_interval([(500, 60.0)], workspaces=20, streams=4)   # 19.2: the budget's floor
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

from bus.settings import part_config

__all__ = ["PollerSettings"]


class PollerSettings(BaseSettings):
    """The change poller (`POLLER_*`)."""

    model_config = part_config("POLLER_")

    # Start the next cycle this long after the start of one that found changes (at once when
    # it took longer)...
    interval_min_s: float = Field(default=1.0, gt=0)
    # ...and back off, doubling, up to this long while nothing changes.
    interval_max_s: float = Field(default=15.0, gt=0)
    # Idle polling of all workspaces together may plan at most this share of the process's
    # Dastra rate limit (its role's part of the key): with many workspaces the idle interval
    # stretches past `interval_max_s`, so cycles that find changes, late passes and triggered
    # polls always find room under the limit. 0: no such floor.
    idle_budget_share: float = Field(default=0.5, ge=0, le=1)
    page_size: int = Field(default=500, ge=1, le=500)
    # Events per Kafka transaction: a long backfill commits (and survives a crash) in steps.
    batch_size: int = Field(default=500, ge=1)
    # Where a workspace without a stored cursor starts: "now", "beginning" or an ISO date.
    start_from: str = "now"
    metrics_port: int = Field(default=0, ge=0, le=65535, description="0: no metrics server")
    transaction_timeout_s: float = Field(default=60.0, gt=0)
    # Items can become visible after newer ones (a slow database transaction, skewed clocks):
    # each cycle also re-reads this far behind the cursor and publishes what it had not seen.
    late_window_s: float = Field(default=60.0, ge=0)
    # At most this many recently published ids are remembered for that check.
    late_max_tracked: int = Field(default=5000, ge=0)
    # That re-read runs at most this often per stream (0: every cycle), in the background:
    # what it finds goes into the stream's next batch (a bounded run's last cycle waits for
    # it). After a burst of items it reads up to `late_max_tracked` of them again: the
    # poller's main cost, and requests taken from Dastra's rate limit.
    late_every_s: float = Field(default=5.0, ge=0)
    # At start-up, probe what Dastra's spec leaves open (filter field casing, the time zone of
    # filter dates, Tasks' includeChildren/archived defaults; dastra.doctor) and adapt to it.
    detect: bool = True

    def idle_interval(
        self, windows: Sequence[tuple[int, float]], *, workspaces: int, streams: int
    ) -> float:
        """Seconds between idle cycles of each workspace: `interval_max_s`, or longer when
        `workspaces` idle cycles of `streams` requests each would plan more than
        `idle_budget_share` of the tightest `(limit, seconds)` window."""
        rates = [limit / seconds for limit, seconds in windows if seconds > 0]
        if not self.idle_budget_share or not rates:
            return self.interval_max_s
        floor = streams * workspaces / (self.idle_budget_share * min(rates))
        return max(self.interval_max_s, floor)

    @model_validator(mode="after")
    def _bounds(self) -> PollerSettings:
        if self.interval_max_s < self.interval_min_s:
            raise ValueError("POLLER_INTERVAL_MAX_S must be >= POLLER_INTERVAL_MIN_S")
        if self.start_from not in ("now", "beginning"):
            try:
                datetime.fromisoformat(self.start_from.replace("Z", "+00:00"))
            except ValueError:
                raise ValueError("POLLER_START_FROM takes now, beginning or an ISO date") from None
        return self
