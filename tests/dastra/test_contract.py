"""Contract: every request the client sends and every response the sandbox returns matches
Dastra's OpenAPI subset (jsonschema, strict: no member the spec does not declare)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from dastra import DastraClient, DastraNotFound, DastraRejected, RateLimiter, Rule
from dastra._auth import auth_from_settings
from dastra.models import ActorCreate, ActorProcessingLink, RightsRequestCreate, TaskCreate
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from dastra.spec import DastraSpec, Operation, load_spec

_TOKEN_RESPONSE = {
    "type": "object",
    "required": ["access_token", "expires_in", "token_type", "scope"],
    "properties": {
        "access_token": {"type": "string", "minLength": 20},
        "expires_in": {"type": "integer", "minimum": 1},
        "token_type": {"const": "Bearer"},
        "scope": {"const": "api1"},
    },
    "additionalProperties": False,
}
_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "traceId": {"type": "string"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}
# The spec declares no schema for these two; Dastra's docs describe a JSON object.
_UNDOCUMENTED = {
    "/v1/WebHookUrls/{id}": {"type": "boolean"},  # PUT and DELETE: 200 "Success", no schema
    "/status": {
        "type": "object",
        "required": ["status"],
        "properties": {"status": {"type": "string", "minLength": 1}},
    },
    "/rate-limiting-state": {
        "type": "object",
        "required": ["rules"],
        "properties": {
            "rules": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "required": ["period", "limit", "remaining"],
                    "properties": {
                        "period": {"type": "string"},
                        "limit": {"type": "integer", "minimum": 1},
                        "remaining": {"type": "integer", "minimum": 0},
                    },
                },
            }
        },
    },
}


@dataclass
class Exchange:
    method: str
    path: str
    request_body: Any
    status: int
    content_type: str
    response_body: Any
    query: list[tuple[str, str]] = field(default_factory=list)


def _resolve(spec: DastraSpec, schema: Any) -> Any:
    ref = schema.get("$ref") if isinstance(schema, dict) else None
    if isinstance(ref, str):
        return spec.schemas[ref.rsplit("/", 1)[-1]]
    return schema


def _typed(spec: DastraSpec, schema: Any, text: str) -> Any:
    """A query-string value read the way ASP.NET binds it to the parameter's schema type."""
    kind = _resolve(spec, schema).get("type")
    if kind == "integer" and re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if kind == "boolean" and text in ("true", "false"):
        return text == "true"
    return text  # a string, or left as text so that the schema rejects it


def _query_errors(
    spec: DastraSpec, operation: Operation, query: list[tuple[str, str]]
) -> list[str]:
    """Every query parameter not declared by `operation`, or whose values do not fit its schema."""
    declared = {p["name"]: p for p in operation.parameters if p.get("in") == "query"}
    problems: list[str] = []
    for name in dict.fromkeys(name for name, _ in query):
        values = [value for key, value in query if key == name]
        if name not in declared:
            problems.append(f"{name}: not a query parameter of {operation.key}")
            continue
        schema = declared[name]["schema"]
        if schema.get("type") == "array":
            instance: Any = [_typed(spec, schema["items"], value) for value in values]
        elif len(values) != 1:
            problems.append(f"{name}: {len(values)} values for a single-valued parameter")
            continue
        else:
            instance = _typed(spec, schema, values[0])
        problems.extend(f"{name}={values}: {e.message}" for e in spec.errors(schema, instance))
        if name == "filters":
            try:
                rule = json.loads(values[0])  # Dastra's JSON rule format
            except ValueError:
                rule = None
            if not isinstance(rule, dict):
                problems.append(f"filters: not a JSON rule: {values[0]}")
    return problems


class RecordingTransport(httpx.AsyncBaseTransport):
    """Real HTTP, plus a copy of every request and response."""

    def __init__(self) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self.exchanges: list[Exchange] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self._inner.handle_async_request(request)
        content = await response.aread()
        await response.aclose()
        content_type = response.headers.get("content-type", "")
        body: Any = None
        if request.content and request.headers.get("content-type") == "application/json":
            body = json.loads(request.content)
        elif request.content:
            body = request.content.decode()
        self.exchanges.append(
            Exchange(
                method=request.method,
                path=request.url.path,
                request_body=body,
                status=response.status_code,
                content_type=content_type,
                response_body=json.loads(content) if "json" in content_type else content,
                query=list(request.url.params.multi_items()),
            )
        )
        return httpx.Response(
            response.status_code, headers=response.headers, content=content, request=request
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


async def _exercise(dastra: DastraClient, sandbox: SandboxServer) -> None:
    """Every client call, on objects made by the client, by the admin path and in bulk."""
    ws = sandbox.workspace_id
    sandbox.admin.create_rights_request(
        title="From the app", email="a@example.com", state="Processing"
    )
    sandbox.admin.bulk_create("tasks", 30, deadline="2031-01-01T00:00:00Z")
    sandbox.admin.bulk_create("actors", 5, countryCode="DE", email="vendor{n}@example.com")
    await dastra.me()
    await dastra.workspaces()
    await dastra.users()
    area = (await dastra.areas(ws)).items[-1]
    request = await dastra.create_rights_request(
        ws,
        RightsRequestCreate(
            title="Erase me",
            locale="en",
            area_id=area.id,
            purposes=["Erasure", "Access"],
            email="e@example.com",
            given_name="E",
            family_name="X",
            country_code="FR",
            ref_id="ref-1",
        ),
    )
    await dastra.get_rights_request(ws, request.id)
    await dastra.rights_requests_page(ws, size=50, filters=Rule("state", "notEqual", "Closed"))
    task = await dastra.create_task(
        ws,
        TaskCreate(
            label="Erase in the CRM",
            description_html="<p>Do it</p>",
            priority="High",
            deadline="2030-05-01T10:00:00Z",
            area_id=area.id,
            object_type="DataSubject",
            object_id=str(request.id),
        ),
    )
    await dastra.get_task(ws, task.id)
    _ = [t async for t in dastra.iter_tasks(ws, size=20)]
    actor = await dastra.create_actor(
        ws,
        ActorCreate(
            actor_type="Physical", given_name="Jo", family_name="Doe", email="jo@example.com"
        ),
    )
    await dastra.get_actor(ws, actor.id)
    await dastra.actors_page(ws, q="vendor", countries=["DE"])
    processing = (await dastra.processings_page(ws)).items[1]
    for role in ("Recipient", "Stakeholder", "DataController", "Recipient"):
        await dastra.link_actors_to_processing(
            ws,
            ActorProcessingLink(
                actor_ids=[actor.id], data_processing_id=processing.id, type=role, label="x"
            ),
        )
    await dastra.get_processing(ws, processing.id)
    await dastra.get_actor(ws, actor.id)  # with its processing links now
    await dastra.processings_page(ws, actor_id=actor.id)
    with pytest.raises(DastraRejected):
        await dastra.create_task(ws, {"label": "x" * 121})
    with pytest.raises(DastraNotFound):
        await dastra.get_rights_request(ws, 1)
    await dastra.rights_requests_page(
        ws, page=2, size=5, sort_by="dateCreation", asc=False, states=["Open", "Processing"]
    )
    await dastra.tasks_page(ws, page=1, size=3, sort_by="id", asc=True)


async def _exercise_the_rest(
    settings: DastraSettings, transport: RecordingTransport, ws: int
) -> None:
    """The operations of the subset the client has no method for, with the client's auth."""
    auth = auth_from_settings(settings)
    async with httpx.AsyncClient(base_url=settings.base_url, transport=transport) as http:
        headers = await auth.headers(http)
        for path in ("/status", "/rate-limiting-state", f"/v1/WorkSpaces/{ws}"):
            response = await http.get(path, headers=headers)
            assert response.status_code == 200, path
        # Dastra's webhooks: registered after the creations above, so nothing is delivered.
        hook = {"url": "http://127.0.0.1:9/none", "workSpaceId": ws, "subscribedEvents": []}
        created = await http.post("/v1/WebHookUrls", json=hook, headers=headers)
        assert created.status_code == 200, created.text
        one = f"/v1/WebHookUrls/{created.json()['id']}"
        answers = [
            await http.get("/v1/WebHookUrls", params={"workspaceId": ws}, headers=headers),
            await http.get(one, headers=headers),
            await http.put(
                one, json={**hook, "subscribedEvents": ["TaskCreation"]}, headers=headers
            ),
            await http.delete(one, headers=headers),
        ]
        assert [a.status_code for a in answers] == [200] * 4


@pytest.mark.parametrize("oauth", [False, True], ids=["api-key", "oauth2"])
async def test_client_requests_and_sandbox_responses_follow_the_spec(
    sandbox: SandboxServer, oauth: bool
) -> None:
    spec = load_spec()
    transport = RecordingTransport()
    settings: DastraSettings = sandbox.dastra_settings(oauth=oauth)
    async with DastraClient(
        settings, transport=transport, limiter=RateLimiter.unlimited()
    ) as dastra:
        await _exercise(dastra, sandbox)
    await _exercise_the_rest(settings, transport, sandbox.workspace_id)

    operations = set()
    for exchange in transport.exchanges:
        where = f"{exchange.method} {exchange.path} -> {exchange.status}"
        if exchange.path == "/connect/token":
            assert exchange.request_body == "grant_type=client_credentials&scope=api1", where
            assert not list(spec.validator(_TOKEN_RESPONSE).iter_errors(exchange.response_body))
            continue
        operation = spec.match(exchange.method, exchange.path)
        assert operation is not None, f"{where}: not an operation of the spec subset"
        operations.add(operation.key)
        assert _query_errors(spec, operation, exchange.query) == [], where
        if exchange.request_body is not None:
            errors = spec.request_errors(exchange.method, exchange.path, exchange.request_body)
            if exchange.status == 200:
                assert [e.message for e in errors] == [], where
        if exchange.status == 200:
            assert exchange.content_type.startswith("application/json"), where
            if operation.response_schema is None:
                # /me has no schema in the spec; Dastra documents it as the current user.
                schema: Any = (
                    "UserDto" if operation.path == "/me" else _UNDOCUMENTED[operation.path]
                )
                errors = spec.errors(schema, exchange.response_body)
            else:
                errors = spec.response_errors(
                    exchange.method, exchange.path, exchange.response_body
                )
            assert [f"{list(e.absolute_path)}: {e.message}" for e in errors] == [], where
        else:
            assert exchange.content_type.startswith("application/problem+json"), where
            assert not list(spec.validator(_PROBLEM).iter_errors(exchange.response_body)), where
    used = {f"{m} {p}" for m, p in (k.split(" ", 1) for k in spec.operations)}
    assert used - operations == set(), "operations of the subset not exercised"
    sent = {name for e in transport.exchanges for name, _ in e.query}
    assert {"page", "size", "sortBy", "asc", "filters", "states", "q", "countries"} <= sent
    assert any(e.status == 400 for e in transport.exchanges)
    assert any(e.status == 404 for e in transport.exchanges)
