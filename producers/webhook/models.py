"""The webhook's HTTP models: request and answer bodies (in its OpenAPI document) and the
problem answers (RFC 9457).

    raise Refused(404, "unknown-hook", "no such hook")
"""

from datetime import datetime
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from bus.records.subscriptions import HookEvent

__all__ = [
    "CommandAccepted",
    "DastraWebhookAck",
    "Health",
    "HookCreate",
    "HookCreated",
    "HookView",
    "Me",
    "Problem",
    "Refused",
    "problem",
]


class Problem(BaseModel):
    """Every error answer."""

    status: int
    error: str = Field(description="A stable code, e.g. invalid-command, kafka-unavailable")
    message: str
    field_errors: dict[str, list[str]] = Field(default_factory=dict)
    command_id: str | None = None


class CommandAccepted(BaseModel):
    """202: the command is durably on its topic; its result will be on the results topic."""

    command_id: str
    action: str
    topic: str
    partition: int
    offset: int
    status: Literal["accepted"] = "accepted"
    replayed: bool = Field(description="True when this answers a repeated Idempotency-Key")


class HookCreate(BaseModel):
    """A REST hook subscription request (Zapier's performSubscribe)."""

    model_config = ConfigDict(extra="forbid")

    event: HookEvent
    target_url: str = Field(min_length=1, max_length=2048)
    workspace_id: int | None = Field(default=None, ge=1)


class HookView(BaseModel):
    """A subscription as listed (the secret is shown only when it is created)."""

    id: str
    event: HookEvent
    target_url: str
    workspace_id: int | None = None
    created_at: datetime


class HookCreated(HookView):
    """201: the new subscription and its Standard Webhooks signing secret (`whsec_...`)."""

    secret: str


class Me(BaseModel):
    authenticated: Literal[True] = True
    token_id: str = Field(description="A short fingerprint of the token used (not the token)")
    actions: list[str]
    hook_events: list[str]


class DastraWebhookAck(BaseModel):
    status: Literal["ok"] = "ok"
    workspaces: list[int]
    triggered: bool = Field(
        default=True,
        description="false when Kafka did not take the poll trigger: the poller's next "
        "scheduled cycle finds the item instead (Dastra is still answered 200, so that it does "
        "not count an error and block the webhook after more than 5)",
    )


class Health(BaseModel):
    status: str
    checks: dict[str, bool] = Field(default_factory=dict)


def problem(
    status: int, error: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> JSONResponse:
    body = Problem(status=status, error=error, message=message, **extra)
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


class Refused(Exception):  # noqa: N818 - an answer, not an error
    """An error answer raised from inside a route or dependency."""

    def __init__(
        self,
        status: int,
        error: str,
        message: str,
        headers: dict[str, str] | None = None,
        field_errors: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.response = problem(status, error, message, headers, field_errors=field_errors or {})
