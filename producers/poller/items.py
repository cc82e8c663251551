"""What the poller watches and reports: the resources (rights requests, tasks), the fields it
reads of a Dastra object, where a run starts, and the summary of a run.

    start = parse_start("2026-01-01T00:00:00Z")
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import structlog

from bus.topics import RIGHTS_REQUESTS, TASKS
from dastra.models import DastraModel

__all__ = [
    "KIND",
    "RESOURCES",
    "ChangedItem",
    "PollSummary",
    "PollerFencedError",
    "Resource",
    "StartFrom",
    "Stream",
    "parse_start",
    "stream_stamp",
    "utc",
]

_log = structlog.get_logger(__name__)


StartFrom = Literal["now", "beginning"] | datetime


def parse_start(text: str) -> StartFrom:
    """`now`, `beginning` or an ISO 8601 date/time (UTC when no zone is given)."""
    if text in ("now", "beginning"):
        return text  # type: ignore[return-value]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--from takes now, beginning or an ISO date, not {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class ChangedItem(DastraModel):
    """What the poller needs of a Dastra object; every other member is kept, unvalidated, in
    `.raw`, so one odd value elsewhere in an object cannot block a workspace."""

    id: int
    date_creation: datetime | None = None
    date_update: datetime | None = None


@dataclass(frozen=True)
class Resource:
    """One kind of Dastra object the poller watches."""

    name: str  # part of the cursor key: "<workspaceId>:<name>"
    topic: str  # catalogue name of the event topic
    entity: str  # in event types: eu.dastra.<entity>.created; the kind in bus/privacy/
    collection: str  # Dastra's collection: /v1/ws/{ws}/<collection>


RESOURCES: tuple[Resource, ...] = (
    Resource("rights-requests", RIGHTS_REQUESTS, "rights_request", "DataSubjectRequests"),
    Resource("tasks", TASKS, "task", "Tasks"),
)


Stream = Literal["dateCreation", "dateUpdate"]


KIND: dict[Stream, Literal["created", "updated"]] = {
    "dateCreation": "created",
    "dateUpdate": "updated",
}


class PollerFencedError(RuntimeError):
    """Another poller took over this workspace (same transactional.id); this one must stop."""


@dataclass
class PollSummary:
    """What a run did, per workspace: events published, cycles, errors, and why it stopped."""

    events: dict[int, int] = field(default_factory=dict)
    cycles: dict[int, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    fenced: list[int] = field(default_factory=list)
    # Workspaces stopped by an error that waiting cannot fix (credentials, unknown workspace).
    failed: dict[int, str] = field(default_factory=dict)
    # The kind of the last error of each workspace whose last cycle failed.
    last_error: dict[int, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "events": {str(k): v for k, v in self.events.items()},
            "cycles": {str(k): v for k, v in self.cycles.items()},
            "errors": {str(k): v for k, v in self.errors.items()},
            "fenced": self.fenced,
            "failed": {str(k): v for k, v in self.failed.items()},
            "last_error": {str(k): v for k, v in self.last_error.items()},
        }


def utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def stream_stamp(item: ChangedItem, stream: Stream) -> datetime | None:
    return utc(item.date_creation if stream == "dateCreation" else item.date_update)
