"""Create-task agent. Consumes dastra.commands.create-task.v1 (CreateTask).
Produces dastra.command-results.v1 (the task as Dastra returned it), or dastra.dead-letter.v1 on
permanent failure. Calls POST /v1/ws/{workspaceId}/Tasks, GET .../Tasks?q= when rechecking, and
GET .../Areas once per workspace when neither the command nor WORKER_AREA_ID names an area (Dastra's
`areaId` is a required integer: the task goes to the workspace's first area, as a rights request).

A task has no natural key, so the handler adds one: `additionalDatas.dastraKafkaCommandId` holds
the command id. When an earlier attempt may have reached Dastra (`ctx.recheck`), the handler
looks for a task with that label, created since the command was produced, carrying this marker,
and returns it instead of creating a second one.

    task = await handle(CreateTask(label="Call back"), dastra, ctx)
"""

from __future__ import annotations

from typing import Any

from bus.records.commands import CreateTask
from consumers.actions import ActionSpec, CommandContext, Result, created_since
from dastra.client import DastraClient

__all__ = ["MARKER", "SPEC", "handle"]

MARKER = "dastraKafkaCommandId"


async def handle(command: CreateTask, dastra: DastraClient, ctx: CommandContext) -> Result:
    """Create the task (unless a recheck finds the one an earlier attempt created)."""
    body = command.dastra_body()
    body["additionalDatas"] = {**(body.get("additionalDatas") or {}), MARKER: ctx.command_id}
    if "areaId" not in body:
        body["areaId"] = await ctx.areas.area_for(dastra, ctx.workspace_id)
    if ctx.recheck:
        found = await _find(command, dastra, ctx)
        if found is not None:
            return found
    task = await dastra.create_task(ctx.workspace_id, body, retry=False)
    return task.raw


async def _find(command: CreateTask, dastra: DastraClient, ctx: CommandContext) -> Result | None:
    params: dict[str, Any] = {"q": command.label}
    if command.object_type is not None and command.object_id is not None:
        params.update(object_type=command.object_type, object_ids=[command.object_id])
    async for task in dastra.iter_tasks(
        ctx.workspace_id,
        size=100,
        sort_by="id",
        asc=False,
        filters=created_since(ctx),
        retry=False,
        **params,
    ):
        marker = (task.additional_datas or {}).get(MARKER)
        if marker == ctx.command_id:
            return task.raw
    return None


SPEC = ActionSpec("create-task", CreateTask, handle)
