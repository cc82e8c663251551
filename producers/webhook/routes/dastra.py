"""The route for Dastra's own webhooks: `POST /v1/dastra/webhook`.

Consumes a delivery signed with `Dastra-Signature` (checked against DASTRA_WEBHOOK_SIGNING_KEY or
one of DASTRA_WEBHOOK_SIGNING_KEYS) and produces one poll trigger per workspace on
`dastra.poller-triggers.v1`. The body itself is never published: the poller re-reads through the
API, so its exactly-once cursor stays the only producer of events.
"""

from typing import Annotated

import structlog
from fastapi import APIRouter, Header, Query, Request

from bus.errors import KafkaUnavailableError
from bus.hooks.signatures import verify_dastra_signature
from bus.records.poller import trigger_record
from bus.topics import POLLER_TRIGGERS
from producers.webhook.http import json_body, read_body, workspaces_of
from producers.webhook.models import DastraWebhookAck, Problem, Refused
from producers.webhook.routes._responses import PROBLEM
from producers.webhook.service import WebhookService

__all__ = ["router"]

_log = structlog.get_logger(__name__)


def router(service: WebhookService) -> APIRouter:
    """The signed push from Dastra, which nudges the poller."""
    routes = APIRouter()
    settings = service.settings

    @routes.post(
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
            400: PROBLEM,
            401: {"model": Problem, "description": "Missing or wrong Dastra-Signature"},
            404: {"model": Problem, "description": "No DASTRA_WEBHOOK_SIGNING_KEY configured"},
            413: PROBLEM,
            422: PROBLEM,
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

    return routes
