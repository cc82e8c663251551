"""The hook dispatcher's Prometheus metrics (served on HOOKS_METRICS_PORT): deliveries,
attempts, and per subscription its buffer and its lag on the event topics.

    metrics = HookMetrics(CollectorRegistry()); metrics.lag_events.labels(hook_id).set(12)
"""

from __future__ import annotations

import contextlib

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["HookMetrics"]


class HookMetrics:
    """Every metric of one dispatcher, in its own registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "dastra_hooks_deliveries",
            "Finished deliveries by outcome",
            ["event", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "dastra_hooks_attempts",
            "HTTP attempts by status class",
            ["status"],
            registry=registry,
        )
        self.latency = Histogram(
            "dastra_hooks_attempt_seconds",
            "Duration of one HTTP attempt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.buffered = Gauge(
            "dastra_hooks_buffered",
            "Events read ahead for a subscriber (waiting or in flight)",
            ["hook"],
            registry=registry,
        )
        self.lag_events = Gauge(
            "dastra_hooks_lag_events",
            "Records on the event topics behind a subscriber's position (its partitions here)",
            ["hook"],
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "dastra_hooks_lag_seconds",
            "Age of the oldest event not yet done for a subscriber (0 when caught up)",
            ["hook"],
            registry=registry,
        )
        self.subscriptions = Gauge(
            "dastra_hooks_subscriptions", "Known subscriptions", registry=registry
        )

    def forget(self, hook: str) -> None:
        """A subscription that is gone: its series end."""
        for gauge in (self.buffered, self.lag_events, self.lag_seconds):
            with contextlib.suppress(KeyError):
                gauge.remove(hook)
