"""Client-side rate limiter: keeps one process under its part of Dastra's limits.

Consumes the limits (`DastraSettings.process_windows()`: the process's role's share of the API
key's 500/min and 10 000/10 min, or explicit `(limit, seconds)` windows). Produces permission to
send one HTTP request.

A request holds a *slot* from just before it is sent until its response has arrived; a window
counts the slots in flight plus those that ended less than `period` ago. Dastra sees the request
somewhere between those two instants, so the limiter never lets more than `limit` requests
reach Dastra within any `period`, whatever the network delays and connection-pool queueing.

    limiter = shared_limiter(settings.dastra, scope=base_url)   # one per process and API key
    async with limiter.slot():
        response = await http.send(request)

A limiter built with `pace=True` (every process that shares a key with others) also spaces the
starts of its requests evenly, one per `period / limit` of its tightest window, instead of
spending a whole window in a burst: the key's traffic stays even, and a process that only gets
a share never sits out most of a window after a burst.

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
        pace: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._windows = [_Window(limit, float(period)) for limit, period in windows]
        self._clock = clock
        self._lock = threading.Lock()
        self._in_flight = 0
        self._spacing = (
            max((w.period / w.limit for w in self._windows), default=0.0) if pace else 0.0
        )
        self._next_start = float("-inf")

    @classmethod
    def from_settings(cls, settings: DastraSettings) -> RateLimiter:
        """This process's part of the API key's limits; paced when it shares the key."""
        return cls(settings.process_windows(), pace=settings.budget_role is not None)

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

    def used(self) -> list[tuple[int, int, float]]:
        """Each window's use now, as (requests, limit, period): the requests that ended less
        than `period` ago plus those in flight (what the window counts)."""
        with self._lock:
            now = self._clock()
            found = []
            for window in self._windows:
                horizon = now - window.period
                while window.ended and window.ended[0] <= horizon:
                    window.ended.popleft()
                found.append((len(window.ended) + self._in_flight, window.limit, window.period))
            return found

    @property
    def spacing(self) -> float:
        """Seconds between the starts of two requests when paced (0: not paced)."""
        return self._spacing

    def __repr__(self) -> str:
        spec = ", ".join(f"{limit}/{period:g}s" for limit, period in self.windows) or "unlimited"
        paced = f", paced every {self._spacing:g}s" if self._spacing else ""
        return f"RateLimiter({spec}{paced})"

    async def _start(self) -> None:
        while True:
            with self._lock:
                now = self._clock()
                wait = max((w.wait(now, self._in_flight) for w in self._windows), default=0.0)
                wait = max(wait, self._next_start - now)
                if wait <= 0:
                    self._in_flight += 1
                    if self._spacing:
                        # From this start, not the planned one: never a catch-up burst.
                        self._next_start = now + self._spacing
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


_SHARED: dict[tuple[str, tuple[tuple[int, float], ...], bool], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(settings: DastraSettings, *, scope: str = "") -> RateLimiter:
    """The process-wide limiter for `scope` (e.g. the base URL) and this process's limits."""
    key = (scope, tuple(settings.process_windows()), settings.budget_role is not None)
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = RateLimiter.from_settings(settings)
        return limiter
