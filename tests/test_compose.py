"""docker-compose.yml cannot run here (no Docker engine); check what can be checked: every
service runs a real CLI verb of ours with the environment variables our settings read."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import typer
import yaml
from pydantic_settings import BaseSettings

from bus.localkafka import KAFKA_VERSION
from dastra_kafka.cli import app
from dastra_kafka.settings import Settings

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
        if "ports" not in service or name == "kafka":
            continue
        env = service.get("environment", {})
        hosts = {value for key, value in env.items() if key.endswith("_HOST")}
        assert "0.0.0.0" in hosts, f"{name} publishes ports but binds 127.0.0.1 in its container"
