"""The Prometheus registry of one role's process. Consumes nothing; produces a registry that
already holds the standard collectors (`process_*`: CPU, memory, open files; `python_info`;
`python_gc_*`), to which the role adds its own metrics before serving it on /metrics.

    registry = role_registry()
    PollerMetrics(registry)
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector

__all__ = ["add_standard_collectors", "role_registry"]


def add_standard_collectors(registry: CollectorRegistry) -> CollectorRegistry:
    """Register the process, platform and garbage-collector collectors in `registry`."""
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def role_registry(*, auto_describe: bool = False) -> CollectorRegistry:
    """A new registry with the standard collectors (never the global default registry).

    registry = role_registry()"""
    return add_standard_collectors(CollectorRegistry(auto_describe=auto_describe))
