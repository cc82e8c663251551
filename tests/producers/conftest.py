"""Fixtures of the webhook and hook tests: a trusted local CA, settings that admit loopback
subscribers, and a running webhook service on the test's topics."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr

from bus.hooks.settings import HooksSettings
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from dastra.settings import DastraSettings
from producers.webhook import WebhookService, create_app
from producers.webhook.settings import WebhookSettings
from tests.producers.webhook_support import ServerThread, TLSFiles, make_tls

TOKEN = "tok-alpha-0123456789"
OTHER_TOKEN = "tok-beta-9876543210"
DASTRA_KEY = "0b6f0c3e-5b0c-4a52-a1e7-3a0d3b1f0c11"
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128")]


@pytest.fixture(scope="session")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def hooks_settings(tls: TLSFiles) -> HooksSettings:
    """Loopback admitted, the test CA trusted, a short retry budget."""
    return HooksSettings(
        allow_networks=LOOPBACK,
        ca_file=tls.ca,
        timeout_s=2.0,
        connect_timeout_s=1.0,
        max_attempts=3,
        backoff_s=0.05,
        backoff_max_s=0.2,
        retry_deadline_s=30.0,
        concurrency=2,
    )


@pytest.fixture
def webhook_settings() -> WebhookSettings:
    return WebhookSettings(
        tokens=[SecretStr(TOKEN), SecretStr(OTHER_TOKEN)],
        kafka_timeout_s=3.0,
        retry_after_s=2,
        idempotency_lease_s=5.0,
        wait_max_s=10.0,
    )


@pytest.fixture
def webhook_dastra() -> DastraSettings:
    return DastraSettings(webhook_signing_key=SecretStr(DASTRA_KEY), workspace_id=101)


@dataclass
class Running:
    """A webhook process: its service, its server and an authenticated client."""

    service: WebhookService
    server: ServerThread
    client: httpx.Client

    @property
    def url(self) -> str:
        return self.server.url


def start_webhook(
    kafka: KafkaSettings,
    webhook: WebhookSettings,
    hooks: HooksSettings,
    dastra: DastraSettings,
) -> Running:
    service = WebhookService(kafka, webhook, hooks, dastra)  # its own role registry, as served
    server = ServerThread(create_app(service)).start()
    client = httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30
    )
    return Running(service, server, client)


def stop_webhook(running: Running) -> None:
    running.client.close()
    running.server.stop()


@pytest.fixture
def webhook(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    webhook_settings: WebhookSettings,
    hooks_settings: HooksSettings,
    webhook_dastra: DastraSettings,
) -> Iterator[Running]:
    running = start_webhook(kafka, webhook_settings, hooks_settings, webhook_dastra)
    yield running
    stop_webhook(running)


__all__ = ["DASTRA_KEY", "LOOPBACK", "OTHER_TOKEN", "TOKEN", "Running", "start_webhook"]
