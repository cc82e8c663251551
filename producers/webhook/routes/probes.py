"""The webhook's operational routes: `/healthz` (up), `/readyz` (Kafka answers and the tables
are loaded), `/metrics` (Prometheus) and `/v1/me` (Zapier's connection test). Read-only."""

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from bus.records.subscriptions import HOOK_EVENTS
from bus.topics import ACTIONS
from producers.webhook.http import token_id
from producers.webhook.models import Health, Me
from producers.webhook.routes._responses import AUTH_ERRORS
from producers.webhook.service import WebhookService

__all__ = ["router"]


def router(service: WebhookService, Token: Any) -> APIRouter:  # noqa: N803 - a type alias
    """The probes, metrics and `/v1/me` of one webhook process."""
    routes = APIRouter()

    @routes.get("/healthz", response_model=Health, tags=["operations"])
    async def healthz() -> Health:
        """The process is up."""
        return Health(status="ok")

    @routes.get(
        "/readyz",
        response_model=Health,
        responses={503: {"model": Health, "description": "Not ready"}},
        tags=["operations"],
    )
    async def readyz() -> Response:
        """Kafka answers and this replica's tables are loaded."""
        checks = {
            "kafka": await asyncio.to_thread(service.producer.probe, 2.0),
            # Loaded, and still read (a tailer whose thread ended would answer nothing more).
            "subscriptions": service.subscriptions.tailer.caught_up
            and service.subscriptions.tailer.alive,
            "idempotency": service.idempotency.tailer.caught_up
            and service.idempotency.tailer.alive,
            "results": service.results.tailer.alive,
        }
        ready = all(checks.values())
        body = Health(status="ready" if ready else "not-ready", checks=checks)
        return JSONResponse(body.model_dump(), status_code=200 if ready else 503)

    @routes.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def prometheus() -> Response:
        """Prometheus metrics."""
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)

    @routes.get("/v1/me", response_model=Me, responses=AUTH_ERRORS, tags=["auth"])
    async def me(matched: Token) -> Me:
        """Who am I: Zapier's connection test."""
        return Me(token_id=token_id(matched), actions=list(ACTIONS), hook_events=list(HOOK_EVENTS))

    return routes
