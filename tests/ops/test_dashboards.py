"""The Grafana dashboards of ops/grafana: one per role, each panel reading only metrics its role
exports (so a renamed metric cannot leave an empty panel), loadable by the provisioning of the
compose `monitoring` profile."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.ops.metrics_support import (
    PROMETHEUS_BUILTINS,
    exported_names,
    promql_metric_names,
    role_registries,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops" / "grafana"
ROLES = ["poller", "worker", "webhook", "hooks", "lag"]


def _dashboard(role: str) -> dict[str, Any]:
    document = json.loads((GRAFANA / f"dastra-kafka-{role}.json").read_text())
    assert isinstance(document, dict)
    return document


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _queries(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    for panel in _panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            yield f"panel {panel['title']!r}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            found = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            assert found, f"variable {variable['name']}: unexpected query {query!r}"
            yield f"variable {variable['name']!r}", found.group(1)


def test_there_is_one_dashboard_per_role_and_no_other() -> None:
    files = {path.name for path in GRAFANA.glob("*.json")}
    assert files == {f"dastra-kafka-{role}.json" for role in ROLES}
    uids = [_dashboard(role)["uid"] for role in ROLES]
    assert len(set(uids)) == len(uids)


@pytest.mark.parametrize("role", ROLES)
def test_every_panel_reads_metrics_its_role_exports(role: str) -> None:
    dashboard = _dashboard(role)
    exported = exported_names(role_registries()[role]) | PROMETHEUS_BUILTINS
    queries = list(_queries(dashboard))
    assert len(queries) >= 5
    for where, expr in queries:
        used = promql_metric_names(expr)
        assert used, f"{role}: {where} reads no metric: {expr!r}"
        assert used <= exported, f"{role}: {where} reads {sorted(used - exported)}"


@pytest.mark.parametrize("role", ROLES)
def test_every_panel_uses_the_datasource_variable(role: str) -> None:
    # Provisioned dashboards get no import-time ${DS_...} substitution: the variable picks the
    # default Prometheus data source instead.
    dashboard = _dashboard(role)
    names = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert "datasource" in names
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


@pytest.mark.parametrize("role", ["poller", "worker", "webhook", "hooks"])
def test_role_dashboards_show_the_process_metrics(role: str) -> None:
    exprs = " ".join(expr for _where, expr in _queries(_dashboard(role)))
    for name in ("process_cpu_seconds_total", "process_resident_memory_bytes"):
        assert name in exprs


def test_the_provisioning_loads_the_dashboards_and_the_prometheus_of_compose() -> None:
    provisioning = GRAFANA / "provisioning"
    [source] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "dastra-kafka.yml").read_text())[
        "providers"
    ]
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./ops/grafana:{provider['options']['path']}:ro" in mounts
    assert "./ops/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
