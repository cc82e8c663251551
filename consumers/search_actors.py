"""Search-actors agent. Consumes dastra.commands.search-actors.v1 (SearchActors).
Produces dastra.command-results.v1 (a list of actors as Dastra returned them, best match first;
no match is a success with an empty list), or dastra.dead-letter.v1 on permanent failure.
Calls GET /v1/ws/{workspaceId}/Actors (one query per criterion given).

Criteria add up: actors whose e-mail equals `email`, whose company name contains `companyName`,
and those Dastra's free-text search finds for `q`. Ranking: an exact e-mail match first, then an
exact company name, then the rest in Dastra's order; at most `limit` actors.

    actors = await handle(SearchActors(email="dpo@acme.eu"), dastra, ctx)
"""

from __future__ import annotations

from bus.records.commands import SearchActors
from consumers.actions import ActionSpec, CommandContext, Result
from dastra.client import DastraClient
from dastra.filters import Rule
from dastra.models import Actor

__all__ = ["SPEC", "handle"]


def _norm(text: str | None) -> str:
    return " ".join((text or "").split()).casefold()


async def handle(command: SearchActors, dastra: DastraClient, ctx: CommandContext) -> Result:
    """The matching actors, best first."""
    ws = ctx.workspace_id
    found: dict[int, Actor] = {}
    if command.email:
        page = await dastra.actors_page(
            ws, size=command.limit, filters=Rule("email", "equal", command.email), retry=False
        )
        found.update((actor.id, actor) for actor in page.items if actor.id not in found)
    if command.company_name:
        page = await dastra.actors_page(
            ws,
            size=command.limit,
            filters=Rule("companyName", "contains", command.company_name),
            retry=False,
        )
        found.update((actor.id, actor) for actor in page.items if actor.id not in found)
    if command.q:
        page = await dastra.actors_page(ws, size=command.limit, q=command.q, retry=False)
        found.update((actor.id, actor) for actor in page.items if actor.id not in found)

    email, company = _norm(command.email), _norm(command.company_name)

    def rank(actor: Actor) -> int:
        if email and _norm(actor.email) == email:
            return 0
        if company and _norm(actor.company_name) == company:
            return 1
        return 2

    ranked = sorted(found.values(), key=rank)  # stable: Dastra's order within a rank
    return [actor.raw for actor in ranked[: command.limit]]


SPEC = ActionSpec("search-actors", SearchActors, handle)
