"""Prometheus metrics of the recipe runner, served with the agents' at /metrics.

Consumes nothing: the runner (`runner.py`), the run executor (`execution.py`) and the periodic
recipes (`schedules.py`) count into one `RecipeMetrics`. Produces the `dastra_recipe_*` series.

    metrics = RecipeMetrics(registry)
    metrics.runs.labels("new-request-dpo-task", "succeeded").inc()
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bus.metrics import role_registry

__all__ = ["RecipeMetrics"]


class RecipeMetrics:
    """Prometheus metrics of the recipe runner (served with the agents' at /metrics)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or role_registry()
        r = self.registry
        self.runs = Counter(
            "dastra_recipe_runs",
            "Recipe runs that ended: succeeded, failed, or skipped (already finished)",
            ["recipe", "status"],
            registry=r,
        )
        self.steps = Counter(
            "dastra_recipe_steps",
            "Recipe steps that ended: succeeded, failed or skipped (their `when` was false)",
            ["recipe", "step", "status"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "dastra_recipe_triggers_dead_lettered",
            "Trigger records written to the dead-letter topic by the recipe runner",
            ["recipe", "kind"],
            registry=r,
        )
        self.duration = Histogram(
            "dastra_recipe_run_duration_seconds",
            "From the start (or resumption) of a run to its end",
            ["recipe", "status"],
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.in_flight = Gauge(
            "dastra_recipe_triggers_in_flight",
            "Trigger records taken from Kafka and not finished",
            registry=r,
        )
        self.checks = Counter(
            "dastra_recipe_schedule_checks",
            "Periodic checks of scheduled recipes (ok, or error when Dastra failed)",
            ["recipe", "outcome"],
            registry=r,
        )
        self.leader = Gauge(
            "dastra_recipe_schedule_leader",
            "1 while this worker is its consumer group's schedule leader (it runs the periodic "
            "recipes), else 0",
            ["group"],
            registry=r,
        )
