"""Prometheus metrics of the Dastra client, in a registry its owner passes (never the global
default one). Consumes what `DastraClient` observes of each HTTP attempt. Produces:

- `dastra_client_requests_total{endpoint, method, status}`: attempts by HTTP status, or the
  failure's kind (`timeout`, `connection`) when no response came;
- `dastra_client_request_duration_seconds{endpoint, method}`: from sending to the response;
- `dastra_client_retries_total{endpoint, method, kind}`: attempts retried after a retryable
  failure (`rate_limited` for a 429, `server_error`, `timeout`, `connection`), by the client or
  by a caller that owns the retry policy (the worker's dispatcher);
- `dastra_client_limiter_wait_seconds{endpoint}`: time spent waiting for a rate-limiter slot,
  the bridge's main saturation signal;
- `dastra_client_budget_used_ratio{window, of}`: the share of each rate window (`60s`, `600s`)
  this process used, of the API key's whole limit (`of="key"`: the poller's idle polling of
  all its workspaces is one number) and of this process's part of it (`of="process"`).

`endpoint` is the path's template (`/v1/ws/{ws}/Tasks/{id}`): ids become placeholders and any
segment the client does not call by name becomes `{value}`, so no personal data reaches a label.

    metrics = DastraMetrics(registry)
    async with DastraClient(settings.dastra, metrics=metrics) as dastra: ...
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from dastra.errors import DastraError

if TYPE_CHECKING:
    from dastra.ratelimit import RateLimiter

__all__ = ["DastraMetrics", "endpoint_template"]

# Every fixed path segment of the Dastra API the client (and `dastra doctor`) calls.
_KNOWN_SEGMENTS: Final = frozenset(
    {
        "me",
        "v1",
        "ws",
        "WorkSpaces",
        "TenantUsers",
        "Areas",
        "DataProcessings",
        "DataSubjectRequests",
        "Tasks",
        "Actors",
        "recipients",
        "batch",
        "rate-limiting-state",
    }
)
_UUID = re.compile(r"^[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}$")


def endpoint_template(path: str) -> str:
    """The path with ids and unknown segments replaced by placeholders (query dropped).

    endpoint_template("/v1/ws/12/Tasks/345") == "/v1/ws/{ws}/Tasks/{id}"
    """
    path = path.split("?", 1)[0].split("#", 1)[0]
    parts: list[str] = []
    previous = ""
    for segment in path.strip("/").split("/"):
        if not segment:
            continue
        if segment in _KNOWN_SEGMENTS:
            parts.append(segment)
        elif segment.isdigit():
            parts.append("{ws}" if previous == "ws" else "{id}")
        elif _UUID.match(segment):
            parts.append("{uuid}")
        else:
            parts.append("{value}")
        previous = segment
    return "/" + "/".join(parts)


class DastraMetrics:
    """The client's metrics in `registry`; share one instance between the clients of a role
    (a registry refuses a second registration of the same names)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "dastra_client_requests",
            "HTTP attempts to Dastra by endpoint template, method and status (or failure kind)",
            ["endpoint", "method", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "dastra_client_request_duration_seconds",
            "Duration of one HTTP attempt to Dastra, from sending to the response",
            ["endpoint", "method"],
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
            registry=registry,
        )
        self.retries = Counter(
            "dastra_client_retries",
            "Attempts to Dastra retried after a retryable failure, by failure kind",
            ["endpoint", "method", "kind"],
            registry=registry,
        )
        self.limiter_wait = Histogram(
            "dastra_client_limiter_wait_seconds",
            "Time an attempt waited for a slot of the client-side rate limiter",
            ["endpoint"],
            buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
            registry=registry,
        )
        self.budget_used = Gauge(
            "dastra_client_budget_used_ratio",
            "Share of a Dastra rate window this process used (requests that ended within the "
            "window, plus those in flight), of the API key's whole limit (of=key) and of this "
            "process's part of it (of=process, DASTRA_BUDGET_SHARES); read at scrape time",
            ["window", "of"],
            registry=registry,
        )

    def watch_budget(self, limiter: RateLimiter, key_windows: list[tuple[int, float]]) -> None:
        """Report `limiter`'s use against its own limits and against the key's `key_windows`
        (matched by period) in `dastra_client_budget_used_ratio`, computed at each scrape."""
        key_limits = {period: limit for limit, period in key_windows}
        for index, (_count, own, period) in enumerate(limiter.used()):
            window = f"{period:g}s"
            of_key = key_limits.get(period, own)
            self.budget_used.labels(window, "process").set_function(_share(limiter, index, own))
            self.budget_used.labels(window, "key").set_function(_share(limiter, index, of_key))

    def attempt(
        self, endpoint: str, method: str, status: str, *, waited_s: float, took_s: float
    ) -> None:
        """One finished attempt (`status`: the HTTP status, or the failure kind)."""
        self.requests.labels(endpoint, method, status).inc()
        self.duration.labels(endpoint, method).observe(took_s)
        self.limiter_wait.labels(endpoint).observe(waited_s)

    def retried(self, error: DastraError) -> None:
        """One attempt that failed with `error` is retried (by the client, or by a caller that
        owns its retry policy, like the worker's dispatcher)."""
        endpoint = endpoint_template(error.path) if error.path else "unknown"
        self.retries.labels(endpoint, error.method or "unknown", error.kind).inc()


def _share(limiter: RateLimiter, index: int, limit: int) -> Callable[[], float]:
    """The share of `limit` that the `index`-th window of `limiter` holds now."""

    def share() -> float:
        return limiter.used()[index][0] / limit

    return share
