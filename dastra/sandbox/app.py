"""The Dastra sandbox as an ASGI app: `create_app(config)` builds it, nothing at import time.

Consumes HTTP requests shaped like Dastra's public API (the spec subset's paths, methods, auth,
paging, sorting, filters and bodies) and admin requests under `/_sandbox`. Produces Dastra's
response shapes and status codes, ASP.NET-style 400 bodies, 401 without valid credentials,
429 + `Retry-After` over the rate limit, plus whatever faults the tests injected.

    app = create_app(SandboxSettings(rate_limit=False))
    uvicorn.run(app, port=8800)        # or SandboxServer / `dastra-kafka sandbox`
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import math
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from http import HTTPStatus
from typing import Any, Literal
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dastra.apidocs import add_api_docs
from dastra.sandbox.connections import abort_connection
from dastra.sandbox.controls import Controls, FaultSpec
from dastra.sandbox.query import (
    FilterMode,
    QueryError,
    compile_filter,
    page_of,
    select_fields,
    sort_items,
)
from dastra.sandbox.settings import SandboxSettings
from dastra.sandbox.state import NotFoundError, SandboxState, StateError, blank, project
from dastra.sandbox.validation import problem, validate_body
from dastra.spec import load_spec

__all__ = ["ADMIN_PREFIX", "ADMIN_TOKEN_HEADER", "SandboxRuntime", "create_app"]

ADMIN_PREFIX = "/_sandbox"
ADMIN_TOKEN_HEADER = "X-Sandbox-Admin-Token"  # noqa: S105 - a header name
_PUBLIC = frozenset({"/status", "/connect/token"})
_DOCS = ("/docs", "/openapi.json")
_JSON_TYPES = ("application/json", "text/json", "application/json-patch+json")
_SCHEMAS = {
    "areas": "AreaDto",
    "processings": "DataProcessingDto",
    "actors": "ActorDto",
    "rightsRequests": "DataSubjectRequestDto",
    "tasks": "TaskDto",
}


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        content=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json; charset=utf-8",
        headers=dict(headers or {}),
    )


def _problem(status: int, errors: dict[str, list[str]] | None = None) -> Response:
    title = (
        "One or more validation errors occurred."
        if errors is not None
        else HTTPStatus(status).phrase
    )
    return Response(
        content=json.dumps(problem(status, title, errors)),
        status_code=status,
        media_type="application/problem+json; charset=utf-8",
    )


class _ForbiddenError(Exception):
    pass


class _BadBodyError(Exception):
    def __init__(self, status: int, errors: dict[str, list[str]] | None) -> None:
        super().__init__(str(errors))
        self.status = status
        self.errors = errors


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


async def _send_simple(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    headers: Mapping[str, str] | None = None,
) -> None:
    raw_headers = [(b"content-type", content_type.encode())]
    raw_headers.extend((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())
    raw_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def _wait_disconnect(receive: Receive, within_s: float) -> bool:
    try:
        async with asyncio.timeout(within_s):
            while (await receive())["type"] != "http.disconnect":
                pass
    except TimeoutError:
        return False
    return True


class SandboxRuntime:
    """What one sandbox app owns: its settings, its data and its controls."""

    def __init__(self, config: SandboxSettings) -> None:
        self.config = config
        self.state = SandboxState(config)
        self.controls = Controls(config)
        self.app: FastAPI | None = None
        spec = load_spec()
        self.fields = {kind: set(spec.properties(name)) for kind, name in _SCHEMAS.items()}
        self.filter_mode = FilterMode(
            pascal=config.filter_case == "pascal", tz=None if config.tz == "UTC" else config.tz
        )

    def reset(self) -> None:
        self.state.reset()
        self.controls.reset()

    def template(self, scope: Scope) -> str:
        """The route template of a request, `{workspaceId}` shortened to `{ws}`."""
        partial: str | None = None
        routes = self.app.router.routes if self.app is not None else []
        for route in routes:
            match, _ = route.matches(scope)
            path = getattr(route, "path", None)
            if match == Match.FULL and path:
                return str(path).replace("{workspaceId}", "{ws}")
            if match == Match.PARTIAL and path and partial is None:
                partial = str(path).replace("{workspaceId}", "{ws}")
        return partial or str(scope["path"])

    def authenticated(self, scope: Scope) -> bool:
        key = _header(scope, "x-api-key")
        if key is not None:
            return secrets.compare_digest(
                key.encode(), self.config.private_key.get_secret_value().encode()
            )
        authorization = _header(scope, "authorization") or ""
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and self.controls.token_valid(token.strip())

    def admin_allowed(self, scope: Scope) -> bool:
        if self.config.admin_token is None:
            return True
        given = _header(scope, ADMIN_TOKEN_HEADER) or ""
        return secrets.compare_digest(
            given.encode(), self.config.admin_token.get_secret_value().encode()
        )


class _SandboxMiddleware:
    """Counts calls, injects faults, authenticates and rate-limits Dastra API calls."""

    def __init__(self, app: ASGIApp, runtime: SandboxRuntime) -> None:
        self.app = app
        self.runtime = runtime

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            if not self.runtime.admin_allowed(scope):
                body = json.dumps(problem(401, "Unauthorized")).encode()
                await _send_simple(send, 401, body, "application/problem+json")
                return
            await self.app(scope, receive, send)
            return
        if path.startswith(_DOCS):
            await self.app(scope, receive, send)
            return
        controls = self.runtime.controls
        method: str = scope["method"]
        template = self.runtime.template(scope)
        key = f"{method} {template}"
        controls.count(key)
        status: list[int] = []

        async def send_counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(int(message["status"]))
            await send(message)

        try:
            await self._handle(scope, receive, send_counted, method, path, template)
        finally:
            controls.count_status(key, str(status[0]) if status else "no response")

    async def _handle(
        self, scope: Scope, receive: Receive, send: Send, method: str, path: str, template: str
    ) -> None:
        controls = self.runtime.controls
        fault = controls.take_fault(method, path, template)
        if fault is not None:
            spec = fault.spec
            if spec.latency_s:
                await asyncio.sleep(spec.latency_s)
            if spec.kind == "drop":
                if not abort_connection(scope):
                    await _send_simple(send, 502, b"drop needs the sandbox's server", "text/plain")
                    return
                await _wait_disconnect(receive, 5.0)
                return
            if spec.kind == "hang":
                if not await _wait_disconnect(receive, spec.hang_s):
                    abort_connection(scope)
                return
            if spec.kind == "status" and spec.status is not None:
                headers: dict[str, str] = {}
                if spec.retry_after is not None:
                    value = spec.retry_after
                    headers["Retry-After"] = f"{value:g}" if isinstance(value, float) else value
                if spec.body is not None:
                    await _send_simple(
                        send, spec.status, json.dumps(spec.body).encode(), "application/json",
                        headers,
                    )  # fmt: skip
                else:
                    body = json.dumps(problem(spec.status, HTTPStatus(spec.status).phrase))
                    await _send_simple(
                        send, spec.status, body.encode(), "application/problem+json", headers
                    )
                return
        if path not in _PUBLIC:
            if not self.runtime.authenticated(scope):
                await _send_simple(
                    send, 401, b"", "text/plain", {"WWW-Authenticate": "Bearer, APIKey"}
                )
                return
            wait = controls.admit(f"{method} {template}")
            if wait is not None:
                await _send_simple(
                    send,
                    429,
                    controls.exceeded_message().encode(),
                    "text/plain",
                    {"Retry-After": str(max(1, math.ceil(wait)))},
                )
                return
        await self.app(scope, receive, send)


# --- request helpers -------------------------------------------------------------------------


async def _read_json(request: Request) -> Any:
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    raw = await request.body()
    if not raw.strip():
        raise _BadBodyError(400, {"": ["A non-empty request body is required."]})
    if content_type not in _JSON_TYPES and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise _BadBodyError(415, None)
    try:
        return json.loads(raw)
    except ValueError:
        raise _BadBodyError(
            400, {"$": ["The request body is not valid JSON. Path: $ | LineNumber: 0."]}
        ) from None


def _validated(schema: str, body: Any, *, partial: bool = False) -> dict[str, Any]:
    errors = validate_body(schema, body)
    if errors and partial:
        errors = {k: [m for m in v if "field is required" not in m] for k, v in errors.items()}
        errors = {k: v for k, v in errors.items() if v} or None
    if errors:
        raise _BadBodyError(400, errors)
    assert isinstance(body, dict)
    return body


def _check_enum(param: str, values: list[str] | None, enum: str) -> list[str] | None:
    if not values:
        return None
    known = load_spec().enum_values(enum)
    lowered = {v.casefold(): v for v in known}
    out: list[str] = []
    for value in values:
        if value.casefold() not in lowered:
            raise QueryError(param, f"The value '{value}' is not valid.")
        out.append(lowered[value.casefold()])
    return out


def _text_match(q: str | None, *fields: str) -> Callable[[Mapping[str, Any]], bool] | None:
    if not q:
        return None
    needle = q.casefold()
    return lambda obj: any(needle in str(obj.get(f) or "").casefold() for f in fields)


class ListQuery(BaseModel):
    page: int | None = None
    size: int | None = None
    skip: int | None = None
    sort_by: str | None = None
    asc: bool | None = None
    filters: str | None = None
    select: str | None = None


def _list_query(
    page: int | None = Query(None, description="1-based page index"),
    size: int | None = Query(None, description="page size (default 20, max 500)"),
    skip: int | None = Query(None, description="items to skip (instead of page)"),
    sort_by: str | None = Query(None, alias="sortBy", description="field to sort by"),
    asc: bool | None = Query(None, description="true to sort ascending (default false)"),
    filters: str | None = Query(None, description="JsonRuleEngine JSON rule"),
    select: str | None = Query(None, description="comma-separated fields to return"),
) -> ListQuery:
    return ListQuery(
        page=page, size=size, skip=skip, sort_by=sort_by, asc=asc, filters=filters, select=select
    )


def _one_of(
    *predicates: Callable[[Mapping[str, Any]], bool] | None,
) -> Callable[[Mapping[str, Any]], bool]:
    active = [p for p in predicates if p is not None]
    return lambda obj: all(p(obj) for p in active)


def _field_in(field: str, values: list[Any] | None) -> Callable[[Mapping[str, Any]], bool] | None:
    if not values:
        return None
    wanted = set(values)
    return lambda obj: obj.get(field) in wanted


def _field_is(field: str, value: Any) -> Callable[[Mapping[str, Any]], bool] | None:
    if value is None:
        return None
    return lambda obj: obj.get(field) == value


def _task_visibility(
    config: SandboxSettings, archived: bool | None, include_children: bool | None
) -> list[Callable[[Mapping[str, Any]], bool] | None]:
    """The task list's `archived` and `includeChildren`: by default `archived` filters (true:
    only archived ones) and sub-tasks are listed; the strict modes hide each unless asked."""
    keep: list[Callable[[Mapping[str, Any]], bool] | None] = []
    if config.task_archived_hidden:
        if not archived:
            keep.append(lambda o: not o.get("archived"))
    else:
        keep.append(_field_is("archived", archived))
    if config.task_children_hidden and not include_children:
        keep.append(lambda o: o.get("parentId") is None)
    return keep


def _dotnet_task_defaults(body: dict[str, Any]) -> dict[str, Any]:
    """The strict mode `dotnet_defaults`: what ASP.NET would bind for the fields a task body
    leaves out. `areaId` (a non-nullable int) is 0, which names no area; `priority` is the
    enum's first value, High."""
    if not body.get("areaId"):
        raise StateError({"AreaId": ["'Area Id' must not be empty."]})
    return {**body, "priority": body.get("priority") or "High"}


def _paged(
    runtime: SandboxRuntime,
    kind: str,
    items: list[dict[str, Any]],
    query: ListQuery,
    keep: Callable[[Mapping[str, Any]], bool],
) -> Response:
    known = runtime.fields[kind]
    predicate = compile_filter(query.filters, known, runtime.filter_mode)
    selected = [i for i in items if keep(i) and (predicate is None or predicate(i))]
    asc = bool(query.asc)
    if (query.sort_by or "id").casefold() == "id" and kind != "processings":
        ordered = selected if asc else selected[::-1]  # stored in id order already
    else:
        ordered = sort_items(selected, query.sort_by, asc, known)
    chunk, page, size = page_of(ordered, query.page, query.size, query.skip)
    return _json(
        {
            "items": select_fields(chunk, query.select),
            "total": len(selected),
            "size": size,
            "page": page,
        }
    )


# --- admin bodies ----------------------------------------------------------------------------


class BulkSpec(BaseModel):
    kind: Literal["rightsRequests", "rights-requests", "tasks", "actors"]
    count: int = Field(ge=1, le=200_000)
    ws: int | None = None
    template: dict[str, Any] = Field(default_factory=dict)


class ConfigSpec(BaseModel):
    rate_limit: bool | None = None
    rate_limit_windows: list[tuple[int, float]] | None = None
    token_lifetime_s: float | None = Field(default=None, gt=0)


# --- the app ---------------------------------------------------------------------------------


def create_app(config: SandboxSettings | None = None) -> FastAPI:
    """A fresh sandbox app with its own state (seeded, or loaded from `config.db`)."""
    config = config or SandboxSettings()
    runtime = SandboxRuntime(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            runtime.state.close()

    app = FastAPI(
        title="Dastra sandbox",
        version="1",
        description=(
            "A local, stateful stand-in for Dastra's public API (https://api.dastra.eu), "
            "following its OpenAPI spec for the endpoints dastra-kafka uses. Authenticate with "
            "the header `X-API-Key: <private key>` (click Authorize) or an OAuth2 token from "
            "`POST /connect/token`. Test controls live under `/_sandbox`."
        ),
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_api_docs(app)
    runtime.app = app
    app.state.runtime = runtime
    app.add_middleware(_SandboxMiddleware, runtime=runtime)
    state = runtime.state
    spec = load_spec()

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(_request: Request, exc: RequestValidationError) -> Response:
        errors: dict[str, list[str]] = {}
        for err in exc.errors():
            name = str(err["loc"][-1]) if err["loc"] else "$"
            if err["loc"] and err["loc"][0] == "body":  # admin bodies: pydantic's own words
                errors.setdefault(name, []).append(str(err.get("msg")))
            elif err.get("type") == "missing":
                errors.setdefault(name, []).append(f"The {name} field is required.")
            else:
                errors.setdefault(name, []).append(f"The value '{err.get('input')}' is not valid.")
        return _problem(400, errors)

    @app.exception_handler(QueryError)
    async def _bad_query(_request: Request, exc: QueryError) -> Response:
        return _problem(400, {exc.param: [exc.message]})

    @app.exception_handler(StateError)
    async def _refused(_request: Request, exc: StateError) -> Response:
        return _problem(400, exc.errors)

    @app.exception_handler(_BadBodyError)
    async def _bad_body(_request: Request, exc: _BadBodyError) -> Response:
        return _problem(exc.status, exc.errors)

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, _exc: NotFoundError) -> Response:
        return _problem(404)

    @app.exception_handler(_ForbiddenError)
    async def _forbidden(_request: Request, _exc: _ForbiddenError) -> Response:
        return _problem(403)

    def workspace(ws: str = Path(alias="workspaceId", description="workspace id")) -> int:
        try:
            number = int(ws)
        except ValueError:
            raise QueryError("workspaceId", f"The value '{ws}' is not valid.") from None
        if not state.has_workspace(number):
            raise _ForbiddenError()  # a key sees only its tenant's workspaces
        return number

    def _body_doc(schema: str, response: Mapping[str, Any] | None = None) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _ref(schema)}},
            }
        }  # fmt: skip
        if response is not None:
            doc["responses"] = {
                "200": {
                    "description": "Success",
                    "content": {"application/json": {"schema": response}},
                }
            }  # fmt: skip
        return doc

    def _ref(name: str) -> dict[str, Any]:
        return {"$ref": f"#/components/schemas/{name}"}

    # --- status, identity, tenant ------------------------------------------------------------

    @app.get("/status", tags=["Status"], summary="API status (no authentication)")
    async def status() -> Response:
        return _json({"status": "Healthy", "sandbox": True})

    @app.get("/me", tags=["Status"], summary="The user behind the credentials")
    async def me() -> Response:
        return _json(state.api_user())

    @app.get("/rate-limiting-state", tags=["Status"], summary="The rate limits and what is left")
    async def rate_limiting_state() -> Response:
        return _json({"rules": runtime.controls.rate_state()})

    @app.post("/connect/token", tags=["OAuth2"], summary="OAuth2 client credentials")
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                pair = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return _json({"error": "invalid_client"}, 400)
            client_id, _, client_secret = pair.partition(":")
        if form.get("grant_type") != "client_credentials":
            return _json({"error": "unsupported_grant_type"}, 400)
        if not client_id or not client_secret:
            return _json({"error": "invalid_client"}, 400)
        public_ok = secrets.compare_digest(client_id.encode(), config.public_key.encode())
        private_ok = secrets.compare_digest(
            client_secret.encode(), config.private_key.get_secret_value().encode()
        )
        if not (public_ok and private_ok):
            return _json({"error": "invalid_client"}, 400)
        if form.get("scope") not in (None, "api1"):
            return _json({"error": "invalid_scope"}, 400)
        access_token, expires_in = runtime.controls.issue_token()
        return _json(
            {
                "access_token": access_token,
                "expires_in": expires_in,
                "token_type": "Bearer",
                "scope": "api1",
            }
        )

    @app.get("/v1/WorkSpaces", tags=["WorkSpaces"], summary="The workspaces list")
    async def workspaces(
        q: str | None = None,
        state_: str | None = Query(None, alias="state"),
        query: ListQuery = Depends(_list_query),
    ) -> Response:
        found = list(state.workspaces.values())
        if q:
            found = [w for w in found if q.casefold() in w["label"].casefold()]
        if state_:
            found = [w for w in found if w["state"].casefold() == state_.casefold()]
        chunk, _, _ = page_of(found, query.page, query.size, query.skip)
        body = blank("WorkSpaceListDto")
        body["workSpaces"] = chunk
        return _json(body)

    @app.get("/v1/WorkSpaces/{id}", tags=["WorkSpaces"], summary="One workspace")
    async def one_workspace(id: int) -> Response:
        if id not in state.workspaces:
            raise NotFoundError(str(id))
        return _json(state.workspaces[id])

    @app.get("/v1/TenantUsers", tags=["TenantUsers"], summary="Users of the tenant")
    async def tenant_users(
        q: str | None = None,
        workspace_id: int | None = Query(None, alias="workspaceId"),
        ids: list[int] | None = Query(None),
        query: ListQuery = Depends(_list_query),
    ) -> Response:
        users = list(state.users.values())
        keep = _one_of(
            _text_match(q, "displayName", "email", "givenName", "familyName"),
            _field_in("id", ids),
        )
        selected = [u for u in users if keep(u)]
        chunk, page, size = page_of(selected, query.page, query.size, query.skip)
        return _json(
            {
                "items": select_fields(chunk, query.select),
                "total": len(selected),
                "size": size,
                "page": page,
            }
        )

    # --- areas -------------------------------------------------------------------------------

    @app.get("/v1/ws/{workspaceId}/Areas", tags=["Areas"], summary="Areas (flattened)")
    async def areas(
        ws: int = Depends(workspace),
        type_: str | None = Query(None, alias="type"),
        ref: str | None = None,
        q: str | None = None,
        parent_id: int | None = Query(None, alias="parentId"),
        query: ListQuery = Depends(_list_query),
    ) -> Response:
        types = _check_enum("type", [type_] if type_ else None, "AreaType")
        keep = _one_of(
            _field_in("type", types),
            _field_is("ref", ref),
            _text_match(q, "label", "ref"),
            _field_is("parentId", parent_id),
        )
        return _paged(runtime, "areas", state.items("areas", ws), query, keep)

    # --- rights requests ---------------------------------------------------------------------

    @app.get(
        "/v1/ws/{workspaceId}/DataSubjectRequests",
        tags=["DataSubjectRequests"],
        summary="Rights requests (paged)",
    )
    async def rights_requests(
        ws: int = Depends(workspace),
        q: str | None = None,
        archived: bool | None = None,
        states: list[str] | None = Query(None),
        purposes: list[str] | None = Query(None),
        area_id: int | None = Query(None, alias="areaId"),
        ids: list[int] | None = Query(None),
        users: list[int] | None = Query(None),
        workflows: list[int] | None = Query(None),
        query: ListQuery = Depends(_list_query),
    ) -> Response:
        wanted_purposes = _check_enum("purposes", purposes, "DataSubjectPurposeType")
        keep = _one_of(
            _text_match(q, "title", "email", "givenName", "familyName", "refId"),
            _field_is("archived", archived),
            _field_in("state", _check_enum("states", states, "DataSubjectRequestState")),
            (lambda o: bool(set(o["purposes"]) & set(wanted_purposes)))
            if wanted_purposes
            else None,
            _field_is("areaId", area_id),
            _field_in("id", ids),
            _field_in("operatorId", users),
            _field_in("workFlowStepId", workflows),
        )
        return _paged(runtime, "rightsRequests", state.items("rightsRequests", ws), query, keep)

    @app.get(
        "/v1/ws/{workspaceId}/DataSubjectRequests/{id}",
        tags=["DataSubjectRequests"],
        summary="One rights request",
    )
    async def rights_request(id: int, ws: int = Depends(workspace)) -> Response:
        return _json(state.get("rightsRequests", ws, id))

    @app.post(
        "/v1/ws/{workspaceId}/DataSubjectRequests",
        tags=["DataSubjectRequests"],
        summary="Create a rights request",
        openapi_extra=_body_doc("DataSubjectRequestDto", _ref("DataSubjectRequestLightDto")),
    )
    async def create_rights_request(request: Request, ws: int = Depends(workspace)) -> Response:
        body = _validated("DataSubjectRequestDto", await _read_json(request))
        created = state.create_rights_request(ws, body)
        return _json(project(created, "DataSubjectRequestLightDto"))

    # --- tasks -------------------------------------------------------------------------------

    @app.get("/v1/ws/{workspaceId}/Tasks", tags=["Tasks"], summary="Tasks (paged)")
    async def tasks(
        ws: int = Depends(workspace),
        q: str | None = None,
        archived: bool | None = None,
        states: list[str] | None = Query(None),
        prios: list[str] | None = Query(None),
        ids: list[int] | None = Query(None),
        users: list[int] | None = Query(None),
        workflows: list[int] | None = Query(None),
        area_id: int | None = Query(None, alias="areaId"),
        object_type: str | None = Query(None, alias="objectType"),
        object_ids: list[str] | None = Query(None, alias="objectIds"),
        parent_id: int | None = Query(None, alias="parentId"),
        exclude_done: bool | None = Query(None, alias="excludeDone"),
        include_children: bool | None = Query(None, alias="includeChildren"),
        query: ListQuery = Depends(_list_query),
    ) -> Response:
        object_types = _check_enum(
            "objectType", [object_type] if object_type else None, "TaskObjectType"
        )
        keep = _one_of(
            _text_match(q, "label"),
            *_task_visibility(config, archived, include_children),
            _field_in("state", _check_enum("states", states, "TaskState")),
            _field_in("priority", _check_enum("prios", prios, "Priority")),
            _field_in("id", ids),
            _field_in("assignedToUserId", users),
            _field_in("workFlowStepId", workflows),
            _field_is("areaId", area_id),
            _field_in("objectType", object_types),
            _field_in("objectId", object_ids),
            _field_is("parentId", parent_id),
            (lambda o: o["state"] != "Closed") if exclude_done else None,
        )
        return _paged(runtime, "tasks", state.items("tasks", ws), query, keep)

    @app.get("/v1/ws/{workspaceId}/Tasks/{id}", tags=["Tasks"], summary="One task")
    async def task(id: int, ws: int = Depends(workspace)) -> Response:
        return _json(state.get("tasks", ws, id))

    @app.delete("/v1/ws/{workspaceId}/Tasks/{id}", tags=["Tasks"], summary="Delete a task")
    async def delete_task(id: int, ws: int = Depends(workspace)) -> Response:
        state.get("tasks", ws, id)  # 404 for another workspace's task
        state.delete("tasks", id)
        return _json(True)

    @app.post(
        "/v1/ws/{workspaceId}/Tasks",
        tags=["Tasks"],
        summary="Create a task",
        openapi_extra=_body_doc("TaskCreateUpdateDto", _ref("TaskDto")),
    )
    async def create_task(request: Request, ws: int = Depends(workspace)) -> Response:
        body = _validated("TaskCreateUpdateDto", await _read_json(request))
        if config.dotnet_defaults:
            body = _dotnet_task_defaults(body)
        return _json(state.create_task(ws, body))

    # --- actors ------------------------------------------------------------------------------

    @app.get("/v1/ws/{workspaceId}/Actors", tags=["Actors"], summary="Actors (paged, q= search)")
    async def actors(
        ws: int = Depends(workspace),
        q: str | None = None,
        ids: list[int] | None = Query(None),
        types: list[str] | None = Query(None),
        countries: list[str] | None = Query(None),
        query: ListQuery = Depends(_list_query),
    ) -> Response:
        keep = _one_of(
            _text_match(
                q, "displayName", "companyName", "givenName", "familyName", "email", "contactName"
            ),
            _field_in("id", ids),
            _field_in("actorType", _check_enum("types", types, "ActorType")),
            _field_in("countryCode", [c.upper() for c in countries] if countries else None),
        )
        return _paged(runtime, "actors", state.items("actors", ws), query, keep)

    @app.get("/v1/ws/{workspaceId}/Actors/{id}", tags=["Actors"], summary="One actor")
    async def actor(id: int, ws: int = Depends(workspace)) -> Response:
        return _json(state.get("actors", ws, id))

    @app.post(
        "/v1/ws/{workspaceId}/Actors",
        tags=["Actors"],
        summary="Create an actor",
        openapi_extra=_body_doc("ActorDto", _ref("ActorDto")),
    )
    async def create_actor(request: Request, ws: int = Depends(workspace)) -> Response:
        body = _validated("ActorDto", await _read_json(request))
        return _json(state.create_actor(ws, body))

    # --- processings -------------------------------------------------------------------------

    @app.get(
        "/v1/ws/{workspaceId}/DataProcessings",
        tags=["DataProcessings"],
        summary="Processing activities (paged)",
    )
    async def processings(
        ws: int = Depends(workspace),
        q: str | None = None,
        archived: bool | None = None,
        states: list[str] | None = Query(None),
        area_id: int | None = Query(None, alias="areaId"),
        actor_id: int | None = Query(None, alias="actorId"),
        ids: list[str] | None = Query(None),
        query: ListQuery = Depends(_list_query),
    ) -> Response:
        def linked(obj: Mapping[str, Any]) -> bool:
            return any(
                link.get("actorId") == actor_id
                for name in ("recipients", "stakeHolders", "dataControllers")
                for link in obj.get(name) or []
            )

        keep = _one_of(
            _text_match(q, "label", "ref"),
            _field_is("archived", archived),
            _field_in("state", _check_enum("states", states, "DataProcessingState")),
            _field_is("areaId", area_id),
            _field_in("id", [i.lower() for i in ids] if ids else None),
            linked if actor_id is not None else None,
        )
        return _paged(runtime, "processings", state.items("processings", ws), query, keep)

    @app.get(
        "/v1/ws/{workspaceId}/DataProcessings/{id}",
        tags=["DataProcessings"],
        summary="One processing activity, with its linked actors",
    )
    async def processing(
        id: str, ws: int = Depends(workspace), select: str | None = None
    ) -> Response:
        try:
            key = str(uuid.UUID(id))
        except ValueError:
            raise QueryError("id", f"The value '{id}' is not valid.") from None
        return _json(select_fields([state.get("processings", ws, key)], select)[0])

    @app.post(
        "/v1/ws/{workspaceId}/DataProcessings/recipients/batch",
        tags=["DataProcessings"],
        summary="Link actors to a processing activity (once per actor and role, unless "
        "SANDBOX_DUPLICATE_LINKS)",
        openapi_extra=_body_doc(
            "ActorDataProcessingBatchDto", {"type": "integer", "format": "int32"}
        ),
    )
    async def link_recipients(request: Request, ws: int = Depends(workspace)) -> Response:
        body = _validated("ActorDataProcessingBatchDto", await _read_json(request))
        return _json(state.link_actors(ws, body))

    app.include_router(_admin_router(runtime))

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {})
            components.setdefault("schemas", {}).update(
                {k: v for k, v in spec.schemas.items() if k not in components["schemas"]}
            )
            components.setdefault("securitySchemes", {})["apiKey"] = {
                "type": "apiKey",
                "in": "header",
                "name": "X-API-Key",
            }
            schema["security"] = [{"apiKey": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _admin_router(runtime: SandboxRuntime) -> APIRouter:
    """Test controls: `/_sandbox/*` (no Dastra auth, no rate limit, not counted)."""
    router = APIRouter(prefix=ADMIN_PREFIX, tags=["sandbox admin"])
    state, controls = runtime.state, runtime.controls

    def ws_or_default(ws: int | None) -> int:
        if ws is None:
            return int(next(iter(state.workspaces)))
        if not state.has_workspace(ws):
            raise NotFoundError(f"workspace {ws}")
        return ws

    @router.get("", include_in_schema=False)
    @router.get("/", include_in_schema=False)
    @router.get("/info", summary="What the sandbox holds and where to look")
    async def info() -> Response:
        first = next(iter(state.workspaces))
        return _json(
            {
                "workspaces": list(state.workspaces),
                "defaultWorkspace": first,
                "areas": [a["id"] for a in state.items("areas", first)],
                "processings": [p["id"] for p in state.items("processings", first)],
                "users": list(state.users),
                "config": controls.describe(),
                "docs": "/docs",
            }
        )

    @router.post("/reset", summary="Back to the seeded state; clears faults, counts, config")
    async def reset() -> Response:
        runtime.reset()
        return _json({"workspaces": list(state.workspaces)})

    @router.get("/state", summary="The full state, or one workspace's (and one collection)")
    async def full_state(ws: int | None = None, collection: str | None = None) -> Response:
        if collection is not None and collection not in runtime.fields:
            raise QueryError("collection", f"collection is one of {', '.join(runtime.fields)}")
        if ws is not None:
            ws_or_default(ws)
        return _json(state.snapshot(ws, collection))

    @router.get("/calls", summary="Calls per endpoint (METHOD /path/{template}) and statuses")
    async def calls() -> Response:
        return _json(
            {
                "calls": dict(controls.calls),
                "statuses": {k: dict(v) for k, v in controls.statuses.items()},
            }
        )

    @router.delete("/calls", summary="Zero the call counts and clear the rate limiter's log")
    async def reset_calls() -> Response:
        controls.calls.clear()
        controls.statuses.clear()
        controls.log.clear()
        return _json({})

    @router.get("/requests", summary="The rate limiter's log: each authenticated API call")
    async def requests_log(since: float = 0.0) -> Response:
        return _json(
            [
                {"at": entry.at, "endpoint": entry.endpoint, "admitted": entry.admitted}
                for entry in controls.log
                if entry.at >= since
            ]
        )

    @router.get("/faults", summary="The faults still active")
    async def faults() -> Response:
        return _json([f.describe() for f in controls.faults])

    @router.post("/faults", summary="Inject a fault (status, latency, hang or drop)")
    async def add_fault(spec: FaultSpec) -> Response:
        return _json(controls.add_fault(spec).describe(), 201)

    @router.delete("/faults", summary="Clear every fault")
    async def clear_faults() -> Response:
        controls.faults.clear()
        return _json({})

    @router.delete("/faults/{fault_id}", summary="Clear one fault")
    async def clear_fault(fault_id: str) -> Response:
        controls.faults = [f for f in controls.faults if f.id != fault_id]
        return _json({})

    @router.get("/config", summary="Rate limiting and token lifetime in force")
    async def get_config() -> Response:
        return _json(controls.describe())

    @router.post("/config", summary="Change rate limiting or token lifetime (until reset)")
    async def set_config(spec: ConfigSpec) -> Response:
        controls.configure(
            rate_limit=spec.rate_limit,
            rate_limit_windows=spec.rate_limit_windows,
            token_lifetime_s=spec.token_lifetime_s,
        )
        return _json(controls.describe())

    @router.post("/tokens/expire", summary="Invalidate every OAuth2 token issued so far")
    async def expire_tokens() -> Response:
        return _json({"expired": controls.expire_tokens()})

    def rights_request_defaults(ws: int, body: Mapping[str, Any]) -> dict[str, Any]:
        return {
            "title": "Rights request",
            "locale": "fr",
            "areaId": state.default_area(ws)["id"],
            "purposes": ["Access"],
            "channel": "Form",
            **body,
        }

    @router.post("/rights-requests", summary="Create a rights request as a Dastra user would")
    async def admin_create_rights_request(
        request: Request, ws: int | None = None, backdate_s: float = 0.0
    ) -> Response:
        workspace_id = ws_or_default(ws)
        body = rights_request_defaults(workspace_id, await _admin_body(request))
        _validated("DataSubjectRequestDto", body)
        return _json(
            state.create_rights_request(
                workspace_id, body, creator=state.ui_user(), backdate_s=backdate_s
            )
        )

    @router.patch("/rights-requests/{id}", summary="Update a rights request (bumps dateUpdate)")
    async def admin_update_rights_request(id: int, request: Request) -> Response:
        changes = _validated("DataSubjectRequestDto", await _admin_body(request), partial=True)
        return _json(state.update_rights_request(id, changes))

    @router.delete("/rights-requests/{id}", summary="Delete a rights request (in the app)")
    async def admin_delete_rights_request(id: int) -> Response:
        return _json(state.delete("rightsRequests", id))

    @router.post("/tasks", summary="Create a task as a Dastra user would")
    async def admin_create_task(
        request: Request, ws: int | None = None, backdate_s: float = 0.0
    ) -> Response:
        workspace_id = ws_or_default(ws)
        body = {"label": "Task", "priority": "Medium", **(await _admin_body(request))}
        _validated("TaskCreateUpdateDto", body)
        return _json(
            state.create_task(workspace_id, body, creator=state.ui_user(), backdate_s=backdate_s)
        )

    @router.patch("/tasks/{id}", summary="Update a task (bumps dateUpdate)")
    async def admin_update_task(id: int, request: Request) -> Response:
        changes = _validated("TaskCreateUpdateDto", await _admin_body(request), partial=True)
        return _json(state.update_task(id, changes))

    @router.delete("/tasks/{id}", summary="Delete a task (in the app)")
    async def admin_delete_task(id: int) -> Response:
        return _json(state.delete("tasks", id))

    @router.post("/actors", summary="Create an actor as a Dastra user would")
    async def admin_create_actor(request: Request, ws: int | None = None) -> Response:
        workspace_id = ws_or_default(ws)
        body = _validated("ActorDto", await _admin_body(request))
        return _json(state.create_actor(workspace_id, body, creator=state.ui_user()))

    @router.post("/bulk", summary="Create many rights requests, tasks or actors at once")
    async def bulk(spec: BulkSpec) -> Response:
        workspace_id = ws_or_default(spec.ws)
        kind = "rightsRequests" if spec.kind == "rights-requests" else spec.kind
        template = dict(spec.template)
        if kind == "rightsRequests":
            template = rights_request_defaults(
                workspace_id, {"title": "Bulk request {n}", **template}
            )
            schema = "DataSubjectRequestDto"
        elif kind == "tasks":
            template = {"label": "Bulk task {n}", "priority": "Medium", **template}
            schema = "TaskCreateUpdateDto"
        else:
            template = {"companyName": "Bulk vendor {n}", "actorType": "Morale", **template}
            schema = "ActorDto"
        _validated(schema, {k: v.replace("{n}", "1") if isinstance(v, str) else v
                            for k, v in template.items()})  # fmt: skip
        ids = state.bulk_create(kind, workspace_id, spec.count, template)
        return _json({"created": len(ids), "firstId": ids[0], "lastId": ids[-1]}, 201)

    return router


async def _admin_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise _BadBodyError(400, {"$": ["The request body is not valid JSON."]}) from None
    if not isinstance(body, dict):
        raise _BadBodyError(400, {"$": ["The request body must be a JSON object."]})
    return body
