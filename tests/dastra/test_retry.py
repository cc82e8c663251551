"""The one HTTP retry policy (dastra.retry), without network: every Retry-After form RFC 9110
asks a recipient to accept, and the bounds of the jittered backoff each caller relies on."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from dastra.retry import MAX_RETRY_AFTER_S, backoff_delay, parse_retry_after

# The example date of RFC 9110 §5.6.7, and a `now` 30 s before it.
NOW = datetime(1994, 11, 6, 8, 49, 7, tzinfo=UTC)


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",  # IMF-fixdate
        "Sunday, 06-Nov-94 08:49:37 GMT",  # obsolete RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime: no zone, read as UTC
        "Sun Nov 6 08:49:37 1994",
        "  Sun, 06 Nov 1994 08:49:37 GMT  ",
    ],
)
def test_every_date_form_is_read_against_now(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 30.0


def test_a_naive_now_is_read_as_utc() -> None:
    assert parse_retry_after("Sun Nov  6 08:49:37 1994", now=NOW.replace(tzinfo=None)) == 30.0


def test_a_date_with_an_offset_is_converted() -> None:
    assert parse_retry_after("Sun, 06 Nov 1994 09:49:37 +0100", now=NOW) == 30.0


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:06 GMT",
        "Sunday, 06-Nov-94 08:00:00 GMT",
        "Thu Jan  1 00:00:00 1970",
        "Mon, 01 Jan 1900 00:00:00 GMT",
    ],
)
def test_a_date_in_the_past_means_now(value: str) -> None:
    assert parse_retry_after(value, now=NOW) == 0.0


def test_an_rfc_850_year_is_the_one_within_50_years_of_now() -> None:
    fifty_years_on = datetime(2044, 11, 6, 8, 49, 37, tzinfo=UTC) - NOW
    assert parse_retry_after("Sunday, 06-Nov-44 08:49:37 GMT", now=NOW) == (
        fifty_years_on.total_seconds()
    )
    assert parse_retry_after("Monday, 06-Nov-45 08:49:37 GMT", now=NOW) == 0.0  # 1945
    later = datetime(2090, 1, 1, tzinfo=UTC)
    assert parse_retry_after("Monday, 01-Jan-91 00:00:00 GMT", now=later) == 365 * 86400.0


def test_a_date_without_now_is_measured_from_the_clock() -> None:
    ahead = format_datetime(datetime.now(UTC) + timedelta(seconds=60), usegmt=True)
    wait = parse_retry_after(ahead)
    assert wait is not None and 55.0 <= wait <= 60.0


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("0", 0.0), ("5", 5.0), ("120", 120.0), (" 7 ", 7.0), ("0.5", 0.5), ("007", 7.0)],
)
def test_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "-3",
        "-0.5",
        "+5",
        "inf",
        "nan",
        "1e3",
        "1_000",
        "5 s",
        "Sun, 32 Nov 1994 08:49:37 GMT",  # no such day
        "Sun, 06 Nov 1994 25:49:37 GMT",  # no such hour
        "Sun, 06 Nov 99999 08:49:37 GMT",  # beyond datetime
        "Sun, 06 Nov 1994 08:49:37 +9999",  # no such offset
        "06 Nov 1994",
        "\x00",
    ],
)
def test_garbage_negative_and_non_finite_values_are_ignored(value: str | None) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_a_huge_wait_is_finite_and_capped() -> None:
    assert parse_retry_after("9" * 400) == MAX_RETRY_AFTER_S
    assert parse_retry_after("2147483647") == 2147483647.0
    assert parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", now=NOW) == MAX_RETRY_AFTER_S


# --- backoff_delay ---------------------------------------------------------------------------


def _draws(n: int = 200, **kwargs: Any) -> list[float]:
    rng = random.Random(20261106)
    return [backoff_delay(rng=rng, **kwargs) for _ in range(n)]


@pytest.mark.parametrize(("attempt", "ceiling"), [(1, 0.5), (2, 1.0), (3, 2.0), (6, 10.0)])
def test_full_jitter_stays_under_the_doubling_ceiling_and_the_cap(
    attempt: int, ceiling: float
) -> None:
    waits = _draws(attempt=attempt, base=0.5, cap=10.0)
    assert all(0.0 <= w <= ceiling for w in waits)
    assert max(waits) > 0.9 * ceiling and min(waits) < 0.1 * ceiling  # spread over all of it


def test_equal_jitter_keeps_at_least_half_the_ceiling() -> None:
    waits = _draws(attempt=3, base=0.5, cap=10.0, jitter="equal")
    assert all(1.0 <= w <= 2.0 for w in waits)


def test_spread_jitter_goes_half_below_and_half_above_and_may_pass_the_cap() -> None:
    waits = _draws(attempt=10, base=1.0, cap=60.0, jitter="spread")
    assert all(30.0 <= w < 90.0 for w in waits)
    assert max(waits) > 60.0


def test_the_same_seed_gives_the_same_waits() -> None:
    assert _draws(attempt=4, base=0.1, cap=5.0) == _draws(attempt=4, base=0.1, cap=5.0)


def test_very_late_attempts_do_not_overflow() -> None:
    assert all(0.0 <= w <= 30.0 for w in _draws(n=10, attempt=100_000, base=0.5, cap=30.0))


def test_attempts_count_from_one() -> None:
    with pytest.raises(ValueError, match="from 1"):
        backoff_delay(0, base=1.0, cap=1.0)


def test_retry_after_is_a_floor_by_default_and_is_not_cut_to_the_cap() -> None:
    assert all(w == 5.0 for w in _draws(attempt=1, base=0.05, cap=0.2, retry_after=5.0))
    # A short Retry-After does not shorten a longer backoff.
    waits = _draws(attempt=5, base=1.0, cap=16.0, retry_after=0.01)
    assert all(0.01 <= w <= 16.0 for w in waits) and max(waits) > 10.0


def test_pad_waits_retry_after_plus_at_most_a_tenth_of_it_up_to_a_second() -> None:
    for retry_after, extra in [(0.0, 0.1), (0.5, 0.1), (5.0, 0.5), (30.0, 1.0)]:
        waits = _draws(attempt=9, base=10.0, cap=100.0, retry_after=retry_after, rule="pad")
        assert all(retry_after <= w <= retry_after + extra for w in waits), retry_after
        assert max(waits) > retry_after + 0.9 * extra


def test_pad_more_adds_a_tenth_of_a_second_to_the_spread() -> None:
    for retry_after, extra in [(0.0, 0.1), (0.5, 0.15), (5.0, 0.6), (30.0, 1.0)]:
        waits = _draws(attempt=9, base=10.0, cap=100.0, retry_after=retry_after, rule="pad_more")
        assert all(retry_after <= w <= retry_after + extra for w in waits), retry_after
        assert max(waits) > retry_after + 0.9 * extra


def test_exact_waits_retry_after_cut_to_its_own_cap() -> None:
    assert backoff_delay(3, base=1.0, cap=60.0, retry_after=0.0, rule="exact") == 0.0
    assert backoff_delay(3, base=1.0, cap=60.0, retry_after=120.0, rule="exact") == 120.0
    capped = backoff_delay(
        3, base=1.0, cap=60.0, retry_after=10_000.0, rule="exact", retry_after_cap=300.0
    )
    assert capped == 300.0


def test_without_retry_after_every_rule_is_the_plain_backoff() -> None:
    for rule in ("floor", "pad", "pad_more", "exact"):
        waits = _draws(attempt=2, base=1.0, cap=10.0, rule=rule)
        assert all(0.0 <= w <= 2.0 for w in waits)
