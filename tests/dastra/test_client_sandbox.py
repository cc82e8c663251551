"""The Dastra client against the sandbox over real HTTP (uvicorn on a loopback port)."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dastra import (
    DastraAuthError,
    DastraClient,
    DastraConnectionError,
    DastraNotFound,
    DastraRateLimited,
    DastraRejected,
    DastraServerError,
    DastraTimeout,
    RateLimiter,
    Rule,
    RuleGroup,
)
from dastra.models import (
    ActorCreate,
    ActorProcessingLink,
    DataProcessingActorType,
    Purpose,
    RightsRequestCreate,
    TaskCreate,
    TaskState,
)
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings


def _fast(settings: DastraSettings, **overrides: Any) -> DastraSettings:
    """Short backoff so that retry tests stay quick."""
    values: dict[str, Any] = {"retry_backoff_s": 0.05, "retry_backoff_max_s": 0.2}
    return settings.model_copy(update=values | overrides)


def _client(settings: DastraSettings, **kwargs: Any) -> DastraClient:
    # A private limiter per test: the process-wide one would couple the tests.
    kwargs.setdefault("limiter", RateLimiter.from_settings(settings))
    return DastraClient(settings, **kwargs)


async def test_every_call_round_trips_through_the_sandbox(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    ws = sandbox.workspace_id
    async with _client(dastra_settings) as dastra:
        me = await dastra.me()
        assert me.role == "API" and me.id is not None
        workspaces = await dastra.workspaces()
        assert [w.id for w in workspaces] == [ws]
        users = await dastra.users()
        assert me.id in {u.id for u in users.items}
        areas = await dastra.areas(ws, size=10)
        assert areas.total == 3 and {a.type for a in areas.items} == {"Entity", "Area"}
        area = next(a for a in areas.items if a.type == "Area")

        created = await dastra.create_rights_request(
            ws,
            RightsRequestCreate(
                title="Access to my data",
                locale="fr",
                area_id=area.id,
                purposes=[Purpose.ACCESS],
                email="jane@example.com",
                ref_id="crm-42",
            ),
        )
        fetched = await dastra.get_rights_request(ws, created.id)
        assert fetched.ref_id == "crm-42" and fetched.area is not None
        assert fetched.area.id == area.id and fetched.state == "Open"
        page = await dastra.rights_requests_page(ws, filters=Rule("refId", "equal", "crm-42"))
        assert [r.id for r in page.items] == [created.id]

        task = await dastra.create_task(
            ws,
            TaskCreate(
                label="Answer the request",
                area_id=area.id,
                object_type="DataSubject",
                object_id=str(created.id),
                assigned_to_user_id=me.id,
            ),
        )
        assert task.state == TaskState.OPEN and task.workspace_id == ws
        assert (await dastra.get_task(ws, task.id)).object_id == str(created.id)
        tasks = await dastra.tasks_page(ws, object_type="DataSubject", object_ids=[created.id])
        assert [t.id for t in tasks.items] == [task.id]

        actor = await dastra.create_actor(
            ws, ActorCreate(company_name="Zapier Inc.", email="dpo@zapier.example")
        )
        assert actor.display_name == "Zapier Inc." and actor.actor_type == "Morale"
        assert (await dastra.get_actor(ws, actor.id)).email == "dpo@zapier.example"
        by_email = await dastra.actors_page(
            ws, filters=Rule("email", "equal", "DPO@zapier.example")
        )
        by_text = await dastra.actors_page(ws, q="zapier")
        assert [a.id for a in by_email.items] == [actor.id] == [a.id for a in by_text.items]

        processings = await dastra.processings_page(ws)
        target = processings.items[0].id
        link = ActorProcessingLink(
            actor_ids=[actor.id], data_processing_id=target, recipient_type="Vendor"
        )
        assert await dastra.link_actors_to_processing(ws, link) == 1
        processing = await dastra.get_processing(ws, target)
        mine = [x for x in processing.links() if x.actor_id == actor.id]
        assert len(mine) == 1 and mine[0].type == DataProcessingActorType.RECIPIENT

    state = sandbox.admin.state(ws)
    assert [r["id"] for r in state["rightsRequests"]] == [created.id]
    assert [t["id"] for t in state["tasks"]] == [task.id]
    assert sum(a["email"] == "dpo@zapier.example" for a in state["actors"]) == 1


async def test_objects_keep_the_exact_json_dastra_returned(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    made = sandbox.admin.create_task(label="Review the DPA", deadline="2031-02-03T04:05:06Z")
    async with _client(dastra_settings) as dastra:
        task = await dastra.get_task(sandbox.workspace_id, made["id"])
        listed = await dastra.tasks_page(sandbox.workspace_id)
    assert task.raw == made  # the sandbox's stored object, member for member
    assert task.raw["dateCreation"] == made["dateCreation"]  # not re-formatted
    assert listed.items[0].raw == made and listed.raw["items"][0] is listed.items[0].raw


async def test_paging_through_1234_items(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    sandbox.admin.bulk_create("rightsRequests", 1234)
    sandbox.admin.reset_calls()
    async with _client(dastra_settings) as dastra:
        seen = [r.id async for r in dastra.iter_rights_requests(sandbox.workspace_id)]
        small = [r.id async for r in dastra.iter_rights_requests(sandbox.workspace_id, size=100)]
    assert len(seen) == 1234 and len(set(seen)) == 1234
    assert seen == sorted(seen) and small == seen
    # 3 pages of 500, then 13 of 100 (the last one short): no extra empty-page call
    assert sandbox.admin.call_counts() == {"GET /v1/ws/{ws}/DataSubjectRequests": 3 + 13}


async def test_filters_select_by_date_and_groups(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    first = sandbox.admin.create_rights_request(title="Old one", email="old@example.com")
    await asyncio.sleep(0.01)  # distinct millisecond timestamps
    later = [sandbox.admin.create_rights_request(title=f"New {n}") for n in range(3)]
    ws = sandbox.workspace_id
    async with _client(dastra_settings) as dastra:
        newer = await dastra.rights_requests_page(
            ws, filters=Rule("dateCreation", "greaterThan", first["dateCreation"])
        )
        either = await dastra.rights_requests_page(
            ws,
            filters=RuleGroup(
                "Or", [Rule("email", "contains", "OLD@"), Rule("id", "in", [later[1]["id"]])]
            ),
            sort_by="id",
            asc=True,
        )
    assert sorted(r.id for r in newer.items) == [r["id"] for r in later]
    assert [r.id for r in either.items] == [first["id"], later[1]["id"]]


async def test_an_injected_429_waits_for_retry_after(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    sandbox.admin.inject_fault("/me", status=429, retry_after=1, times=1)
    async with _client(_fast(dastra_settings)) as dastra:
        started = time.monotonic()
        await dastra.me()
        waited = time.monotonic() - started
    assert waited >= 1.0  # backoff alone would have waited at most 0.05 s
    assert sandbox.admin.status_counts()["GET /me"] == {"429": 1, "200": 1}


class _StampingTransport(httpx.AsyncBaseTransport):
    """Real HTTP; notes when each request left and which status came back."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.sent: list[tuple[float, int]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        started = time.monotonic()
        response = await self._inner.handle_async_request(request)
        self.sent.append((started, response.status_code))
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_a_503_with_retry_after_is_retried_no_sooner(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    sandbox.admin.inject_fault("/me", status=503, retry_after=1, times=1)
    transport = _StampingTransport()
    async with _client(_fast(dastra_settings), transport=transport) as dastra:
        await dastra.me()
    assert [status for _, status in transport.sent] == [503, 200]
    # Backoff alone would have retried within 0.05 s; Dastra asked for 1 s.
    assert transport.sent[1][0] - transport.sent[0][0] >= 1.0
    assert sandbox.admin.status_counts()["GET /me"] == {"503": 1, "200": 1}


async def test_injected_503s_are_retried_until_success(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    sandbox.admin.inject_fault("/v1/ws/{ws}/Tasks", method="POST", status=503, times=4)
    async with _client(_fast(dastra_settings)) as dastra:
        task = await dastra.create_task(sandbox.workspace_id, TaskCreate(label="Survives"))
    assert sandbox.admin.status_counts()["POST /v1/ws/{ws}/Tasks"] == {"503": 4, "200": 1}
    assert [t["id"] for t in sandbox.admin.objects("tasks")] == [task.id]


async def test_503s_beyond_the_deadline_surface_as_retryable(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    sandbox.admin.inject_fault("/me", status=503)
    async with _client(_fast(dastra_settings, retry_deadline_s=0.5)) as dastra:
        with pytest.raises(DastraServerError) as caught:
            await dastra.me()
    assert caught.value.status == 503 and not caught.value.outcome_unknown
    assert sandbox.admin.call_counts()["GET /me"] > 2


async def test_a_400_is_permanent_and_carries_the_field_errors(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    body = {"title": "x", "locale": "far-too-long-locale", "purposes": ["Access"]}
    async with _client(_fast(dastra_settings)) as dastra:
        with pytest.raises(DastraRejected) as caught:
            await dastra.create_rights_request(sandbox.workspace_id, body)
        with pytest.raises(DastraRejected) as enum_error:
            await dastra.create_actor(sandbox.workspace_id, {"actorType": "Robot"})
    error = caught.value
    assert error.status == 400 and error.kind == "rejected"
    assert error.title == "One or more validation errors occurred."
    assert error.field_errors == {
        "AreaId": ["The AreaId field is required."],
        "Locale": [
            "The field Locale must be a string or array type with a maximum length of '10'."
        ],
    }
    assert "AreaId" in str(error) and "far-too-long" not in str(error)
    assert list(enum_error.value.field_errors) == ["$.actorType"]
    assert sandbox.admin.call_counts()["POST /v1/ws/{ws}/DataSubjectRequests"] == 1  # no retry
    assert sandbox.admin.objects("rightsRequests") == []


async def test_with_retries_off_the_typed_error_comes_at_once(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    ws = sandbox.workspace_id
    sandbox.admin.inject_fault("/me", status=429, retry_after=7, times=1)
    sandbox.admin.inject_fault("/v1/WorkSpaces", status=502, times=1)
    async with _client(dastra_settings, retries=False) as dastra:
        started = time.monotonic()
        with pytest.raises(DastraRateLimited) as limited:
            await dastra.me()
        with pytest.raises(DastraServerError) as bad_gateway:
            await dastra.workspaces()
        assert time.monotonic() - started < 5  # did not wait the 7 s
        with pytest.raises(DastraNotFound):
            await dastra.get_task(ws, 999_999)
    assert limited.value.retry_after == 7.0
    assert bad_gateway.value.status == 502 and bad_gateway.value.outcome_unknown
    sandbox.admin.inject_fault("/me", status=503, times=1)
    async with _client(_fast(dastra_settings)) as dastra:
        with pytest.raises(DastraServerError):
            await dastra.me(retry=False)  # per call
        assert (await dastra.me()).role == "API"


async def test_dropped_connections_retry_reads_but_not_unknown_creates(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    ws = sandbox.workspace_id
    sandbox.admin.inject_fault("/v1/ws/*/Actors", method="GET", drop=True, times=2)
    sandbox.admin.inject_fault("/v1/ws/*/Actors", method="POST", drop=True, times=1)
    async with _client(_fast(dastra_settings)) as dastra:
        page = await dastra.actors_page(ws)
        with pytest.raises(DastraConnectionError) as caught:
            await dastra.create_actor(ws, ActorCreate(company_name="Maybe Ltd"))
    assert page.total == 4
    assert caught.value.outcome_unknown  # the caller must look it up before creating again
    statuses = sandbox.admin.status_counts()
    assert statuses["GET /v1/ws/{ws}/Actors"] == {"no response": 2, "200": 1}
    assert statuses["POST /v1/ws/{ws}/Actors"] == {"no response": 1}


async def test_a_hung_call_times_out_and_is_retried(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    task = sandbox.admin.create_task(label="Slow")
    sandbox.admin.inject_fault("/v1/ws/*/Tasks/*", hang=True, times=1)
    settings = _fast(dastra_settings, timeout_s=0.5)
    async with _client(settings) as dastra:
        assert (await dastra.get_task(sandbox.workspace_id, task["id"])).id == task["id"]
    sandbox.admin.inject_fault("/v1/ws/*/Tasks/*", hang=True, times=1)
    async with _client(settings, retries=False) as dastra:
        with pytest.raises(DastraTimeout) as caught:
            await dastra.get_task(sandbox.workspace_id, task["id"])
    assert caught.value.outcome_unknown


async def test_auth_errors(sandbox: SandboxServer, dastra_settings: DastraSettings) -> None:
    wrong = dastra_settings.model_copy(update={"api_key": SecretStr("not-the-key")})
    async with _client(wrong) as dastra:
        with pytest.raises(DastraAuthError) as unauthorized:
            await dastra.me()
    async with _client(dastra_settings) as dastra:
        with pytest.raises(DastraAuthError) as forbidden:
            await dastra.tasks_page(999)
        with pytest.raises(DastraNotFound):
            await dastra.get_processing(sandbox.workspace_id, uuid.uuid4())
    assert unauthorized.value.status == 401 and forbidden.value.status == 403
    oauth = sandbox.dastra_settings(oauth=True, client_secret="wrong")
    async with _client(oauth) as dastra:
        with pytest.raises(DastraAuthError) as refused:
            await dastra.me()
    assert "token endpoint refused" in str(refused.value)


async def test_oauth_token_is_renewed_before_it_expires(
    sandbox: SandboxServer,
) -> None:
    sandbox.admin.configure(token_lifetime_s=1)
    async with _client(sandbox.dastra_settings(oauth=True)) as dastra:
        await dastra.me()
        await dastra.me()  # same token
        await asyncio.sleep(1.0)  # the token's lifetime, not a guess about the server
        await dastra.me()
    calls = sandbox.admin.status_counts()
    assert calls["POST /connect/token"]["200"] >= 2  # renewed (2 unless this machine crawls)
    assert calls["GET /me"] == {"200": 3}  # and never sent an expired token


async def test_a_revoked_token_is_replaced_once(sandbox: SandboxServer) -> None:
    async with _client(sandbox.dastra_settings(oauth=True)) as dastra:
        await dastra.me()
        assert sandbox.admin.expire_tokens() >= 1
        await dastra.me()
    calls = sandbox.admin.status_counts()
    assert calls["GET /me"] == {"200": 2, "401": 1}
    assert calls["POST /connect/token"] == {"200": 2}


async def test_one_token_fetch_under_concurrency(sandbox: SandboxServer) -> None:
    async with _client(sandbox.dastra_settings(oauth=True)) as dastra:
        users = await asyncio.gather(*(dastra.me() for _ in range(30)))
    assert {u.id for u in users} == {users[0].id}
    assert sandbox.admin.call_counts()["POST /connect/token"] == 1


async def test_the_limiter_keeps_a_1000_call_burst_under_the_sandbox_limit(
    sandbox: SandboxServer, dastra_settings: DastraSettings
) -> None:
    async def burst(limiter: RateLimiter, calls: int) -> list[BaseException | object]:
        async with DastraClient(dastra_settings, limiter=limiter, retries=False) as dastra:
            return await asyncio.gather(
                *(dastra.me() for _ in range(calls)), return_exceptions=True
            )

    # Control: without a client-side limiter, calls over the sandbox's limit are refused
    # (a long window makes the count exact whatever the machine's speed).
    sandbox.admin.configure(rate_limit_windows=[(100, 60.0)])
    unlimited = await burst(RateLimiter.unlimited(), 150)
    assert sum(isinstance(r, DastraRateLimited) for r in unlimited) == 50

    # Dastra's shape (N per period) shrunk so that the test takes seconds, not minutes.
    window = (125, 1.0)
    sandbox.admin.configure(rate_limit_windows=[window])  # fresh windows
    sandbox.admin.reset_calls()
    started = time.monotonic()
    limited = await burst(RateLimiter([window]), 1000)
    elapsed = time.monotonic() - started
    assert [r for r in limited if isinstance(r, BaseException)] == []
    assert sandbox.admin.status_counts()["GET /me"] == {"200": 1000}
    # The limiter did spread the burst: 1000 calls need at least 7 more windows after the first.
    assert elapsed >= (1000 // window[0] - 1) * window[1]
