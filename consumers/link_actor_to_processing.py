"""Link-actor-to-processing agent. Consumes dastra.commands.link-actor-to-processing.v1
(LinkActorToProcessing). Produces dastra.command-results.v1, or dastra.dead-letter.v1 on
permanent failure. Calls GET /v1/ws/{workspaceId}/DataProcessings/{id} and
POST /v1/ws/{workspaceId}/DataProcessings/recipients/batch.

Actors already linked to the processing in the requested role are not linked again: the handler
reads the processing's links first and sends only the others (none: no POST at all), which makes
the action idempotent. Commands for one processing run one at a time in a worker, whatever their
Kafka keys (`processing_lane_key`), so that each reads the links the one before made: Dastra's
spec does not say that it drops a duplicate link. Across workers, the record key does it (the
webhook and recipes key these commands `processing:<id>`). Dastra answers the batch with a count,
not an object, so the result is:

    {"dataProcessingId": "...", "type": "Recipient", "actorIds": [7, 9],
     "linked": [9], "alreadyLinked": [7], "count": 1}
"""

from __future__ import annotations

from bus.records.commands import LinkActorToProcessing
from consumers.actions import ActionSpec, CommandContext, Result
from dastra.client import DastraClient
from dastra.models import DataProcessing

__all__ = ["SPEC", "handle", "linked_actor_ids", "processing_lane_key"]


def linked_actor_ids(processing: DataProcessing, role: str) -> set[int]:
    """Actors linked to `processing` in `role` (Recipient, DataController, Stakeholder,
    Referent). Links listed under recipients or dataControllers may omit their type."""
    ids: set[int] = set()
    for field, default in (
        (processing.recipients, "Recipient"),
        (processing.data_controllers, "DataController"),
        (processing.stake_holders, "Stakeholder"),
    ):
        for link in field or []:
            actor_id = (
                link.actor_id if link.actor_id is not None else getattr(link.actor, "id", None)
            )
            if actor_id is not None and str(link.type or default) == role:
                ids.add(int(actor_id))
    return ids


async def handle(
    command: LinkActorToProcessing, dastra: DastraClient, ctx: CommandContext
) -> Result:
    """Link the actors not linked yet in this role."""
    ws = ctx.workspace_id
    processing = await dastra.get_processing(ws, command.data_processing_id, retry=False)
    already = linked_actor_ids(processing, command.type)
    to_link = [actor_id for actor_id in command.actor_ids if actor_id not in already]
    count = 0
    if to_link:
        body = {**command.dastra_body(), "actorIds": to_link, "type": command.type}
        count = await dastra.link_actors_to_processing(ws, body, retry=False)
    return {
        "dataProcessingId": str(command.data_processing_id),
        "type": command.type,
        "actorIds": list(command.actor_ids),
        "linked": to_link,
        "alreadyLinked": [a for a in command.actor_ids if a in already],
        "count": count,
    }


def processing_lane_key(command: LinkActorToProcessing, workspace_id: int) -> list[str]:
    """The processing activity of a link command in its workspace: links to one processing run
    one after the other."""
    return [f"processing:{workspace_id}:{command.data_processing_id}"]


SPEC = ActionSpec("link-actor-to-processing", LinkActorToProcessing, handle, processing_lane_key)
