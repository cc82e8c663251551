"""The webhook's command routes: `POST /v1/commands/{action}` for each of the six actions.

Consumes a command body (validated against its model in `bus/records/commands.py`) and an
optional `Idempotency-Key`. Produces the command CloudEvent on `dastra.commands.<action>.v1`
(through `WebhookService.produce_command`; with a key, through the Idempotency-Key claim on
`dastra.webhook-idempotency.v1`) and answers 202 once the broker acknowledged it; with
`?wait=N`, waits for its result on `dastra.command-results.v1` and answers 200 with the Dastra
object, or the error. An unknown action is a 404 naming the known ones.
"""

import time
import uuid
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse, Response
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from bus.producer import Delivered
from bus.records.commands import COMMAND_MODELS
from bus.topics import ACTIONS, command_topic
from bus.tracing import context_of, span
from producers.webhook.http import (
    body_doc,
    field_errors,
    fingerprint,
    json_body,
    read_body,
    result_response,
)
from producers.webhook.idempotency import (
    IdempotencyConflictError,
    IdempotencyInProgressError,
    scope_of,
)
from producers.webhook.models import CommandAccepted, Problem, Refused, problem
from producers.webhook.routes._responses import PROBLEM, UNAVAILABLE
from producers.webhook.service import WebhookService

__all__ = ["router"]

_log = structlog.get_logger(__name__)


def router(service: WebhookService, Token: Any) -> APIRouter:  # noqa: N803 - a type alias
    """One route per action, then the catch-all that names the known actions."""
    routes = APIRouter()
    settings = service.settings
    metrics = service.metrics
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
        routes.post(
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
                401: PROBLEM,
                404: {"model": Problem, "description": "With wait: Dastra found no such object"},
                409: {"model": Problem, "description": "Idempotency-Key in use, or a conflict"},
                413: {"model": Problem, "description": "Body too large"},
                422: {"model": Problem, "description": "Field errors"},
                502: {"model": Problem, "description": "With wait: the command failed"},
                503: UNAVAILABLE,
            },
        )(route)

    for action in ACTIONS:
        _command_route(action)

    @routes.post("/v1/commands/{action}", include_in_schema=False)
    async def unknown_action(action: str, matched: Token) -> Response:
        return problem(404, "unknown-action", f"unknown action; known: {', '.join(ACTIONS)}")

    return routes
