"""What every action handler receives and may raise: the contract between the six
`consumers/<action>.py` handlers and the shared dispatcher.

Consumes nothing itself. A handler is a pure `async def handle(command, dastra, ctx)` that calls
Dastra (always with `retry=False`: the dispatcher owns the retry policy) and returns the Dastra
object(s) as the JSON Dastra returned (`.raw`). It raises `dastra.errors` exceptions, or
`CommandRejected` for a command that cannot be carried out; the dispatcher classifies them.

    SPEC = ActionSpec("create-task", CreateTask, handle)
    result = await handle(command, dastra, CommandContext(command_id="c-1", workspace_id=1))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from bus.records.commands import Command, CreateActor, FindOrCreateActor, actor_identity
from dastra.client import DastraClient
from dastra.filters import Rule, RuleGroup
from dastra.models import Actor

__all__ = [
    "ActionSpec",
    "AreaDefaults",
    "CommandContext",
    "CommandRejected",
    "Handler",
    "Result",
    "actor_lane_key",
    "created_since",
    "find_actor",
]

Result = dict[str, Any] | list[dict[str, Any]]
Handler = Callable[[Any, DastraClient, "CommandContext"], Awaitable[Result]]


class CommandRejected(Exception):  # noqa: N818 - an outcome, like DastraRejected
    """The command cannot be carried out as given (permanent): a failed result and a dead letter.

    `message` must not quote personal data: name the field, not its value."""

    def __init__(self, kind: str, message: str, field_errors: dict[str, list[str]] | None = None):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.field_errors = dict(field_errors or {})


class AreaDefaults:
    """The area a rights request or a task goes to when neither the command nor WORKER_AREA_ID
    names one: the workspace's first area, looked up once per workspace."""

    def __init__(self, configured: int | None = None) -> None:
        self._configured = configured
        self._found: dict[int, int] = {}
        self._lock = asyncio.Lock()

    async def area_for(self, dastra: DastraClient, workspace_id: int) -> int:
        if self._configured is not None:
            return self._configured
        async with self._lock:
            if workspace_id not in self._found:
                page = await dastra.areas(workspace_id, size=1, sort_by="id", asc=True, retry=False)
                if not page.items:
                    raise CommandRejected(
                        "invalid-command",
                        f"areaId: workspace {workspace_id} has no area; give areaId",
                        {"areaId": ["required: the workspace has no area to default to"]},
                    )
                self._found[workspace_id] = page.items[0].id
            return self._found[workspace_id]


@dataclass(frozen=True)
class CommandContext:
    """What a handler knows besides the command.

    `recheck` is true when an earlier attempt may already have reached Dastra (a redelivered
    record, or an attempt whose outcome is unknown): a creating handler then looks its object up
    by natural key before creating it again. Objects it finds must be newer than
    `produced_at - lookup_skew`.
    """

    command_id: str
    workspace_id: int
    recheck: bool = False
    produced_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    lookup_skew: timedelta = timedelta(minutes=5)
    areas: AreaDefaults = field(default_factory=AreaDefaults)


@dataclass(frozen=True)
class ActionSpec:
    """One action: its command model, its handler, and the extra ordering keys of a command
    (commands sharing a key run one after the other, whatever their Kafka key)."""

    action: str
    model: type[Command]
    handle: Handler
    ordering_keys: Callable[[Any, int], list[str]] = field(default=lambda _command, _ws: [])


def actor_lane_key(command: Any, workspace_id: int) -> list[str]:
    """The natural key of an actor command in its workspace (`bus.records.commands.actor_identity`:
    normalised e-mail, else company name, else names).

    Different producers may use different Kafka keys for the same actor; this key makes
    create-actor and find-or-create-actor commands for one actor run one at a time in a worker.
    Across workers, the webhook's record key (`actor_record_key`) puts them on one partition.
    """
    identity = actor_identity(command)
    return [f"actor:{workspace_id}:{identity}"] if identity else []


def created_since(ctx: CommandContext, *rules: Rule) -> Rule | RuleGroup:
    """`rules` and "created at or after the command was produced (minus the skew)"."""
    since = ctx.produced_at - ctx.lookup_skew
    recent = Rule("dateCreation", "greaterThanInclusive", since)
    return RuleGroup("And", [*rules, recent]) if rules else recent


async def find_actor(
    dastra: DastraClient,
    workspace_id: int,
    command: CreateActor | FindOrCreateActor,
    *,
    since: datetime | None = None,
) -> Actor | None:
    """The oldest actor matching the command's natural key (e-mail, else company name, else
    given and family names), optionally created at or after `since`; None when none does."""
    rules: list[Rule | RuleGroup] = []
    if command.email:
        rules.append(Rule("email", "equal", command.email))
    elif command.company_name:
        rules.append(Rule("companyName", "equal", command.company_name))
    else:
        rules += [
            Rule("givenName", "equal", command.given_name)
            if command.given_name
            else Rule("givenName", "isNull"),
            Rule("familyName", "equal", command.family_name)
            if command.family_name
            else Rule("familyName", "isNull"),
        ]
    if since is not None:
        rules.append(Rule("dateCreation", "greaterThanInclusive", since))
    page = await dastra.actors_page(
        workspace_id,
        size=1,
        sort_by="id",
        asc=True,
        filters=rules[0] if len(rules) == 1 else RuleGroup("And", rules),
        retry=False,
    )
    return page.items[0] if page.items else None
