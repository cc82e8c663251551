"""The client's span of each HTTP attempt (respx at the HTTP edge, spans in memory): a search's
URL is recorded without the query that carries the e-mail, and a failed attempt's span says
what failed by class, never by text."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import respx
from pydantic import SecretStr

from dastra import DastraClient, DastraTimeout, RateLimiter
from dastra.filters import Rule
from dastra.settings import DastraSettings
from tests.tracing_support import in_memory_spans, views_of

BASE = "https://user:pw@api.dastra.test/base"
EMAIL = "jane.doe@private.example"


def _client() -> DastraClient:
    settings: dict[str, Any] = {
        "base_url": BASE,
        "api_key": SecretStr("sk-test"),
        "retry_deadline_s": 0,
    }
    return DastraClient(DastraSettings(**settings), limiter=RateLimiter.unlimited())


async def test_a_search_span_records_the_url_without_its_query() -> None:
    with respx.mock(base_url="https://api.dastra.test/base") as mock, in_memory_spans() as spans:
        route = mock.get("/v1/ws/7/Actors").respond(200, json={"items": [], "total": 0})
        async with _client() as dastra:
            await dastra.actors_page(7, filters=Rule("email", "equal", EMAIL), q=EMAIL)
        [span] = views_of(spans.get_finished_spans())
    assert route.calls.last.request.url.params["q"] == EMAIL  # the query did carry it
    assert span.name == "GET /v1/ws/{ws}/Actors" and span.kind == "CLIENT"
    assert span.attributes == {
        "http.request.method": "GET",
        "url.full": "https://api.dastra.test/base/v1/ws/7/Actors",
        "url.template": "/v1/ws/{ws}/Actors",
        "server.address": "api.dastra.test",
        "http.response.status_code": 200,
    }


async def test_a_failed_attempt_s_span_names_the_error_class_only() -> None:
    with respx.mock(base_url="https://api.dastra.test/base") as mock, in_memory_spans() as spans:
        mock.get("/v1/ws/7/Actors").mock(side_effect=httpx.ReadTimeout(f"slow for {EMAIL}"))
        async with _client() as dastra:
            with pytest.raises(DastraTimeout):
                await dastra.actors_page(7, q=EMAIL, retry=False)
        [span] = spans.get_finished_spans()
    assert span.status.description == "DastraTimeout"
    assert not span.events  # no recorded exception, whose text could quote anything
    assert EMAIL not in repr(dict(span.attributes or {}))


async def test_without_an_sdk_the_client_records_nothing() -> None:
    with respx.mock(base_url="https://api.dastra.test/base") as mock:
        mock.get("/v1/ws/7/Actors").respond(200, json={"items": [], "total": 0})
        async with _client() as dastra:
            page = await dastra.actors_page(7, q=EMAIL)
    assert page.items == []
