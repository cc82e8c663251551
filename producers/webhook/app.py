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

This module builds the app and its routes (`create_app`); the rest of the package: `service`
(the resources one process owns), `results` (`?wait`), `models` (HTTP bodies and problems),
`http` (request plumbing), `idempotency` (Idempotency-Key claims) and `settings` (WEBHOOK_*).
The package re-exports `create_app`, `WebhookService` and the HTTP models lazily, so importing
`producers.webhook.settings` (as the Settings tree does) does not load FastAPI.

    service = WebhookService(settings.kafka, settings.webhook, settings.hooks, settings.dastra)
    app = create_app(service)
    uvicorn.run(app, host="127.0.0.1", port=settings.webhook.port)
"""

# No `from __future__ import annotations`: FastAPI must see the route signatures built inside
# create_app (their dependencies and limits are local names).

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import structlog
from fastapi import Depends, FastAPI, Header, HTTPException, Path, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from opentelemetry.trace import SpanKind
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from bus.errors import KafkaUnavailableError, RecordTooLargeError
from bus.hooks.egress import EgressRefusedError, resolve_target
from bus.hooks.signatures import verify_dastra_signature
from bus.producer import Delivered
from bus.records.commands import COMMAND_MODELS
from bus.records.poller import trigger_record
from bus.records.subscriptions import HOOK_EVENTS, HookEvent, HookSubscription
from bus.topics import ACTIONS, POLLER_TRIGGERS, command_topic
from bus.tracing import context_of, span
from dastra.apidocs import add_api_docs
from producers.webhook.http import (
    BodyLimit,
    Measure,
    body_doc,
    field_errors,
    fingerprint,
    json_body,
    read_body,
    result_response,
    token_id,
    workspaces_of,
)
from producers.webhook.idempotency import (
    IdempotencyConflictError,
    IdempotencyInProgressError,
    scope_of,
)
from producers.webhook.models import (
    CommandAccepted,
    DastraWebhookAck,
    Health,
    HookCreate,
    HookCreated,
    HookView,
    Me,
    Problem,
    Refused,
    problem,
)
from producers.webhook.service import WebhookService

__all__ = ["create_app"]

_log = structlog.get_logger(__name__)


_PROBLEM = {"model": Problem}
_UNAVAILABLE = {
    "model": Problem,
    "description": "Kafka did not acknowledge: nothing was written; retry after Retry-After",
    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
}
_AUTH_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "Missing or unknown token"},
}


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

    bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <token>")
    api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <token>")

    async def token(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)],
        key: Annotated[str | None, Security(api_key)],
    ) -> str:
        presented = credentials.credentials if credentials is not None else key
        matched = service.authenticate(presented)
        if matched is None:
            raise Refused(
                401,
                "unauthorized",
                "send a valid token as Authorization: Bearer <token> or X-API-Key: <token>",
                {"WWW-Authenticate": "Bearer"},
            )
        return matched

    Token = Annotated[str, Depends(token)]  # noqa: N806 - a type alias

    # --- probes --------------------------------------------------------------------------

    @app.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @app.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready"}},
        tags=["operations"],
    )
    async def readyz() -> Response:
        """Kafka answers and this replica's tables are loaded."""
        checks = {
            "kafka": await asyncio.to_thread(service.producer.probe, 2.0),
            "subscriptions": service.subscriptions.tailer.caught_up,
            "idempotency": service.idempotency.tailer.caught_up,
            "results": service.results.tailer.alive,
        }
        ready = all(checks.values())
        body = Health(status="ready" if ready else "not-ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/me", response_model=Me, responses=_AUTH_ERRORS, tags=["auth"])
    async def me(matched: Token) -> Me:
        """Who am I: Zapier's connection test."""
        return Me(token_id=token_id(matched), actions=list(ACTIONS), hook_events=list(HOOK_EVENTS))

    # --- commands ------------------------------------------------------------------------

    wait_max = settings.wait_max_s

    async def send_command(
        action: str, request: Request, matched: str, wait: float, idempotency_key: str | None
    ) -> Response:
        raw = await read_body(request, settings.max_body_bytes)
        data = json_body(raw)
        model = COMMAND_MODELS[action]
        try:
            command = model.model_validate(data)
        except ValidationError as exc:
            raise Refused(
                422, "invalid-command", "the command is invalid", field_errors=field_errors(exc)
            ) from None
        since_ms = int(time.time() * 1000)
        if idempotency_key is not None:
            scope = scope_of(matched, idempotency_key)

            async def produce(command_id: str) -> Delivered:
                return await service.produce_command(action, command, command_id)

            try:
                outcome = await service.idempotency.run(
                    scope, action, fingerprint(action, command, matched), produce
                )
            except IdempotencyConflictError as exc:
                raise Refused(422, "idempotency-key-reused", str(exc)) from None
            except IdempotencyInProgressError as exc:
                raise Refused(
                    409, "idempotency-key-in-progress", str(exc), {"Retry-After": "1"}
                ) from None
            accepted = CommandAccepted(
                command_id=outcome.command_id,
                action=action,
                topic=outcome.topic,
                partition=outcome.partition,
                offset=outcome.offset,
                replayed=outcome.replayed,
            )
            if outcome.replayed:
                metrics.replays.inc()
                since_ms = outcome.at_ms - 5000
        else:
            command_id = str(uuid.uuid4())
            delivered = await service.produce_command(action, command, command_id)
            accepted = CommandAccepted(
                command_id=command_id,
                action=action,
                topic=delivered.topic,
                partition=delivered.partition,
                offset=delivered.offset,
                replayed=False,
            )
        _log.info(
            "webhook.command_accepted",
            action=action,
            command_id=accepted.command_id,
            partition=accepted.partition,
            offset=accepted.offset,
            replayed=accepted.replayed,
        )
        headers = {"Command-Id": accepted.command_id}
        if accepted.replayed:
            headers["Idempotent-Replayed"] = "true"
        if wait > 0:
            result = await service.results.wait(accepted.command_id, wait, since_ms)
            if result is not None:
                metrics.waits.labels(result.status).inc()
                with span(
                    f"process {service.results.topic}",
                    kind=SpanKind.CONSUMER,
                    parent=context_of(service.results.trace_headers(accepted.command_id)),
                    attributes={
                        "messaging.system": "kafka",
                        "messaging.operation.type": "process",
                        "messaging.destination.name": service.results.topic,
                        "messaging.message.id": accepted.command_id,
                    },
                ):
                    return result_response(result, headers, await service.open_result(result))
            metrics.waits.labels("timeout").inc()
        return JSONResponse(accepted.model_dump(mode="json"), status_code=202, headers=headers)

    def _command_route(action: str) -> None:
        model = COMMAND_MODELS[action]

        async def route(
            request: Request,
            matched: Token,
            wait: Annotated[
                float,
                Query(
                    ge=0,
                    le=wait_max,
                    description="Seconds to wait for the result (200 with it); 202 on timeout",
                ),
            ] = 0,
            idempotency_key: Annotated[
                str | None,
                Header(
                    alias="Idempotency-Key",
                    min_length=1,
                    max_length=255,
                    description="Repeats with the same key get the first answer; no new record",
                ),
            ] = None,
        ) -> Response:
            return await send_command(action, request, matched, wait, idempotency_key)

        route.__name__ = f"command_{action.replace('-', '_')}"
        route.__doc__ = (
            f"{(model.__doc__ or '').strip()}\n\nProduces the command to "
            f"`{command_topic(action)}`; 202 once the broker acknowledged it. With `wait`, "
            "200 with the Dastra object (a search: a list, best match first) or an error."
        )
        app.post(
            f"/v1/commands/{action}",
            status_code=202,
            response_model=CommandAccepted,
            tags=["commands"],
            openapi_extra=body_doc(model.model_json_schema()),
            responses={
                200: {
                    "description": "With wait: the command succeeded; the Dastra object(s)",
                    "content": {
                        "application/json": {
                            "schema": {
                                "anyOf": [
                                    {"type": "object"},
                                    {"type": "array", "items": {"type": "object"}},
                                ]
                            }
                        }
                    },
                },
                400: {"model": Problem, "description": "Malformed JSON"},
                401: _PROBLEM,
                404: {"model": Problem, "description": "With wait: Dastra found no such object"},
                409: {"model": Problem, "description": "Idempotency-Key in use, or a conflict"},
                413: {"model": Problem, "description": "Body too large"},
                422: {"model": Problem, "description": "Field errors"},
                502: {"model": Problem, "description": "With wait: the command failed"},
                503: _UNAVAILABLE,
            },
        )(route)

    for action in ACTIONS:
        _command_route(action)

    @app.post("/v1/commands/{action}", include_in_schema=False)
    async def unknown_action(action: str, matched: Token) -> Response:
        return problem(404, "unknown-action", f"unknown action; known: {', '.join(ACTIONS)}")

    # --- REST hooks ------------------------------------------------------------------------

    HookId = Annotated[str, Path(pattern=r"^hook_[0-9a-f]{32}$", max_length=37)]  # noqa: N806

    @app.post(
        "/v1/hooks",
        status_code=201,
        response_model=HookCreated,
        tags=["hooks"],
        openapi_extra=body_doc(HookCreate.model_json_schema()),
        responses={
            400: {"model": Problem, "description": "Malformed JSON"},
            401: _PROBLEM,
            413: _PROBLEM,
            422: {"model": Problem, "description": "Invalid body, or a refused target URL"},
            503: _UNAVAILABLE,
        },
    )
    async def subscribe(request: Request, matched: Token) -> JSONResponse:
        """Subscribe a target URL to an event (Zapier's performSubscribe). The URL must be
        https and resolve to public addresses. The answer carries the signing secret."""
        raw = await read_body(request, settings.max_body_bytes)
        try:
            wanted = HookCreate.model_validate(json_body(raw))
        except ValidationError as exc:
            return problem(
                422, "invalid-hook", "the subscription is invalid", field_errors=field_errors(exc)
            )
        try:
            await resolve_target(wanted.target_url, service.hooks)
        except EgressRefusedError as exc:
            return problem(
                422,
                "target-refused",
                "the target URL is refused",
                field_errors={"target_url": [str(exc)]},
            )
        subscription = HookSubscription.new(
            event=wanted.event, target_url=wanted.target_url, workspace_id=wanted.workspace_id
        )
        await service.producer.produce(
            service.subscriptions.topic,
            key=subscription.id.encode(),
            value=subscription.model_dump_json().encode(),
        )
        service.subscriptions.put(subscription.id, subscription)
        _log.info("webhook.hook_subscribed", hook=subscription.id, hook_event=subscription.event)
        created = HookCreated(
            id=subscription.id,
            event=subscription.event,
            target_url=subscription.target_url,
            workspace_id=subscription.workspace_id,
            created_at=subscription.created_at,
            secret=subscription.secret.get_secret_value(),
        )
        return JSONResponse(created.model_dump(mode="json"), status_code=201)

    @app.get("/v1/hooks", response_model=list[HookView], responses=_AUTH_ERRORS, tags=["hooks"])
    async def list_hooks(matched: Token) -> list[HookView]:
        """Every subscription (without secrets)."""
        return [
            HookView(
                id=s.id,
                event=s.event,
                target_url=s.target_url,
                workspace_id=s.workspace_id,
                created_at=s.created_at,
            )
            for s in service.subscriptions.all()
        ]

    @app.delete(
        "/v1/hooks/{hook_id}",
        status_code=204,
        response_class=Response,
        tags=["hooks"],
        responses={401: _PROBLEM, 404: _PROBLEM, 422: _PROBLEM, 503: _UNAVAILABLE},
    )
    async def unsubscribe(hook_id: HookId, matched: Token) -> Response:
        """Remove a subscription (Zapier's performUnsubscribe)."""
        if service.subscriptions.get(hook_id) is None:
            return problem(404, "unknown-hook", "no such subscription")
        await service.producer.produce(
            service.subscriptions.topic, key=hook_id.encode(), value=None
        )
        service.subscriptions.put(hook_id, None)
        _log.info("webhook.hook_unsubscribed", hook=hook_id)
        return Response(status_code=204)

    @app.get(
        "/v1/hooks/samples/{event}",
        response_model=list[dict[str, Any]],
        tags=["hooks"],
        responses={401: _PROBLEM, 422: _PROBLEM, 503: _UNAVAILABLE},
    )
    async def samples(
        event: HookEvent,
        matched: Token,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> list[dict[str, Any]]:
        """Recent payloads of an event, newest first, exactly as subscribers receive them
        (Zapier's performList)."""
        return await service.samples(event, limit)

    # --- Dastra's own webhooks ---------------------------------------------------------------

    @app.post(
        "/v1/dastra/webhook",
        response_model=DastraWebhookAck,
        tags=["dastra"],
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
        responses={
            400: _PROBLEM,
            401: {"model": Problem, "description": "Missing or wrong Dastra-Signature"},
            404: {"model": Problem, "description": "No DASTRA_WEBHOOK_SIGNING_KEY configured"},
            413: _PROBLEM,
            422: _PROBLEM,
        },
    )
    async def dastra_webhook(
        request: Request,
        signature: Annotated[str | None, Header(alias="Dastra-Signature")] = None,
        workspace_id: Annotated[
            int | None,
            Query(alias="workspaceId", ge=1, description="The workspace this webhook is for"),
        ] = None,
    ) -> DastraWebhookAck:
        """A Dastra webhook (signed with `Dastra-Signature`): poll the workspace now. The push is
        only a nudge: its body is never published; the poller re-reads through the API, so its
        exactly-once cursor stays the only producer of events and its cycles the safety net
        (Dastra never replays a delivery)."""
        keys = service.dastra.webhook_keys()
        if not keys:
            raise Refused(404, "not-configured", "DASTRA_WEBHOOK_SIGNING_KEY is not set")
        raw = await read_body(request, settings.max_body_bytes)
        if not signature:
            raise Refused(
                401,
                "missing-signature",
                "no Dastra-Signature header: Dastra signs every delivery of a webhook "
                "registered with POST /v1/WebHookUrls",
            )
        if not any(verify_dastra_signature(k.get_secret_value(), raw, signature) for k in keys):
            raise Refused(
                401,
                "bad-signature",
                "the Dastra-Signature does not match the body: DASTRA_WEBHOOK_SIGNING_KEY (or one "
                "of DASTRA_WEBHOOK_SIGNING_KEYS) must be the webhook's signatureKey "
                "(GET /v1/WebHookUrls/{id} in Dastra), and the body must reach us unchanged",
            )
        body = json_body(raw)
        workspaces = workspaces_of(body, workspace_id, service.dastra)
        if not workspaces:
            raise Refused(
                422,
                "no-workspace",
                "no workspace: add ?workspaceId= to the webhook URL or set DASTRA_WORKSPACE_ID",
            )
        event_name = body.get("eventType") if isinstance(body, dict) else None
        reason = f"dastra-webhook:{event_name}" if isinstance(event_name, str) else "dastra-webhook"
        try:
            for ws in workspaces:
                key_bytes, value = trigger_record(ws, reason[:100])
                await service.producer.produce(
                    service.kafka.topic(POLLER_TRIGGERS), key=key_bytes, value=value
                )
        except KafkaUnavailableError:
            # Dastra blocks a webhook after more than 5 errors and never replays: a 503 here
            # would cost the push for good, a lost nudge only costs the wait for the next cycle.
            _log.warning("webhook.dastra_webhook_untriggered", workspaces=workspaces)
            return DastraWebhookAck(workspaces=workspaces, triggered=False)
        _log.info("webhook.dastra_webhook", workspaces=workspaces)
        return DastraWebhookAck(workspaces=workspaces)

    return app
