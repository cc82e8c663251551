"""What the roles export and what PromQL refers to: the metric names each role's registry
serves on /metrics, built from the roles' own metric classes, and the metric names a PromQL
expression (an alert rule, a dashboard panel) reads."""

from __future__ import annotations

import re

from faust.sensors.prometheus import FaustMetrics
from prometheus_client import CollectorRegistry

from bus.metrics import role_registry
from bus.settings import KafkaSettings
from consumers.dispatcher import AgentMetrics
from consumers.hooks.metrics import HookMetrics
from consumers.lag import LagMonitor
from consumers.lag.model import LagSnapshot
from consumers.lag.settings import LagSettings
from consumers.lag.web import create_app
from consumers.recipes.metrics import RecipeMetrics
from dastra.metrics import DastraMetrics
from producers.poller.workspace import PollerMetrics
from producers.webhook.service import WebhookMetrics

__all__ = ["PROMETHEUS_BUILTINS", "exported_names", "promql_metric_names", "role_registries"]

# Series Prometheus itself writes for every target.
PROMETHEUS_BUILTINS = frozenset({"up", "scrape_duration_seconds", "scrape_samples_scraped"})

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}


def role_registries() -> dict[str, CollectorRegistry]:
    """One registry per role, filled the way the role fills the one its /metrics serves."""
    worker = AgentMetrics().registry  # with the Dastra client's metrics
    RecipeMetrics(worker)
    FaustMetrics.create(worker, "faust")  # Faust's sensors, as consumers/app.py adds them
    poller = role_registry()  # as `dastra-kafka poller` builds it
    PollerMetrics(poller)
    DastraMetrics(poller)
    webhook = role_registry()
    WebhookMetrics(webhook)
    hooks = role_registry()
    HookMetrics(hooks)
    app = create_app(LagMonitor(KafkaSettings(), LagSettings()), LagSettings())
    # The lag families exist once a refresh succeeded: an empty one is enough for their names.
    app.state.service.snapshot = LagSnapshot(
        cluster="local", taken_at=0.0, poll_ms=1.0, selection="test", groups=()
    )
    lag: CollectorRegistry = app.state.registry
    return {"worker": worker, "poller": poller, "webhook": webhook, "hooks": hooks, "lag": lag}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The sample names `registry` can serve, whether or not a labelled child exists yet."""
    names: set[str] = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "by", "without", "on", "ignoring", "group_left",
     "group_right", "offset", "inf", "nan", "atan2"}
)  # fmt: skip


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, keywords, label names and
    Grafana variables left out).

    promql_metric_names('sum by (job) (rate(x_total{a="b"}[5m]))') == {"x_total"}"""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\boffset\s+-?\S+", " ", text)
    names = set()
    for match in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group() in _KEYWORDS:
            continue
        names.add(match.group())
    return names
