"""The poller's wire records: its cursor (dastra.poller-state.v1) and the requests to poll a
workspace now (dastra.poller-triggers.v1).

    key, value = trigger_record(42, "dastra webhook: DataSubjectRequest.Created")
"""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

__all__ = ["Cursor", "Mark", "PollTrigger", "Recent", "trigger_record"]


class Recent(BaseModel):
    """An item published shortly before the cursor's timestamp."""

    model_config = ConfigDict(frozen=True)

    id: int
    at: datetime


class Mark(BaseModel):
    """A position in one time-ordered stream (creations or updates)."""

    model_config = ConfigDict(frozen=True)

    after: datetime | None = Field(description="Newest timestamp published; null: from the start")
    seen: list[int] = Field(default_factory=list, description="Ids published at `after`")
    recent: list[Recent] = Field(
        default_factory=list,
        description="Items published at or after `recentSince` (the late-item window)",
    )
    recent_since: datetime | None = Field(
        default=None,
        description="`recent` is complete from this timestamp on; null: as far as it reaches",
    )


class Cursor(BaseModel):
    """The poller's position for one workspace and resource (value on dastra.poller-state.v1)."""

    model_config = ConfigDict(frozen=True)

    workspace_id: int
    resource: str
    created: Mark
    updated: Mark
    written_at: datetime

    @property
    def key(self) -> str:
        return f"{self.workspace_id}:{self.resource}"


class PollTrigger(BaseModel):
    """A request to poll a workspace now (value on dastra.poller-triggers.v1; key = the
    workspace id). Other fields are ignored."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    workspace_id: int = Field(ge=1, description="The Dastra workspace to poll")
    reason: str = Field(description="Why, for the logs: e.g. the Dastra webhook event name")
    at: datetime = Field(description="When the trigger was sent")


def trigger_record(workspace_id: int, reason: str) -> tuple[bytes, bytes]:
    """Key and value of a record on dastra.poller-triggers.v1 asking to poll a workspace now."""
    trigger = PollTrigger(workspace_id=workspace_id, reason=reason, at=datetime.now(UTC))
    return str(workspace_id).encode(), trigger.model_dump_json(by_alias=True).encode()
