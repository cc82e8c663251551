"""The client-side rate limiter: sliding windows over slots held until the response."""

from __future__ import annotations

import asyncio
import time

import pytest

from dastra import RateLimiter, shared_limiter
from dastra.settings import DastraSettings


async def test_a_window_admits_its_limit_then_waits_for_the_oldest_to_age() -> None:
    limiter = RateLimiter([(3, 1.0)])
    started = time.monotonic()
    for _ in range(3):
        await limiter.acquire()
    assert time.monotonic() - started < 0.9  # the first three pass without waiting a window
    await limiter.acquire()
    assert time.monotonic() - started >= 1.0  # the fourth waited for the first to leave


async def test_slots_in_flight_count_until_they_end() -> None:
    limiter = RateLimiter([(2, 0.05)])
    release = asyncio.Event()
    order: list[str] = []

    async def hold(name: str) -> None:
        async with limiter.slot():
            order.append(f"{name} start")
            await release.wait()

    holders = [asyncio.create_task(hold(n)) for n in ("a", "b")]
    third = asyncio.create_task(hold("c"))
    await asyncio.sleep(0.3)  # far longer than the window: only the two in flight block it
    assert order == ["a start", "b start"] and limiter.in_flight == 2
    release.set()
    await asyncio.wait_for(asyncio.gather(*holders, third), 5)
    assert order[-1] == "c start" and limiter.in_flight == 0


async def test_every_window_applies() -> None:
    limiter = RateLimiter([(10, 0.05), (4, 0.5)])
    started = time.monotonic()
    for _ in range(5):
        await limiter.acquire()
    assert time.monotonic() - started >= 0.5


def test_settings_shared_and_unlimited() -> None:
    settings = DastraSettings(rate_limit_per_minute=7, rate_limit_per_10_minutes=70)
    assert RateLimiter.from_settings(settings).windows == [(7, 60.0), (70, 600.0)]
    assert shared_limiter(settings, scope="a") is shared_limiter(settings, scope="a")
    assert shared_limiter(settings, scope="a") is not shared_limiter(settings, scope="b")
    assert RateLimiter.unlimited().windows == []
    assert repr(RateLimiter([(500, 60)])) == "RateLimiter(500/60s)"
    with pytest.raises(ValueError, match="limit >= 1"):
        RateLimiter([(0, 60)])
