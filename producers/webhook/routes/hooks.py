"""The webhook's REST hook routes (Zapier's performSubscribe, performUnsubscribe, performList).

`POST /v1/hooks` checks the target URL (https, public addresses: `bus/hooks/egress.py`) and
produces the subscription to the compacted `dastra.hook-subscriptions.v1` (the dispatcher in
`consumers/hooks.py` delivers from it); `DELETE /v1/hooks/{id}` produces its tombstone;
`GET /v1/hooks` lists this replica's table (without secrets); `GET /v1/hooks/samples/{event}`
reads the newest records of the event's topic, as subscribers receive them.
"""

from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError

from bus.hooks.egress import EgressRefusedError, resolve_target
from bus.records.subscriptions import HookEvent, HookSubscription
from producers.webhook.http import body_doc, field_errors, json_body, read_body
from producers.webhook.models import HookCreate, HookCreated, HookView, Problem, problem
from producers.webhook.routes._responses import AUTH_ERRORS, PROBLEM, UNAVAILABLE
from producers.webhook.service import WebhookService

__all__ = ["router"]

_log = structlog.get_logger(__name__)


def router(service: WebhookService, Token: Any) -> APIRouter:  # noqa: N803 - a type alias
    """Subscribe, list, unsubscribe and samples."""
    routes = APIRouter()
    settings = service.settings

    HookId = Annotated[str, Path(pattern=r"^hook_[0-9a-f]{32}$", max_length=37)]  # noqa: N806

    @routes.post(
        "/v1/hooks",
        status_code=201,
        response_model=HookCreated,
        tags=["hooks"],
        openapi_extra=body_doc(HookCreate.model_json_schema()),
        responses={
            400: {"model": Problem, "description": "Malformed JSON"},
            401: PROBLEM,
            413: PROBLEM,
            422: {"model": Problem, "description": "Invalid body, or a refused target URL"},
            503: UNAVAILABLE,
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

    @routes.get("/v1/hooks", response_model=list[HookView], responses=AUTH_ERRORS, tags=["hooks"])
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

    @routes.delete(
        "/v1/hooks/{hook_id}",
        status_code=204,
        response_class=Response,
        tags=["hooks"],
        responses={401: PROBLEM, 404: PROBLEM, 422: PROBLEM, 503: UNAVAILABLE},
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

    @routes.get(
        "/v1/hooks/samples/{event}",
        response_model=list[dict[str, Any]],
        tags=["hooks"],
        responses={401: PROBLEM, 422: PROBLEM, 503: UNAVAILABLE},
    )
    async def samples(
        event: HookEvent,
        matched: Token,
        limit: Annotated[int, Query(ge=1, le=100)] = 10,
    ) -> list[dict[str, Any]]:
        """Recent payloads of an event, newest first, exactly as subscribers receive them
        (Zapier's performList)."""
        return await service.samples(event, limit)

    return routes
