"""The client-side rate limiter: sliding windows over slots held until the response."""

from __future__ import annotations

import asyncio
import itertools
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
    async with asyncio.timeout(5):
        await asyncio.gather(*holders, third)
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


@pytest.mark.parametrize(
    "shares", ["poller=1,workers=4", "poller=2,workers=3", "poller=1,workers=1"]
)
@pytest.mark.parametrize("workers", [1, 2, 3, 7, 16])
@pytest.mark.parametrize("key", [(500, 10_000), (60, 600), (7, 13)])
def test_the_processes_sharing_a_key_never_add_up_to_more_than_its_limits(
    shares: str, workers: int, key: tuple[int, int]
) -> None:
    per_minute, per_10_minutes = key
    common = {
        "budget_shares": shares,
        "workers": workers,
        "rate_limit_per_minute": per_minute,
        "rate_limit_per_10_minutes": per_10_minutes,
    }
    try:
        poller = DastraSettings(**common, budget_role="poller").process_windows()  # type: ignore[arg-type]
        worker = DastraSettings(**common, budget_role="workers").process_windows()  # type: ignore[arg-type]
    except ValueError as exc:
        # Too small a key for so many processes: refused at start, never over the limit.
        assert "under one request per window" in str(exc)
        return
    for (mine, period), (theirs, _), limit in zip(
        poller, worker, (per_minute, per_10_minutes), strict=True
    ):
        assert mine >= 1 and theirs >= 1 and period in (60.0, 600.0)
        assert mine + workers * theirs <= limit
        # Rounded down by less than one request per process.
        assert limit - (mine + workers * theirs) < 1 + workers


def test_the_default_split_and_a_process_alone_on_the_key() -> None:
    assert DastraSettings().process_windows() == [(500, 60.0), (10_000, 600.0)]
    assert DastraSettings(budget_role="poller").process_windows() == [(125, 60.0), (2500, 600.0)]
    two = DastraSettings(budget_role="workers", workers=2)
    assert two.process_windows() == [(187, 60.0), (3750, 600.0)]
    assert DastraSettings().for_role("workers").budget_role == "workers"
    assert DastraSettings(budget_role="poller").for_role("workers").budget_role == "workers"


def test_budget_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASTRA_BUDGET_SHARES", "poller=1, workers=2.5")
    monkeypatch.setenv("DASTRA_RATE_LIMIT_WINDOWS", "[[60, 10]]")
    monkeypatch.setenv("DASTRA_WORKERS", "2")
    settings = DastraSettings().for_role("workers")
    assert settings.budget_shares == {"poller": 1.0, "workers": 2.5}
    assert settings.process_windows() == [(21, 10.0)]  # 60 * 2.5/3.5 / 2 = 21.4
    for bad, message in [
        ("webhook=1", "unknown role"),
        ("poller", "role=weight"),
        ("poller=0,workers=0", "at least one is > 0"),
        ("poller=-1,workers=2", ">= 0"),
    ]:
        monkeypatch.setenv("DASTRA_BUDGET_SHARES", bad)
        with pytest.raises(ValueError, match=message):
            DastraSettings()
    monkeypatch.setenv("DASTRA_BUDGET_SHARES", "poller=1,workers=1")
    monkeypatch.setenv("DASTRA_WORKERS", "100")
    with pytest.raises(ValueError, match="lower DASTRA_WORKERS"):
        DastraSettings().for_role("workers")


def test_a_process_sharing_the_key_paces_its_requests_evenly() -> None:
    now = [100.0]
    paced = RateLimiter([(10, 1.0)], pace=True, clock=lambda: now[0])
    assert paced.spacing == pytest.approx(0.1)
    assert "paced every 0.1s" in repr(paced)
    shared = RateLimiter.from_settings(DastraSettings(budget_role="poller"))
    assert shared.spacing == pytest.approx(0.48) and shared.windows == [(125, 60.0), (2500, 600.0)]
    assert RateLimiter.from_settings(DastraSettings()).spacing == 0.0

    async def starts(count: int) -> list[float]:
        times = []
        for _ in range(count):
            await paced.acquire()
            times.append(now[0])
        return times

    async def advance() -> None:
        while True:
            await asyncio.sleep(0)
            now[0] += 0.01

    async def scenario() -> list[float]:
        ticker = asyncio.create_task(advance())
        try:
            async with asyncio.timeout(30):
                return await starts(5)
        finally:
            ticker.cancel()

    times = asyncio.run(scenario())
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 0.1 - 1e-9 for gap in gaps), gaps  # no burst: one start per 0.1 s
