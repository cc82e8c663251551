"""The HTTP retry policy of every HTTP caller in the project: how long to wait before trying again.

Consumes a `Retry-After` header value (and, for a date, the current time), or an attempt number
with the caller's first backoff ceiling, its cap and the server's hint. Produces a wait in
seconds (a float), nothing else: no I/O, no sleeping; each caller keeps its own deadline and
attempt budget. Used by the Dastra client (`dastra.client`), the agents' dispatcher
(`consumers.dispatcher`), the REST hook dispatcher (`consumers.hooks`) and the lag alerter
(`consumers.lag.web`).

    wait = backoff_delay(attempt, base=0.5, cap=30.0, retry_after=parse_retry_after(header))
"""

from __future__ import annotations

import email.utils
import random
import re
from datetime import UTC, datetime
from typing import Literal, Protocol

__all__ = [
    "MAX_RETRY_AFTER_S",
    "Jitter",
    "RandomSource",
    "RetryAfterRule",
    "backoff_delay",
    "parse_retry_after",
]

# A wait longer than this is read as this (RFC 9111 §1.2.2 caps delta-seconds the same way).
MAX_RETRY_AFTER_S = 2147483648.0

_DELTA_SECONDS = re.compile(r"[0-9]+(?:\.[0-9]+)?")
_RFC850_YEAR = re.compile(r"[A-Za-z]+,\s*[0-9]{1,2}-[A-Za-z]{3}-([0-9]{2})\s")

Jitter = Literal["full", "equal", "spread"]
RetryAfterRule = Literal["floor", "pad", "pad_more", "exact"]


class RandomSource(Protocol):
    """What `backoff_delay` draws from: the `random` module or a `random.Random`."""

    def random(self) -> float: ...


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header value; None when absent or unreadable.

    Accepts every form RFC 9110 requires of a recipient: delta-seconds (`120`; a decimal such
    as `0.5` is accepted too), IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the obsolete
    RFC 850 form (`Sunday, 06-Nov-94 08:49:37 GMT`, its year the one within 50 years of now)
    and asctime (`Sun Nov  6 08:49:37 1994`, read as UTC, as is any date without a zone). A
    date in the past gives 0.0; a wait beyond `MAX_RETRY_AFTER_S` gives that. A negative
    number, inf, nan or anything else gives None. `now` (default: the current time; a naive
    one is read as UTC) is what a date is measured from. Never raises.
    """
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return min(float(text), MAX_RETRY_AFTER_S)
    try:
        when = email.utils.parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        reference = now if now is not None else datetime.now(UTC)
        if reference.tzinfo is None:
            reference = reference.replace(tzinfo=UTC)
        if two_digits := _RFC850_YEAR.match(text):
            # RFC 9110 §5.6.7: the year within 50 of now, never more than 50 ahead.
            year = reference.year + (int(two_digits[1]) - reference.year) % 100
            when = when.replace(year=year - 100 if year > reference.year + 50 else year)
        seconds = (when - reference).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return min(max(0.0, seconds), MAX_RETRY_AFTER_S)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    jitter: Jitter = "full",
    rule: RetryAfterRule = "floor",
    retry_after_cap: float | None = None,
    rng: RandomSource = random,
) -> float:
    """Seconds to wait after failed attempt number `attempt` (1 for the first), jittered.

    The ceiling is `min(cap, base * 2 ** (attempt - 1))`; `jitter` makes a wait of it:

    - "full": uniform in [0, ceiling] (the Dastra client, the hook dispatcher);
    - "equal": uniform in [ceiling / 2, ceiling] (the agents' dispatcher);
    - "spread": uniform in [ceiling / 2, ceiling * 3 / 2), so it may exceed `cap` by half
      (the lag alerter).

    A `retry_after` (seconds, e.g. from `parse_retry_after`), first cut to `retry_after_cap`
    if given, is applied by `rule`; it is never cut to `cap`:

    - "floor": the jittered wait, but never less than `retry_after` (the hook dispatcher);
    - "pad": `retry_after` instead of the backoff, plus uniform in
      [0, min(1, 0.1 * max(retry_after, 1))] so that callers do not stampede (the Dastra client);
    - "pad_more": the same with uniform in [0, min(1, 0.1 * retry_after + 0.1)] (the agents'
      dispatcher);
    - "exact": `retry_after` instead of the backoff, as it is (the lag alerter, cut to 300 s).
    """
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, not {attempt}")
    floor: float | None = None
    if retry_after is not None:
        wait = max(0.0, retry_after)
        if retry_after_cap is not None:
            wait = min(wait, retry_after_cap)
        if rule == "exact":
            return wait
        if rule == "pad":
            return wait + min(1.0, 0.1 * max(wait, 1.0)) * rng.random()
        if rule == "pad_more":
            return wait + min(1.0, 0.1 * wait + 0.1) * rng.random()
        floor = wait
    # Past 2**1000 every ceiling is `cap` anyway; an int power that large would not fit a float.
    ceiling = min(cap, base * 2.0 ** min(attempt - 1, 1000))
    if jitter == "equal":
        delay = ceiling / 2 + ceiling / 2 * rng.random()
    elif jitter == "spread":
        delay = ceiling * (0.5 + rng.random())
    else:
        delay = ceiling * rng.random()
    return delay if floor is None else max(delay, floor)
