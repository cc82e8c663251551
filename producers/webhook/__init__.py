"""Webhook service (`dastra-kafka webhook`): the HTTP face of the bus for Zapier and any client.

Consumes HTTP requests (commands, REST hook management, Dastra's own webhooks) and produces
command CloudEvents, subscriptions, Idempotency-Key records and poll triggers: `app` builds the
FastAPI app (`create_app`) from the routers in `routes/`, whose modules say what each route reads
and writes. The rest of the package: `service` (the resources one process owns), `results`
(`?wait`), `models` (HTTP bodies and problems), `http` (request plumbing), `idempotency`
(Idempotency-Key claims) and `settings` (WEBHOOK_*).

This package re-exports the names below and imports their modules on first use, so importing a
submodule that needs no web framework (`producers.webhook.settings`, read by every CLI verb
through the Settings tree) does not load FastAPI.

    from producers.webhook import WebhookService, create_app
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producers.webhook.app import create_app
    from producers.webhook.models import (
        CommandAccepted,
        HookCreate,
        HookCreated,
        HookView,
        Problem,
    )
    from producers.webhook.service import (
        COMMAND_EVENT_SOURCE,
        WebhookService,
        command_event_type,
    )

__all__ = [
    "COMMAND_EVENT_SOURCE",
    "CommandAccepted",
    "HookCreate",
    "HookCreated",
    "HookView",
    "Problem",
    "WebhookService",
    "command_event_type",
    "create_app",
]

_HOME = {
    "COMMAND_EVENT_SOURCE": "service",
    "CommandAccepted": "models",
    "HookCreate": "models",
    "HookCreated": "models",
    "HookView": "models",
    "Problem": "models",
    "WebhookService": "service",
    "command_event_type": "service",
    "create_app": "app",
}


def __getattr__(name: str) -> Any:
    """The re-exported name from its module, imported on first use (PEP 562)."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
