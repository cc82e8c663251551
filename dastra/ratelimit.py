"""Client-side rate limiter: keeps one process under Dastra's limits (500/min, 10 000/10 min).

Consumes the limits (`DastraSettings.rate_limit_per_minute`, `rate_limit_per_10_minutes`, or
explicit `(limit, seconds)` windows). Produces permission to send one HTTP request.

A request holds a *slot* from just before it is sent until its response has arrived; a window
counts the slots in flight plus those that ended less than `period` ago. Dastra sees the request
somewhere between those two instants, so the limiter never lets more than `limit` requests
reach Dastra within any `period`, whatever the network delays and connection-pool queueing.

    limiter = shared_limiter(settings.dastra, scope=base_url)   # one per process and API key
    async with limiter.slot():
        response = await http.send(request)

The state is guarded by a thread lock and waiting is done with `asyncio.sleep`, so one limiter
can be shared by several event loops (pytest, Faust, a poller) in the same process.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from dastra.settings import DastraSettings

__all__ = ["RateLimiter", "shared_limiter"]

_MAX_POLL_S = 0.05


class _Window:
    __slots__ = ("ended", "limit", "period")

    def __init__(self, limit: int, period: float) -> None:
        if limit < 1 or period <= 0:
            raise ValueError(f"a rate window needs limit >= 1 and period > 0, not {limit}/{period}")
        self.limit = limit
        self.period = period
        self.ended: deque[float] = deque()

    def wait(self, now: float, in_flight: int) -> float:
        """Seconds until one more slot may start in this window (0: now)."""
        horizon = now - self.period
        while self.ended and self.ended[0] <= horizon:
            self.ended.popleft()
        excess = in_flight + len(self.ended) - self.limit
        if excess < 0:
            return 0.0
        if excess < len(self.ended):
            return self.ended[excess] - horizon
        return _MAX_POLL_S  # every counted slot is still in flight: wait for one to end


class RateLimiter:
    """Sliding-window limiter over one or more `(limit, period_seconds)` windows.

    RateLimiter([(500, 60.0), (10_000, 600.0)])
    """

    def __init__(
        self,
        windows: Sequence[tuple[int, float]],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._windows = [_Window(limit, float(period)) for limit, period in windows]
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0

    @classmethod
    def from_settings(cls, settings: DastraSettings) -> RateLimiter:
        """Dastra's two windows with the configured limits."""
        return cls(
            [
                (settings.rate_limit_per_minute, 60.0),
                (settings.rate_limit_per_10_minutes, 600.0),
            ]
        )

    @classmethod
    def unlimited(cls) -> RateLimiter:
        """A limiter that never waits (benchmarks against a sandbox without limits)."""
        return cls([])

    @property
    def windows(self) -> list[tuple[int, float]]:
        return [(window.limit, window.period) for window in self._windows]

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def __repr__(self) -> str:
        spec = ", ".join(f"{limit}/{period:g}s" for limit, period in self.windows) or "unlimited"
        return f"RateLimiter({spec})"

    async def _start(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                wait = max((w.wait(now, self._in_flight) for w in self._windows), default=0.0)
                if wait <= 0:
                    self._in_flight += 1
                    return
            await asyncio.sleep(min(wait, 1.0) + 0.0005)

    def _end(self) -> None:
        with self._lock:
            self._in_flight -= 1
            now = self._clock()
            for window in self._windows:
                window.ended.append(now)

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for room, then hold a slot until the block exits (the response arrived)."""
        await self._start()
        try:
            yield
        finally:
            self._end()

    async def acquire(self) -> None:
        """Wait for room and count one request from now (when completion cannot be reported)."""
        await self._start()
        self._end()


_SHARED: dict[tuple[str, int, int], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(settings: DastraSettings, *, scope: str = "") -> RateLimiter:
    """The process-wide limiter for `scope` (e.g. the base URL) and the configured limits."""
    key = (scope, settings.rate_limit_per_minute, settings.rate_limit_per_10_minutes)
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = RateLimiter.from_settings(settings)
        return limiter
