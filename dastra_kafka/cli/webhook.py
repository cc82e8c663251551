"""`dastra-kafka webhook`: the HTTP API for Zapier and any HTTP client (commands, REST hooks,
Dastra's own webhooks), on SERVICE_HOST:WEBHOOK_PORT."""

from __future__ import annotations

import signal
from types import FrameType

import typer

from dastra_kafka.cli._common import EXIT_BAD_INPUT, EXIT_UNAVAILABLE, fail, settings_of
from dastra_kafka.settings import Settings
from dastra_kafka.tracing import traced

__all__ = ["register"]


def webhook(
    ctx: typer.Context,
    host: str | None = typer.Option(None, help="Listen address (default SERVICE_HOST)."),
    port: int | None = typer.Option(None, help="Port (default WEBHOOK_PORT)."),
) -> None:
    """Serve the webhook API (OpenAPI at /openapi.json, docs at /docs) until Ctrl-C/SIGTERM."""
    import uvicorn

    from bus.errors import KafkaAuthorizationError, TailerError
    from bus.privacy import PrivacyError
    from producers.webhook import WebhookService, create_app

    _Server = _server_class()  # noqa: N806 - a class
    settings = settings_of(ctx)
    if not settings.webhook.tokens:
        fail("no API token: set WEBHOOK_TOKENS (comma-separated or a JSON list)", EXIT_BAD_INPUT)
    try:
        service = WebhookService(
            settings.kafka,
            settings.webhook,
            settings.hooks,
            settings.dastra,
            privacy=settings.privacy,
        )
    except PrivacyError as exc:
        fail(str(exc), EXIT_BAD_INPUT)
    _check_access(settings)
    config = uvicorn.Config(
        create_app(service),
        host=host or settings.service.host,
        port=settings.webhook.port if port is None else port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )
    try:
        with traced(settings.tracing, "webhook"):
            _Server(config).run()
    except TailerError as exc:
        fail(f"Kafka is not reachable or topics are missing: {exc}", EXIT_UNAVAILABLE)
    except KafkaAuthorizationError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def _check_access(settings: Settings) -> None:
    """The topics the service tails at start-up: refused, they would end in a traceback from
    the server's lifespan; named here instead."""
    from confluent_kafka.admin import AdminClient

    from bus.admin import check_topic_access
    from bus.errors import KafkaAuthorizationError
    from bus.topics import COMMAND_RESULTS, HOOK_SUBSCRIPTIONS, WEBHOOK_IDEMPOTENCY

    kafka = settings.kafka
    tailed = (COMMAND_RESULTS, WEBHOOK_IDEMPOTENCY, HOOK_SUBSCRIPTIONS)
    try:
        check_topic_access(
            AdminClient(kafka.confluent_config()), {kafka.topic(t): "READ" for t in tailed}
        )
    except KafkaAuthorizationError as exc:
        fail(str(exc), EXIT_BAD_INPUT)


def _server_class() -> type:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # SIGTERM or Ctrl-C is the normal way to stop a service: exit code 0 after the
            # graceful shutdown, not uvicorn's re-raised signal.
            if self.should_exit and sig == signal.SIGINT:
                self.force_exit = True
            else:
                self.should_exit = True

    return Server


def register(app: typer.Typer) -> None:
    """Add this verb to the `dastra-kafka` command line."""
    app.command("webhook")(webhook)
