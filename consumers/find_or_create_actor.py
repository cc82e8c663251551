"""Find-or-create-actor agent. Consumes dastra.commands.find-or-create-actor.v1
(FindOrCreateActor). Produces dastra.command-results.v1 (the actor found or created, as Dastra
returned it), or dastra.dead-letter.v1 on permanent failure. Calls GET and POST
/v1/ws/{workspaceId}/Actors.

Searches by e-mail (exact, case-insensitive) when the command has one, else by company name, and
creates the actor when nothing matches (the oldest match wins when there are several). The
dispatcher runs commands for the same actor (normalised e-mail, else company, else names) one at
a time in a worker (`actor_lane_key`), whatever their Kafka keys; the webhook keys them by the
actor (`bus.records.commands.actor_record_key`), so they share a partition and so a worker:
concurrent commands create one actor.

    actor = await handle(FindOrCreateActor(email="dpo@acme.eu", companyName="Acme"), dastra, ctx)
"""

from __future__ import annotations

from datetime import datetime

import faust

from bus.records.commands import CreateActor, FindOrCreateActor
from consumers.actions import ActionSpec, CommandContext, Result, actor_lane_key
from consumers.dispatcher import Dispatcher
from dastra.client import DastraClient
from dastra.filters import Rule, RuleGroup
from dastra.models import Actor

__all__ = ["SPEC", "find_actor", "handle", "register"]


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


async def handle(command: FindOrCreateActor, dastra: DastraClient, ctx: CommandContext) -> Result:
    """The matching actor, or a new one."""
    found = await find_actor(dastra, ctx.workspace_id, command)
    if found is not None:
        return found.raw
    created = await dastra.create_actor(ctx.workspace_id, command.dastra_body(), retry=False)
    return created.raw


SPEC = ActionSpec("find-or-create-actor", FindOrCreateActor, handle, actor_lane_key)


def register(app: faust.App, dispatcher: Dispatcher) -> None:
    """The find-or-create-actor agent: every record of its topic goes to the dispatcher."""
    dispatcher.attach(app, SPEC)
