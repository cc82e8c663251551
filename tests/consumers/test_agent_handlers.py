"""The six action handlers called directly (`handle(command, dastra, ctx)`), against the sandbox
over real HTTP: natural keys, rechecks, ranking, idempotent links. Kafka behaviour is in
test_agents.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest

from bus.records.commands import (
    CreateActor,
    CreateRightsRequest,
    CreateTask,
    FindOrCreateActor,
    LinkActorToProcessing,
    SearchActors,
)
from consumers import (
    create_actor,
    create_rights_request,
    create_task,
    find_or_create_actor,
    link_actor_to_processing,
    search_actors,
)
from consumers.actions import AreaDefaults, CommandContext
from dastra import DastraClient, RateLimiter
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from tests.kafka_helpers import unique


@pytest.fixture
async def dastra(dastra_settings: DastraSettings) -> AsyncIterator[DastraClient]:
    limiter = RateLimiter.from_settings(dastra_settings)
    async with DastraClient(dastra_settings, limiter=limiter) as client:
        yield client


def _ctx(sandbox: SandboxServer, **changes: object) -> CommandContext:
    values: dict[str, object] = {
        "command_id": unique("cmd"),
        "workspace_id": sandbox.workspace_id,
        "areas": AreaDefaults(),
    }
    return CommandContext(**(values | changes))  # type: ignore[arg-type]


def _posts(sandbox: SandboxServer, path: str) -> int:
    return sandbox.admin.call_counts().get(f"POST /v1/ws/{{ws}}/{path}", 0)


async def test_create_task_marks_it_and_a_recheck_finds_it(
    sandbox: SandboxServer, dastra: DastraClient
) -> None:
    command = CreateTask(label=f"Call back {unique()}", priority="High", objectType="DataSubject",
                         objectId="7", additionalDatas={"origin": "crm"})  # fmt: skip
    ctx = _ctx(sandbox)
    task = await create_task.handle(command, dastra, ctx)
    assert isinstance(task, dict)
    assert task["additionalDatas"] == {"origin": "crm", create_task.MARKER: ctx.command_id}
    assert task["objectType"] == "DataSubject" and task["objectId"] == "7"
    # An attempt whose outcome was unknown, or a record redelivered after a crash: no second task.
    again = await create_task.handle(command, dastra, _ctx(sandbox, command_id=ctx.command_id,
                                                           recheck=True))  # fmt: skip
    assert isinstance(again, dict) and again["id"] == task["id"]
    assert _posts(sandbox, "Tasks") == 1
    # Another command with the same label is another task, even when rechecked.
    other = await create_task.handle(command, dastra, _ctx(sandbox, recheck=True))
    assert isinstance(other, dict) and other["id"] != task["id"]
    labels = [t for t in sandbox.admin.objects("tasks") if t["label"] == command.label]
    assert len(labels) == 2


async def test_rights_request_uses_the_command_id_as_ref_id_and_never_duplicates(
    sandbox: SandboxServer, dastra: DastraClient
) -> None:
    command = CreateRightsRequest(title="Access to my data", purposes=["Access"],
                                  email="ada@example.eu")  # fmt: skip
    ctx = _ctx(sandbox)
    first = await create_rights_request.handle(command, dastra, ctx)
    second = await create_rights_request.handle(command, dastra, ctx)
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["refId"] == ctx.command_id and second["id"] == first["id"]
    # The workspace's first area when the command and the settings name none.
    assert first["areaId"] == sandbox.admin.info()["areas"][0]
    assert _posts(sandbox, "DataSubjectRequests") == 1
    # A refId of the producer's own is the natural key instead.
    own = CreateRightsRequest(title="Erase", purposes=["Erasure"], refId="crm-42", areaId=None)
    a = await create_rights_request.handle(own, dastra, _ctx(sandbox))
    b = await create_rights_request.handle(own, dastra, _ctx(sandbox))
    assert isinstance(a, dict) and isinstance(b, dict)
    assert a["refId"] == "crm-42" and a["id"] == b["id"]
    assert len([r for r in sandbox.admin.objects("rightsRequests") if r["refId"] == "crm-42"]) == 1


async def test_create_actor_recheck_finds_only_a_recent_actor_with_its_natural_key(
    sandbox: SandboxServer, dastra: DastraClient
) -> None:
    email = f"{unique('dpo')}@acme.eu"
    command = CreateActor(companyName="Acme", email=email, countryCode="FR")
    created = await create_actor.handle(command, dastra, _ctx(sandbox))
    assert isinstance(created, dict) and created["actorType"] == "Morale"
    again = await create_actor.handle(command, dastra, _ctx(sandbox, recheck=True))
    assert isinstance(again, dict) and again["id"] == created["id"]
    # Produced long after that actor was created: the recheck does not claim it.
    later = _ctx(sandbox, recheck=True, produced_at=datetime.now(UTC) + timedelta(hours=1))
    newer = await create_actor.handle(command, dastra, later)
    assert isinstance(newer, dict) and newer["id"] != created["id"]
    # Without a recheck, create-actor always creates.
    plain = await create_actor.handle(command, dastra, _ctx(sandbox))
    assert isinstance(plain, dict) and plain["id"] not in (created["id"], newer["id"])


async def test_find_or_create_actor_finds_by_email_case_insensitively_else_by_company(
    sandbox: SandboxServer, dastra: DastraClient
) -> None:
    email = f"{unique('privacy')}@globex.eu"
    made = await find_or_create_actor.handle(
        FindOrCreateActor(companyName="Globex", email=email), dastra, _ctx(sandbox)
    )
    found = await find_or_create_actor.handle(
        FindOrCreateActor(companyName="Other name", email=email.upper()), dastra, _ctx(sandbox)
    )
    assert isinstance(made, dict) and isinstance(found, dict) and found["id"] == made["id"]
    company = f"Initech {unique()}"
    by_company = await find_or_create_actor.handle(
        FindOrCreateActor(companyName=company), dastra, _ctx(sandbox)
    )
    again = await find_or_create_actor.handle(
        FindOrCreateActor(companyName=company.lower()), dastra, _ctx(sandbox)
    )
    assert isinstance(by_company, dict) and isinstance(again, dict)
    assert again["id"] == by_company["id"]
    assert _posts(sandbox, "Actors") == 2


async def test_search_actors_ranks_the_exact_email_first_and_no_match_is_empty(
    sandbox: SandboxServer, dastra: DastraClient
) -> None:
    tag = unique("zeta")
    exact = sandbox.admin.create_actor(companyName=f"{tag} Partners", email=f"dpo@{tag}.eu")
    sandbox.admin.create_actor(companyName=f"{tag} Holding", email=f"info@{tag}-holding.eu")
    sandbox.admin.create_actor(companyName=f"{tag}", email=f"x@other-{tag}.eu")
    result = await search_actors.handle(
        SearchActors(q=tag, email=f"DPO@{tag}.eu"), dastra, _ctx(sandbox)
    )
    assert isinstance(result, list) and len(result) == 3
    assert result[0]["id"] == exact["id"]
    by_company = await search_actors.handle(SearchActors(companyName=tag), dastra, _ctx(sandbox))
    assert isinstance(by_company, list) and len(by_company) == 3
    assert by_company[0]["companyName"] == tag  # the exact company name ranks first
    limited = await search_actors.handle(SearchActors(q=tag, limit=2), dastra, _ctx(sandbox))
    assert isinstance(limited, list) and len(limited) == 2
    nothing = await search_actors.handle(SearchActors(q=unique("nobody")), dastra, _ctx(sandbox))
    assert nothing == []


async def test_link_actor_to_processing_links_each_actor_once_per_role(
    sandbox: SandboxServer, dastra: DastraClient
) -> None:
    processing = sandbox.admin.info()["processings"][1]
    first = sandbox.admin.create_actor(companyName=f"Vendor {unique()}")
    second = sandbox.admin.create_actor(companyName=f"Vendor {unique()}")
    command = LinkActorToProcessing(actorIds=[first["id"]], dataProcessingId=processing,
                                    type="Recipient", recipientType="Vendor")  # fmt: skip
    result = await link_actor_to_processing.handle(command, dastra, _ctx(sandbox))
    assert result == {"dataProcessingId": processing, "type": "Recipient",
                      "actorIds": [first["id"]], "linked": [first["id"]], "alreadyLinked": [],
                      "count": 1}  # fmt: skip
    both = command.model_copy(update={"actor_ids": [first["id"], second["id"]]})
    result = await link_actor_to_processing.handle(both, dastra, _ctx(sandbox))
    assert isinstance(result, dict)
    assert result["linked"] == [second["id"]] and result["alreadyLinked"] == [first["id"]]
    posts_before = _posts(sandbox, "DataProcessings/recipients/batch")
    result = await link_actor_to_processing.handle(both, dastra, _ctx(sandbox))
    assert isinstance(result, dict) and result["linked"] == [] and result["count"] == 0
    assert _posts(sandbox, "DataProcessings/recipients/batch") == posts_before  # no call at all
    # Another role is another link.
    stakeholder = both.model_copy(update={"type": "Stakeholder"})
    result = await link_actor_to_processing.handle(stakeholder, dastra, _ctx(sandbox))
    assert isinstance(result, dict) and result["linked"] == [first["id"], second["id"]]
    state = sandbox.admin.state(sandbox.workspace_id, "processings")["processings"]
    links = next(p for p in state if p["id"] == processing)
    recipients = [link["actorId"] for link in links["recipients"]]
    assert recipients.count(first["id"]) == 1 and recipients.count(second["id"]) == 1
