"""Client unit tests at the HTTP edge (respx): error translation, Retry-After, response
shapes, lifecycle, argument checks, and secrets kept out of messages, reprs and logs."""

from __future__ import annotations

import base64
import logging
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from dastra import (
    DastraAuthError,
    DastraClient,
    DastraConfigError,
    DastraConnectionError,
    DastraError,
    DastraNotFound,
    DastraRateLimited,
    DastraRejected,
    DastraResponseError,
    DastraServerError,
    DastraTimeout,
    RateLimiter,
)
from dastra.settings import DastraSettings

BASE = "https://api.dastra.test"
API_KEY = "sk-private-DO-NOT-LEAK-1234567890"
CLIENT_SECRET = "oauth-secret-DO-NOT-LEAK-0987654321"


def _settings(**overrides: Any) -> DastraSettings:
    values: dict[str, Any] = {
        "base_url": BASE,
        "api_key": SecretStr(API_KEY),
        "retry_deadline_s": 0,
    }
    return DastraSettings(**(values | overrides))


def _client(**overrides: Any) -> DastraClient:
    return DastraClient(_settings(**overrides), limiter=RateLimiter.unlimited())


@pytest.mark.parametrize(
    ("status", "headers", "body", "error", "attrs"),
    [
        (
            400,
            {},
            {"title": "One or more validation errors occurred.", "errors": {"Title": ["req"]}},
            DastraRejected,
            {"field_errors": {"Title": ["req"]}, "kind": "rejected"},
        ),
        (401, {}, None, DastraAuthError, {"kind": "auth"}),
        (403, {}, None, DastraAuthError, {"status": 403}),
        (404, {}, {"title": "Not Found"}, DastraNotFound, {"title": "Not Found"}),
        (409, {}, None, DastraRejected, {"field_errors": {}}),
        (408, {}, None, DastraTimeout, {"outcome_unknown": False}),
        (429, {"Retry-After": "12"}, None, DastraRateLimited, {"retry_after": 12.0}),
        (429, {}, None, DastraRateLimited, {"retry_after": None}),
        (500, {}, None, DastraServerError, {"outcome_unknown": True}),
        (503, {}, None, DastraServerError, {"outcome_unknown": False, "retry_after": None}),
        (503, {"Retry-After": "3"}, None, DastraServerError, {"retry_after": 3.0}),
        (502, {"Retry-After": "2"}, None, DastraServerError, {"retry_after": 2.0}),
        (408, {"Retry-After": "4"}, None, DastraTimeout, {"retry_after": 4.0}),
    ],
)
async def test_statuses_become_typed_errors(
    status: int,
    headers: dict[str, str],
    body: Any,
    error: type[DastraError],
    attrs: dict[str, Any],
) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/me").respond(status, headers=headers, json=body)
        async with _client() as dastra:
            with pytest.raises(error) as caught:
                await dastra.me()
    for name, value in attrs.items():
        assert getattr(caught.value, name) == value
    assert caught.value.status == status and caught.value.path == "/me"


@pytest.mark.parametrize(
    ("exc", "error", "unknown"),
    [
        (httpx.ConnectError("refused"), DastraConnectionError, False),
        (httpx.ConnectTimeout("slow"), DastraTimeout, False),
        (httpx.ReadTimeout("slow"), DastraTimeout, True),
        (httpx.RemoteProtocolError("gone"), DastraConnectionError, True),
    ],
)
async def test_transport_errors_are_translated(
    exc: Exception, error: type[DastraError], unknown: bool
) -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.post("/v1/ws/1/Tasks").mock(side_effect=exc)
        async with _client() as dastra:
            with pytest.raises(error) as caught:
                await dastra.create_task(1, {"label": "x"})
    assert getattr(caught.value, "outcome_unknown", None) is unknown
    assert isinstance(caught.value.__cause__, httpx.TransportError)


@pytest.mark.parametrize("form", ["seconds", "http-date"])
async def test_a_503_with_retry_after_is_not_retried_before_it(form: str) -> None:
    seen: list[float] = []

    def _answer(request: httpx.Request) -> httpx.Response:
        seen.append(time.monotonic())
        if len(seen) > 1:
            return httpx.Response(200, json={"id": 1})
        if form == "seconds":
            return httpx.Response(503, headers={"Retry-After": "1"})
        # HTTP dates have whole seconds: 2 s ahead is at least 1 s ahead once truncated.
        when = datetime.now(UTC) + timedelta(seconds=2)
        return httpx.Response(503, headers={"Retry-After": format_datetime(when, usegmt=True)})

    with respx.mock(base_url=BASE) as mock:
        mock.get("/me").mock(side_effect=_answer)
        async with _client(retry_deadline_s=10, retry_backoff_s=0.01) as dastra:
            await dastra.me()
    assert len(seen) == 2
    assert seen[1] - seen[0] >= 1.0  # backoff alone would have waited at most 0.01 s


async def test_a_retry_after_beyond_the_deadline_is_not_waited_for() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/me").respond(503, headers={"Retry-After": "30"})
        async with _client(retry_deadline_s=2, retry_backoff_s=0.01) as dastra:
            with pytest.raises(DastraServerError) as caught:
                await dastra.me()
    assert caught.value.retry_after == 30.0 and route.call_count == 1


async def test_a_connect_error_on_a_post_is_retried() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.post("/v1/ws/1/Tasks")
        route.side_effect = [httpx.ConnectError("refused"), httpx.Response(200, json={"id": 9})]
        async with _client(retry_deadline_s=5, retry_backoff_s=0.01) as dastra:
            task = await dastra.create_task(1, {"label": "x"})
    assert task.id == 9 and route.call_count == 2


async def test_both_workspace_shapes_are_accepted() -> None:
    shapes = [
        {"workSpaces": [{"id": 1, "label": "A"}], "pricingPlan": None},
        {"items": [{"id": 1, "label": "A"}], "total": 1},
        [{"id": 1, "label": "A"}],
    ]
    for shape in shapes:
        with respx.mock(base_url=BASE) as mock:
            mock.get("/v1/WorkSpaces").respond(200, json=shape)
            async with _client() as dastra:
                assert [w.id for w in await dastra.workspaces()] == [1]


async def test_unexpected_shapes_are_response_errors_without_the_data() -> None:
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/ws/1/Tasks/1").respond(200, json={"id": "not-a-number", "email": "x@y.z"})
        mock.get("/v1/ws/1/Tasks").respond(200, json={"items": "nope"})
        mock.get("/me").respond(200, text="<html>")
        async with _client() as dastra:
            with pytest.raises(DastraResponseError) as caught:
                await dastra.get_task(1, 1)
            with pytest.raises(DastraResponseError):
                await dastra.tasks_page(1)
            with pytest.raises(DastraResponseError):
                await dastra.me()
    assert "id" in str(caught.value) and "not-a-number" not in str(caught.value)


async def test_unknown_members_and_enum_values_are_kept() -> None:
    task = {"id": 1, "state": "Blocked", "priority": "High", "brandNew": {"x": 1}}
    with respx.mock(base_url=BASE) as mock:
        mock.get("/v1/ws/1/Tasks/1").respond(200, json=task)
        async with _client() as dastra:
            got = await dastra.get_task(1, 1)
    assert got.state == "Blocked" and got.priority == "High"
    assert got.model_extra == {"brandNew": {"x": 1}} and got.raw == task


async def test_query_parameters() -> None:
    with respx.mock(base_url=BASE) as mock:
        route = mock.get("/v1/ws/1/DataSubjectRequests").respond(
            200, json={"items": [], "total": 0, "size": 10, "page": 2}
        )
        async with _client() as dastra:
            await dastra.rights_requests_page(
                1,
                page=2,
                size=10,
                sort_by="dateCreation",
                asc=False,
                states=["Open", "Processing"],
                area_id=3,
                archived=False,
                filters={"field": "dateCreation", "operator": "greaterThan", "value": "2024"},
            )
    params = route.calls.last.request.url.params
    assert params.get_list("states") == ["Open", "Processing"]
    assert params["areaId"] == "3" and params["archived"] == "false" and params["asc"] == "false"
    assert params["sortBy"] == "dateCreation" and params["page"] == "2"
    assert params["filters"] == '{"field":"dateCreation","operator":"greaterThan","value":"2024"}'


async def test_arguments_are_checked_before_any_io() -> None:
    with respx.mock(base_url=BASE, assert_all_called=False) as mock:
        async with _client() as dastra:
            with pytest.raises(DastraConfigError):
                await dastra.tasks_page(1, size=501)
            with pytest.raises(DastraConfigError):
                await dastra.tasks_page(1, page=0)
            with pytest.raises(DastraConfigError):
                await dastra.get_task("1/../../admin", 1)
            with pytest.raises(DastraConfigError):
                await dastra.get_processing(1, "not-a-uuid")
            with pytest.raises(DastraConfigError):
                dastra.iter_tasks(1, size=1000)
        assert mock.calls.call_count == 0
    with pytest.raises(DastraConfigError):
        DastraClient(_settings(base_url=None))
    with pytest.raises(DastraConfigError):
        DastraClient(_settings(api_key=None))


async def test_using_an_unopened_or_closed_client_says_what_to_do() -> None:
    dastra = _client()
    with pytest.raises(RuntimeError, match="async with DastraClient"):
        await dastra.me()
    async with dastra:
        pass
    with pytest.raises(RuntimeError, match="closed"):
        await dastra.me()
    with pytest.raises(RuntimeError, match="create a new one"):
        await dastra.__aenter__()


async def test_secrets_stay_out_of_errors_reprs_and_logs(
    caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    oauth = _settings(
        api_key=None,
        client_id="public-id",
        client_secret=SecretStr(CLIENT_SECRET),
        token_url=f"{BASE}/connect/token",
        retry_deadline_s=2,
        retry_backoff_s=0.01,
    )
    errors: list[BaseException] = []
    with respx.mock(base_url=BASE) as mock:
        mock.get("/me").side_effect = [
            httpx.Response(503),
            httpx.Response(401),
            httpx.Response(401),
        ]
        mock.get("/v1/WorkSpaces").respond(400, json={"errors": {"Key": [API_KEY]}})
        async with _client(retry_deadline_s=2, retry_backoff_s=0.01) as dastra:
            for call in (dastra.me, dastra.workspaces):
                try:
                    await call()
                except DastraError as exc:
                    errors.append(exc)
            reprs = [repr(dastra), repr(_settings())]
        mock.post("/connect/token").respond(400, json={"error": "invalid_client"})
        async with DastraClient(oauth, limiter=RateLimiter.unlimited()) as dastra:
            try:
                await dastra.me()
            except DastraError as exc:
                errors.append(exc)
            reprs += [repr(dastra), repr(oauth)]
    assert [type(e) for e in errors] == [DastraAuthError, DastraRejected, DastraAuthError]
    captured = capsys.readouterr()
    outputs = [caplog.text, captured.out, captured.err]
    text = "\n".join([*(str(e) for e in errors), *(repr(e) for e in errors), *reprs, *outputs])
    assert "dastra.retry" in text  # the retry was logged...
    basic = base64.b64encode(f"public-id:{CLIENT_SECRET}".encode()).decode()
    for secret in (API_KEY, CLIENT_SECRET, basic):  # ...but no secret, nor its Basic form
        assert secret not in text
