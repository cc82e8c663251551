"""The demo's stack.

Consumes the settings. Produces the Dastra the demo uses (the sandbox, started in this process,
or the configured API) checked by `dastra-kafka doctor` (`doctor`: a FAIL stops the demo); the
broker (the configured one, or a local one: `use_kafka`) with topics.yaml applied to it
(`apply_topics`, the topics as a table); and the supervised services' definitions (`services`):
the poller, the worker, the webhook, the hook dispatcher and the lag server, on free ports, with
their environment (`service_env`, and `privacy_setup` for a privacy mode).

    with use_kafka(settings, console, None) as (kafka, broker):
        for service in services(service_env(kafka, dastra), ports, token, {}):
            supervisor.start(service)
"""

from __future__ import annotations

import base64
import contextlib
import logging
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
from confluent_kafka.admin import AdminClient
from rich.console import Console
from rich.table import Table

from bus.admin import apply, describe, plan, retention_text
from bus.localkafka import LocalKafka
from bus.settings import KafkaSettings, PayloadMode, PrivacySettings
from bus.topics import TopicCatalogue
from dastra.sandbox import SandboxAdmin, SandboxServer
from dastra.settings import DastraSettings
from dastra_kafka.doctor import check, show
from dastra_kafka.settings import Settings
from dastra_kafka.supervisor import Service

__all__ = [
    "Ports",
    "apply_topics",
    "doctor",
    "privacy_setup",
    "service_env",
    "services",
    "use_dastra",
    "use_kafka",
]


_CLI = [sys.executable, "-m", "dastra_kafka"]


@contextlib.contextmanager
def use_kafka(
    settings: Settings, console: Console, data_dir: Path | None
) -> Iterator[tuple[KafkaSettings, LocalKafka | None]]:
    """The broker: the configured one, or a local one (on `data_dir` when given, which keeps
    its topics and port across a restart)."""
    if "bootstrap_servers" in settings.kafka.model_fields_set:
        console.print(f"Kafka: using [bold]{settings.kafka.bootstrap_servers}[/]")
        yield settings.kafka, None
        return
    with console.status("starting a local Apache Kafka broker (KRaft, one node)"):
        broker = LocalKafka(data_dir=data_dir, progress=lambda message: console.print(message))
        broker.start()
    try:
        console.print(f"Kafka: local broker at [bold]{broker.bootstrap_servers}[/]")
        yield (
            settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers}),
            broker,
        )
    finally:
        with console.status("stopping the broker"):
            broker.stop()


@contextlib.contextmanager
def use_dastra(
    settings: Settings, console: Console
) -> Iterator[tuple[DastraSettings, SandboxAdmin | None]]:
    if not settings.dastra.uses_sandbox:
        console.print(
            f"Dastra: using [bold]{settings.dastra.base_url}[/] (the demo only searches there)"
        )
        yield settings.dastra, None
        return
    config = settings.sandbox.model_copy(update={"port": 0})
    # The sandbox runs in this process: its access log would scroll through the live view.
    for name in ("uvicorn", "uvicorn.access", "uvicorn.error"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with SandboxServer(config) as sandbox:
        console.print(
            f"Dastra: sandbox at [bold]{sandbox.base_url}[/] (workspace {sandbox.workspace_id})"
        )
        yield sandbox.dastra_settings(), sandbox.admin


def service_env(kafka: KafkaSettings, dastra: DastraSettings) -> dict[str, str]:
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "SERVICE_LOG_JSON": "true",
    }
    if dastra.base_url:
        env["DASTRA_BASE_URL"] = dastra.base_url
        env["DASTRA_TOKEN_URL"] = dastra.token_url
    if dastra.api_key is not None:
        env["DASTRA_API_KEY"] = dastra.api_key.get_secret_value()
    if dastra.workspace_id is not None:
        env["DASTRA_WORKSPACE_ID"] = str(dastra.workspace_id)
    return env


def privacy_setup(
    settings: PrivacySettings, mode: PayloadMode
) -> tuple[dict[str, str], PrivacySettings]:
    """The services' PRIVACY_* environment for `--privacy mode`, and the settings the demo reads
    with: the configured keys, or keys made for this run (never printed)."""
    if mode == "full":
        return {}, settings
    master = (
        settings.master_key.get_secret_value()
        if settings.master_key is not None
        else base64.b64encode(secrets.token_bytes(32)).decode()
    )
    hash_key = (
        settings.hash_key.get_secret_value()
        if settings.hash_key is not None
        else secrets.token_urlsafe(32)
    )
    sealed = "encrypted" if mode == "encrypted" else "full"
    env = {
        "PRIVACY_MODE_RIGHTS_REQUESTS": mode,
        "PRIVACY_MODE_TASKS": mode,
        "PRIVACY_MODE_RESULTS": mode,
        "PRIVACY_MODE_COMMANDS": sealed,
        "PRIVACY_MODE_DEAD_LETTERS": sealed,
        "PRIVACY_MASTER_KEY": master,
        "PRIVACY_HASH_KEY": hash_key,
    }
    return env, PrivacySettings.model_validate(
        {**settings.model_dump(), **{k.removeprefix("PRIVACY_").lower(): v for k, v in env.items()}}
    )


@dataclass(frozen=True)
class Ports:
    worker: int
    webhook: int
    lag: int
    poller_metrics: int
    hooks_metrics: int
    studio: int


def _ok(url: str) -> bool:
    return httpx.get(url, timeout=2).status_code == 200


# The demo's hook subscriber listens on plain HTTP on loopback, which the SSRF guard refuses
# unless told otherwise (both where subscriptions are made and where deliveries are sent).
_LOOPBACK_HOOKS = {"HOOKS_ALLOW_NETWORKS": "127.0.0.0/8", "HOOKS_ALLOW_HTTP": "true"}


def services(
    base: dict[str, str], ports: Ports, token: str, recipes: dict[str, str]
) -> list[Service]:
    return [
        Service(
            "poller",
            [*_CLI, "poller", "--from", "now"],
            {**base, "POLLER_METRICS_PORT": str(ports.poller_metrics)},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.poller_metrics}/metrics"),
        ),
        Service(
            "worker",
            [*_CLI, "worker"],
            {**base, "WORKER_WEB_PORT": str(ports.worker), "RECIPES_STUDIO": "true", **recipes},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.worker}/ready"),
            ready_timeout_s=120,
        ),
        Service(
            "webhook",
            [*_CLI, "webhook"],
            {
                **base,
                **_LOOPBACK_HOOKS,
                "WEBHOOK_PORT": str(ports.webhook),
                "WEBHOOK_TOKENS": token,
            },
            ready=lambda: _ok(f"http://127.0.0.1:{ports.webhook}/readyz"),
        ),
        Service(
            "hooks",
            [*_CLI, "hooks"],
            {**base, **_LOOPBACK_HOOKS, "HOOKS_METRICS_PORT": str(ports.hooks_metrics)},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.hooks_metrics}/metrics"),
        ),
        Service(
            "studio",
            [*_CLI, "studio"],
            {**base, "STUDIO_PORT": str(ports.studio), "STUDIO_TOKENS": token},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.studio}/studio/"),
        ),
        Service(
            "lag",
            [*_CLI, "lag", "serve"],
            {**base, "LAG_PORT": str(ports.lag)},
            ready=lambda: _ok(f"http://127.0.0.1:{ports.lag}/healthz"),
        ),
    ]


def doctor(dastra: DastraSettings, console: Console) -> None:
    """`dastra-kafka doctor` against the Dastra the demo uses; a FAIL stops the demo."""
    watched = dastra.watched_workspaces()
    if not watched:
        raise RuntimeError("no workspace: set DASTRA_WORKSPACE_ID")
    with console.status("dastra-kafka doctor"):
        report = check(dastra, watched[0])
    show(report, console, title=f"dastra-kafka doctor: workspace {watched[0]}")
    if not report.ok:
        failed = ", ".join(f.name for f in report.findings if f.status == "FAIL")
        raise RuntimeError(f"the doctor found a FAIL ({failed}): see `dastra-kafka doctor`")


def apply_topics(kafka: KafkaSettings, catalogue: TopicCatalogue) -> Table:
    """Apply topics.yaml; the topics as the cluster now has them."""
    admin = AdminClient(kafka.confluent_config())
    apply(admin, plan(admin, catalogue, kafka.topic_prefix))
    states = describe(admin, [kafka.topic(spec.name) for spec in catalogue])
    table = Table(title=f"topics: {len(catalogue)} applied from {catalogue.path.name}")
    table.add_column("topic", overflow="fold")  # whole names, folded on a narrow terminal
    for column in ("partitions", "cleanup", "retention", "personal data"):
        table.add_column(column)
    for spec in catalogue:
        state = states.get(kafka.topic(spec.name))
        configs = state.configs if state else {}
        table.add_row(
            spec.name,
            str(state.partitions) if state else "[red]missing[/]",
            configs.get("cleanup.policy", ""),
            retention_text(configs.get("retention.ms")),
            "yes" if spec.personal_data else "",
        )
    return table
