"""The sandbox's runtime controls: injected faults, call counts, rate limiting, OAuth2 tokens.

Consumes the sandbox settings and what tests ask through `/_sandbox/*`. Produces the decisions
the middleware applies to each API call: a fault to inject, a 429 with its `Retry-After`, whether
a bearer token is valid, and what tests read back: the per-endpoint counts, and the rate
limiter's log (when each authenticated call reached it, and whether it was admitted or got 429).
"""

from __future__ import annotations

import fnmatch
import math
import secrets
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, Field, model_validator

from dastra.sandbox.settings import SandboxSettings

__all__ = ["Controls", "Fault", "FaultSpec", "RateWindow", "RequestLog"]

# The limiter's log keeps this many calls (about 3 hours at Dastra's 500/min).
_LOG_MAX = 100_000

FaultKind = Literal["status", "latency", "hang", "drop"]


class FaultSpec(BaseModel):
    """What `POST /_sandbox/faults` takes.

    `path` is a glob matched against the request path *and* its template
    (`/v1/ws/*/Actors`, `/v1/ws/{ws}/Actors`, `*Tasks*`); `method` a method or `*`. The fault
    applies to the next `times` matching calls, or for `duration_s` seconds, or until cleared.
    `latency_s` delays the call (then it proceeds, or gets `status`); `status` answers with that
    code (`retry_after` becomes the Retry-After header: seconds or an HTTP date); `hang` holds
    the call without answering (until the client gives up or `hang_s` passes, then drops it);
    `drop` closes the connection without any response.
    """

    path: str = "*"
    method: str = "*"
    status: int | None = Field(default=None, ge=100, le=599)
    retry_after: float | str | None = None
    body: Any = None
    latency_s: float | None = Field(default=None, ge=0)
    hang: bool = False
    hang_s: float = Field(default=60.0, gt=0)
    drop: bool = False
    times: int | None = Field(default=None, ge=1)
    duration_s: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _one_effect(self) -> FaultSpec:
        if not (self.status or self.latency_s or self.hang or self.drop):
            raise ValueError("a fault needs status, latency_s, hang or drop")
        return self

    @property
    def kind(self) -> FaultKind:
        if self.drop:
            return "drop"
        if self.hang:
            return "hang"
        if self.status is not None:
            return "status"
        return "latency"


@dataclass
class Fault:
    id: str
    spec: FaultSpec
    remaining: int | None
    until: float | None
    hits: int = 0

    def matches(self, method: str, path: str, template: str) -> bool:
        if self.spec.method not in ("*", method):
            return False
        pattern = self.spec.path
        return fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(template, pattern)

    def describe(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.spec.kind,
            **self.spec.model_dump(),
            "remaining": self.remaining,
            "hits": self.hits,
            "active_for_s": None if self.until is None else max(0.0, self.until - time.monotonic()),
        }


@dataclass
class RateWindow:
    limit: int
    period: float
    arrivals: deque[float] = field(default_factory=deque)

    def label(self) -> str:
        minutes = self.period / 60
        return f"{minutes:g}m" if minutes >= 1 and minutes.is_integer() else f"{self.period:g}s"


@dataclass(frozen=True)
class RequestLog:
    """One authenticated API call as the rate limiter saw it: when (`time.monotonic()` of the
    sandbox's host), which endpoint, and whether it was admitted (else it got a 429)."""

    at: float
    endpoint: str
    admitted: bool


class Controls:
    """Mutable runtime state beside the data: reset with `reset()`."""

    def __init__(self, config: SandboxSettings) -> None:
        self._config = config
        self.tokens: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.log: deque[RequestLog] = deque(maxlen=_LOG_MAX)
        self.statuses: dict[str, Counter[str]] = {}
        self.windows = [RateWindow(limit, period) for limit, period in self._config.windows()]
        self.token_lifetime_s: float = float(self._config.token_lifetime_s)

    # --- configuration -----------------------------------------------------------------------

    def configure(
        self,
        *,
        rate_limit: bool | None = None,
        rate_limit_windows: list[tuple[int, float]] | None = None,
        token_lifetime_s: float | None = None,
    ) -> None:
        if rate_limit is False:
            self.windows = []
        elif rate_limit_windows is not None:
            self.windows = [RateWindow(int(n), float(p)) for n, p in rate_limit_windows]
        elif rate_limit is True and not self.windows:
            self.windows = [
                RateWindow(limit, period)
                for limit, period in self._config.model_copy(update={"rate_limit": True}).windows()
            ]
        if token_lifetime_s is not None:
            self.token_lifetime_s = float(token_lifetime_s)

    def describe(self) -> dict[str, Any]:
        return {
            "rate_limit": bool(self.windows),
            "rate_limit_windows": [[w.limit, w.period] for w in self.windows],
            "token_lifetime_s": self.token_lifetime_s,
        }

    # --- faults ------------------------------------------------------------------------------

    def add_fault(self, spec: FaultSpec) -> Fault:
        fault = Fault(
            id=uuid.uuid4().hex[:12],
            spec=spec,
            remaining=spec.times,
            until=None if spec.duration_s is None else time.monotonic() + spec.duration_s,
        )
        self.faults.append(fault)
        return fault

    def take_fault(self, method: str, path: str, template: str) -> Fault | None:
        """The first live fault matching the call; counts it against `times`."""
        now = time.monotonic()
        self.faults = [
            f
            for f in self.faults
            if (f.remaining is None or f.remaining > 0) and (f.until is None or f.until > now)
        ]
        for fault in self.faults:
            if fault.matches(method, path, template):
                fault.hits += 1
                if fault.remaining is not None:
                    fault.remaining -= 1
                return fault
        return None

    # --- call counts -------------------------------------------------------------------------

    def count(self, key: str) -> None:
        self.calls[key] += 1

    def count_status(self, key: str, status: str) -> None:
        self.statuses.setdefault(key, Counter())[status] += 1

    # --- rate limiting -----------------------------------------------------------------------

    def admit(self, endpoint: str = "") -> float | None:
        """Record one API call; None if admitted, else the seconds to wait (429)."""
        now = time.monotonic()
        wait = self._admit(now)
        self.log.append(RequestLog(now, endpoint, wait is None))
        return wait

    def _admit(self, now: float) -> float | None:
        if not self.windows:
            return None
        wait = 0.0
        for window in self.windows:
            horizon = now - window.period
            while window.arrivals and window.arrivals[0] <= horizon:
                window.arrivals.popleft()
            if len(window.arrivals) >= window.limit:
                excess = len(window.arrivals) - window.limit
                wait = max(wait, window.arrivals[excess] - horizon)
        if wait > 0:
            return wait
        for window in self.windows:
            window.arrivals.append(now)
        return None

    def exceeded_message(self) -> str:
        # AspNetCoreRateLimit's wording, which Dastra's "500/min or 10000/10min" suggests [I].
        now = time.monotonic()
        for window in self.windows:
            recent = sum(1 for t in window.arrivals if t > now - window.period)
            if recent >= window.limit:
                return (
                    f"API calls quota exceeded! maximum admitted {window.limit} "
                    f"per {window.label()}."
                )
        return "API calls quota exceeded!"

    def rate_state(self) -> list[dict[str, Any]]:
        now = time.monotonic()
        return [
            {
                "period": window.label(),
                "limit": window.limit,
                "remaining": max(
                    0, window.limit - sum(1 for t in window.arrivals if t > now - window.period)
                ),
            }
            for window in self.windows
        ]

    # --- OAuth2 tokens -----------------------------------------------------------------------

    def issue_token(self) -> tuple[str, int]:
        token = secrets.token_urlsafe(32)
        lifetime = self.token_lifetime_s
        self.tokens[token] = time.monotonic() + lifetime
        now = time.monotonic()
        self.tokens = {t: exp for t, exp in self.tokens.items() if exp > now}
        return token, max(1, math.ceil(lifetime))

    def token_valid(self, token: str) -> bool:
        expiry = self.tokens.get(token)
        return expiry is not None and expiry > time.monotonic()

    def expire_tokens(self) -> int:
        count = len(self.tokens)
        self.tokens.clear()
        return count
