"""ops/prometheus/alerts.yml: valid for promtool, every rule fired by a case of
alerts_test.yml, and every metric a rule reads exported by some role (a renamed metric cannot
silently blind an alert)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tests.ops.metrics_support import (
    PROMETHEUS_BUILTINS,
    exported_names,
    promql_metric_names,
    role_registries,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "alerts_test.yml"


def _promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is missing: `make promtool` installs Debian's prometheus package"
    return found


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _promtool_run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    result = _promtool_run("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    result = _promtool_run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_case_that_fires_it() -> None:
    cases = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    fired = {
        check["alertname"]
        for case in cases
        for check in case.get("alert_rule_test", [])
        if check.get("exp_alerts")
    }
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    assert alerts - fired == set(), "alerts without a firing test case"


def test_the_name_extraction_finds_metrics_and_nothing_else() -> None:
    expr = (
        'sum by (job, instance) (increase(a_total{x="rate(b)"}[15m]) > 0 or (c unless c offset'
        ' 15m)) / on (job) group_left (k) d_bucket{le="1e3"} > 1e3 and time() - e > 300'
    )
    assert promql_metric_names(expr) == {"a_total", "c", "d_bucket", "e"}


def test_every_metric_an_alert_reads_is_exported_by_a_role() -> None:
    exported = set().union(*(exported_names(r) for r in role_registries().values()))
    for rule in _rules():
        used = promql_metric_names(rule["expr"])
        assert used, f"{rule['alert']}: no metric found in {rule['expr']!r}"
        unknown = used - exported - PROMETHEUS_BUILTINS
        assert not unknown, f"{rule['alert']} reads metrics no role exports: {sorted(unknown)}"


def test_promtool_accepts_the_prometheus_configuration_and_its_rule_files() -> None:
    config = ROOT / "ops" / "prometheus" / "prometheus.yml"
    result = _promtool_run("check", "config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_the_readme_lists_every_alert() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [rule["alert"] for rule in _rules() if f"`{rule['alert']}`" not in readme]
    assert not missing, f"alerts the README's Operators section does not list: {missing}"
