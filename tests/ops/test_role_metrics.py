"""Every role's registry carries the standard collectors (`process_*`, `python_*`), and the
roles that call Dastra carry the Dastra client's metrics."""

from __future__ import annotations

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry

from bus.hooks.settings import HooksSettings
from bus.metrics import role_registry
from bus.settings import KafkaSettings
from consumers.hooks.dispatcher import HookDispatcher
from dastra.settings import DastraSettings
from producers.webhook.service import WebhookService
from producers.webhook.settings import WebhookSettings
from tests.ops.metrics_support import exported_names, role_registries

STANDARD = {
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "python_info",
    "python_gc_objects_collected_total",
}
DASTRA_CLIENT = {
    "dastra_client_requests_total",
    "dastra_client_request_duration_seconds_bucket",
    "dastra_client_retries_total",
    "dastra_client_limiter_wait_seconds_bucket",
}


@pytest.mark.parametrize("role", ["worker", "poller", "webhook", "hooks", "lag"])
def test_every_role_serves_the_process_and_python_metrics(role: str) -> None:
    names = exported_names(role_registries()[role])
    assert names >= STANDARD, STANDARD - names


@pytest.mark.parametrize("role", ["worker", "poller"])
def test_the_roles_that_call_dastra_serve_the_clients_metrics(role: str) -> None:
    names = exported_names(role_registries()[role])
    assert names >= DASTRA_CLIENT, DASTRA_CLIENT - names


def test_a_role_registry_is_never_the_global_one() -> None:
    registry = role_registry()
    assert registry is not prometheus_client.REGISTRY
    assert isinstance(registry, CollectorRegistry)
    assert exported_names(registry) >= STANDARD


def test_the_services_default_registries_are_role_registries() -> None:
    # Built as their CLI verbs build them (no registry passed); nothing is opened.
    kafka = KafkaSettings()
    webhook = WebhookService(kafka, WebhookSettings(), HooksSettings(), DastraSettings())
    hooks = HookDispatcher(kafka, HooksSettings())
    for registry in (webhook.registry, hooks.registry):
        assert exported_names(registry) >= STANDARD
