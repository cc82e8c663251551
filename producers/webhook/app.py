"""Webhook service (`dastra-kafka webhook`): the HTTP face of the bus for Zapier and any client.

Consumes HTTP requests: commands (`POST /v1/commands/{action}`), REST hook management
(`/v1/hooks`), Dastra's own webhooks (`POST /v1/dastra/webhook`). Produces, each acknowledged by
the broker (`acks=all`, idempotent producer) before any 2xx answer:

- a CloudEvent (binary mode, `ce_type` `eu.dastra.command.<action>`, `ce_id` = the command id,
  key = the command id, or for actor commands the actor's pseudonymous identity
  `actor:<sha256>` so that commands for one actor share a partition) on
  `dastra.commands.<action>.v1`;
- subscriptions and tombstones on the compacted `dastra.hook-subscriptions.v1`;
- Idempotency-Key claims and answers on `dastra.webhook-idempotency.v1`;
- poll triggers on `dastra.poller-triggers.v1`.

With PRIVACY_MODE_COMMANDS=encrypted the personal fields of each command are encrypted with the
key of its data subject (`bus/privacy/`), whose key records go to `dastra.privacy-keys.v1`
first; with PRIVACY_MASTER_KEY, encrypted results (`?wait`) and samples are decrypted.

Also reads: `dastra.command-results.v1` from its end (one tailer per process) for `?wait=N`,
`dastra.hook-subscriptions.v1`, `dastra.webhook-idempotency.v1` and `dastra.privacy-keys.v1`
from the beginning (every replica holds the same tables), and the event topics' newest records
for hook samples.
Kafka unavailable: 503 with Retry-After and nothing written. Logs carry ids, never bodies,
names, e-mails, target URLs or secrets. Traces (`bus/tracing.py`): FastAPI's SERVER span per
request; each command record is sent in a child `send` span and carries its trace context as
`ce_traceparent`; a `?wait` answer is a `process` span continuing the result record's trace.

This module builds the app (`create_app`): its middleware, its problem answers for errors, and
its routers, one per concern in `routes/` (probes, commands, hooks, Dastra's push). The rest of
the package: `service` (the resources one process owns), `results` (`?wait`), `models` (HTTP
bodies and problems), `http` (request plumbing), `idempotency` (Idempotency-Key claims) and
`settings` (WEBHOOK_*).
The package re-exports `create_app`, `WebhookService` and the HTTP models lazily, so importing
`producers.webhook.settings` (as the Settings tree does) does not load FastAPI.

    service = WebhookService(settings.kafka, settings.webhook, settings.hooks, settings.dastra)
    app = create_app(service)
    uvicorn.run(app, host="127.0.0.1", port=settings.webhook.port)
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from bus.errors import KafkaUnavailableError, RecordTooLargeError
from dastra.apidocs import add_api_docs
from producers.webhook.http import BodyLimit, Measure
from producers.webhook.models import Refused, problem
from producers.webhook.routes import commands, dastra, hooks, probes
from producers.webhook.routes.auth import token_dependency
from producers.webhook.service import WebhookService

__all__ = ["create_app"]

_log = structlog.get_logger(__name__)


# --- the app -------------------------------------------------------------------------------------


def create_app(service: WebhookService) -> FastAPI:
    """The FastAPI app of one webhook process; its lifespan opens and closes `service`."""
    settings = service.settings

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = FastAPI(
        title="dastra-kafka webhook",
        version="1.0.0",
        description=(
            "Send Dastra commands to Kafka, get results synchronously with ?wait, and "
            "subscribe REST hooks to Dastra events (Zapier-compatible)."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # FastAPI's own OpenTelemetry: one SERVER span per request (method, route, status,
        # the caller's `traceparent` continued) when the entry point installed an SDK; no
        # per-dependency spans, no OTel logs (they would quote a refused body's values), no
        # OTel metrics (Prometheus has them), no exporter of its own (`dastra_kafka.tracing`).
        telemetry={
            "operation_spans": False,
            "logs": False,
            "metrics": False,
            "auto_configure": False,
        },
    )
    add_api_docs(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    metrics = service.metrics
    app.add_middleware(Measure, metrics=metrics)

    @app.exception_handler(Refused)
    async def _refused(_request: Request, exc: Refused) -> JSONResponse:
        return exc.response

    @app.exception_handler(HTTPException)
    async def _http_error(_request: Request, exc: HTTPException) -> JSONResponse:
        return problem(exc.status_code, "http-error", str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors: dict[str, list[str]] = {}
        for error in exc.errors():
            path = ".".join(str(part) for part in error.get("loc", ())) or "(request)"
            errors.setdefault(path, []).append(str(error.get("msg", "invalid")))
        return problem(422, "invalid-request", "the request is invalid", field_errors=errors)

    @app.exception_handler(KafkaUnavailableError)
    async def _unavailable(_request: Request, exc: KafkaUnavailableError) -> JSONResponse:
        metrics.unavailable.inc()
        _log.warning("webhook.kafka_unavailable", reason=str(exc)[:200])
        return problem(
            503,
            "kafka-unavailable",
            "Kafka did not acknowledge; nothing was written. Retry later.",
            {"Retry-After": str(settings.retry_after_s)},
        )

    @app.exception_handler(RecordTooLargeError)
    async def _too_large(_request: Request, exc: RecordTooLargeError) -> JSONResponse:
        _log.warning("webhook.record_too_large", reason=str(exc)[:200])
        return problem(
            413,
            "too-large",
            "the command's Kafka record is larger than the command topic accepts "
            f"({settings.max_record_bytes} bytes with its envelope; an encrypted command grows "
            "by about a third); nothing was written. Send a smaller body.",
        )

    token = token_dependency(service)
    app.include_router(probes.router(service, token))
    app.include_router(commands.router(service, token))
    app.include_router(hooks.router(service, token))
    app.include_router(dastra.router(service))
    return app
