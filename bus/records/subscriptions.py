"""REST hook subscriptions: the records of the compacted `dastra.hook-subscriptions.v1`.

Consumes nothing; defines the contract the webhook service writes (key = subscription id; value
= a `HookSubscription`, or a tombstone to delete it) and the hook dispatcher and every webhook
replica read. The signing secret travels on this topic: protect it with ACLs so that only the
webhook service and the dispatcher can read it.

    subscription = HookSubscription.new(event="task.created", target_url="https://hooks.zapier.com/...")
"""

from __future__ import annotations

import base64
import secrets
import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer

__all__ = ["HOOK_EVENTS", "HookEvent", "HookSubscription", "event_type_of"]

HookEvent = Literal[
    "rights_request.created",
    "rights_request.updated",
    "task.created",
    "task.updated",
]
HOOK_EVENTS: tuple[str, ...] = HookEvent.__args__  # type: ignore[attr-defined]


def event_type_of(event: str) -> str:
    """The CloudEvents type of a hook event: `task.created` -> `eu.dastra.task.created`."""
    return f"eu.dastra.{event}"


class HookSubscription(BaseModel):
    """A subscriber's target URL for one event, with its Standard Webhooks signing secret."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^hook_[0-9a-f]{32}$")
    event: HookEvent
    target_url: str = Field(min_length=1, max_length=2048)
    secret: SecretStr = Field(description="Standard Webhooks signing secret, `whsec_<base64>`")
    workspace_id: int | None = Field(
        default=None, description="Only events of this workspace; all workspaces when null"
    )
    created_at: datetime
    rate_per_s: float | None = Field(
        default=None,
        gt=0,
        le=10000,
        description="Requests per second to this subscriber; HOOKS_RATE_PER_S when null",
    )

    @field_serializer("secret", when_used="json")
    def _reveal(self, secret: SecretStr) -> str:
        # The topic is the store the webhook replicas and the dispatcher share; in memory and in
        # reprs the secret stays hidden.
        return secret.get_secret_value()

    @classmethod
    def new(
        cls,
        *,
        event: HookEvent,
        target_url: str,
        workspace_id: int | None = None,
        rate_per_s: float | None = None,
    ) -> HookSubscription:
        """A new subscription with a fresh id and a fresh 32-byte secret."""
        key = base64.b64encode(secrets.token_bytes(32)).decode()
        return cls(
            id=f"hook_{uuid.uuid4().hex}",
            event=event,
            target_url=target_url,
            secret=SecretStr(f"whsec_{key}"),
            workspace_id=workspace_id,
            created_at=datetime.now(UTC),
            rate_per_s=rate_per_s,
        )
