"""Create-rights-request agent. Consumes dastra.commands.create-rights-request.v1
(CreateRightsRequest). Produces dastra.command-results.v1 (the rights request as Dastra returned
it), or dastra.dead-letter.v1 on permanent failure. Calls GET and POST
/v1/ws/{workspaceId}/DataSubjectRequests.

`refId` is the natural key: the command's own, else the command id. Before creating, the
handler looks for a rights request with that refId and returns it when there is one, so a
command redelivered after a crash (or sent twice with the same refId) creates one request.

    request = await handle(CreateRightsRequest(title="Access", purposes=["Access"]), dastra, ctx)
"""

from __future__ import annotations

from bus.records.commands import CreateRightsRequest
from consumers.actions import ActionSpec, CommandContext, Result
from dastra.client import DastraClient
from dastra.filters import Rule

__all__ = ["SPEC", "handle"]


async def handle(command: CreateRightsRequest, dastra: DastraClient, ctx: CommandContext) -> Result:
    """Find the rights request by refId, else create it."""
    ref_id = command.ref_id or ctx.command_id
    existing = await dastra.rights_requests_page(
        ctx.workspace_id,
        size=1,
        sort_by="id",
        asc=True,
        filters=Rule("refId", "equal", ref_id),
        retry=False,
    )
    if existing.items:
        return existing.items[0].raw
    body = command.dastra_body()
    body["refId"] = ref_id
    if "areaId" not in body:
        body["areaId"] = await ctx.areas.area_for(dastra, ctx.workspace_id)
    created = await dastra.create_rights_request(ctx.workspace_id, body, retry=False)
    return created.raw


SPEC = ActionSpec("create-rights-request", CreateRightsRequest, handle)
