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

from bus.records.commands import FindOrCreateActor
from consumers.actions import ActionSpec, CommandContext, Result, actor_lane_key, find_actor
from dastra.client import DastraClient

__all__ = ["SPEC", "handle"]


async def handle(command: FindOrCreateActor, dastra: DastraClient, ctx: CommandContext) -> Result:
    """The matching actor, or a new one."""
    found = await find_actor(dastra, ctx.workspace_id, command)
    if found is not None:
        return found.raw
    created = await dastra.create_actor(ctx.workspace_id, command.dastra_body(), retry=False)
    return created.raw


SPEC = ActionSpec("find-or-create-actor", FindOrCreateActor, handle, actor_lane_key)
