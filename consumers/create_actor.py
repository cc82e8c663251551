"""Create-actor agent. Consumes dastra.commands.create-actor.v1 (CreateActor).
Produces dastra.command-results.v1 (the actor as Dastra returned it), or dastra.dead-letter.v1 on
permanent failure. Calls POST /v1/ws/{workspaceId}/Actors, and GET .../Actors when rechecking.

Create-actor always creates (find-or-create-actor is the action that reuses). When an earlier
attempt may have reached Dastra (`ctx.recheck`), the handler first looks for an actor with the
command's natural key (e-mail, else company name, else names) created since the command was
produced, and returns it instead of creating a second one.

    actor = await handle(CreateActor(companyName="Acme", email="dpo@acme.eu"), dastra, ctx)
"""

from __future__ import annotations

from bus.records.commands import CreateActor
from consumers.actions import ActionSpec, CommandContext, Result, actor_lane_key, find_actor
from dastra.client import DastraClient

__all__ = ["SPEC", "handle"]


async def handle(command: CreateActor, dastra: DastraClient, ctx: CommandContext) -> Result:
    """Create the actor (unless a recheck finds the one an earlier attempt created)."""
    if ctx.recheck:
        found = await find_actor(
            dastra, ctx.workspace_id, command, since=ctx.produced_at - ctx.lookup_skew
        )
        if found is not None:
            return found.raw
    created = await dastra.create_actor(ctx.workspace_id, command.dastra_body(), retry=False)
    return created.raw


SPEC = ActionSpec("create-actor", CreateActor, handle, actor_lane_key)
