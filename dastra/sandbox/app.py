"""The Dastra sandbox as an ASGI app: `create_app(config)` builds it, nothing at import time.

Consumes HTTP requests shaped like Dastra's public API (the spec subset's paths, methods, auth,
paging, sorting, filters and bodies) and admin requests under `/_sandbox`. Produces Dastra's
response shapes and status codes, ASP.NET-style 400 bodies, 401 without valid credentials,
429 + `Retry-After` over the rate limit, plus whatever faults the tests injected. The test
controls are in `admin_api.py`, what each request meets before its route in `middleware.py`,
JSON bodies in and out in `bodies.py`.

    app = create_app(SandboxSettings(rate_limit=False))
    uvicorn.run(app, port=8800)        # or SandboxServer / `dastra-kafka sandbox`
"""

from __future__ import annotations

import base64
import binascii
import secrets
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from pydantic import BaseModel
from starlette.routing import Match
from starlette.types import Scope

from dastra.apidocs import add_api_docs
from dastra.sandbox.admin_api import ADMIN_PREFIX, admin_router
from dastra.sandbox.bodies import (
    BadBodyError,
    json_response,
    problem_response,
    read_json,
    validated,
)
from dastra.sandbox.controls import Controls
from dastra.sandbox.middleware import SandboxMiddleware
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
from dastra.sandbox.webhooks import SandboxWebhooks
from dastra.spec import load_spec

__all__ = ["ADMIN_PREFIX", "ADMIN_TOKEN_HEADER", "SandboxRuntime", "create_app"]

ADMIN_TOKEN_HEADER = "X-Sandbox-Admin-Token"  # noqa: S105 - a header name
_SCHEMAS = {
    "areas": "AreaDto",
    "processings": "DataProcessingDto",
    "actors": "ActorDto",
    "rightsRequests": "DataSubjectRequestDto",
    "tasks": "TaskDto",
}


class _ForbiddenError(Exception):
    pass


def _header(scope: Scope, name: str) -> str | None:
    wanted = name.lower().encode()
    for key, value in scope.get("headers", []):
        if key.lower() == wanted:
            return bytes(value).decode("latin-1")
    return None


class SandboxRuntime:
    """What one sandbox app owns: its settings, its data and its controls."""

    def __init__(self, config: SandboxSettings) -> None:
        self.config = config
        self.state = SandboxState(config)
        self.controls = Controls(config)
        self.webhooks = SandboxWebhooks(delay_s=config.webhook_delay_s)
        self.app: FastAPI | None = None
        spec = load_spec()
        self.fields = {kind: set(spec.properties(name)) for kind, name in _SCHEMAS.items()}
        self.filter_mode = FilterMode(
            pascal=config.filter_case == "pascal", tz=None if config.tz == "UTC" else config.tz
        )

    def reset(self) -> None:
        self.state.reset()
        self.controls.reset()
        self.webhooks.reset()

    def created(self, kind: str, ws: int, obj: Mapping[str, Any]) -> None:
        """Dastra's webhooks for a new rights request or task (delivered after the answer)."""
        event = "DataSubjectCreation" if kind == "rightsRequests" else "TaskCreation"
        creator = obj.get("creator") or self.state.api_user()
        self.webhooks.notify(ws, event, obj, user_id=int(creator["id"]))

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


# --- request helpers -------------------------------------------------------------------------


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
    return json_response(
        {
            "items": select_fields(chunk, query.select),
            "total": len(selected),
            "size": size,
            "page": page,
        }
    )


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
            await runtime.webhooks.aclose()
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
    app.add_middleware(SandboxMiddleware, runtime=runtime)
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
        return problem_response(400, errors)

    @app.exception_handler(QueryError)
    async def _bad_query(_request: Request, exc: QueryError) -> Response:
        return problem_response(400, {exc.param: [exc.message]})

    @app.exception_handler(StateError)
    async def _refused(_request: Request, exc: StateError) -> Response:
        return problem_response(400, exc.errors)

    @app.exception_handler(BadBodyError)
    async def _bad_body(_request: Request, exc: BadBodyError) -> Response:
        return problem_response(exc.status, exc.errors)

    @app.exception_handler(NotFoundError)
    async def _not_found(_request: Request, _exc: NotFoundError) -> Response:
        return problem_response(404)

    @app.exception_handler(_ForbiddenError)
    async def _forbidden(_request: Request, _exc: _ForbiddenError) -> Response:
        return problem_response(403)

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
        return json_response({"status": "Healthy", "sandbox": True})

    @app.get("/me", tags=["Status"], summary="The user behind the credentials")
    async def me() -> Response:
        return json_response(state.api_user())

    @app.get("/rate-limiting-state", tags=["Status"], summary="The rate limits and what is left")
    async def rate_limiting_state() -> Response:
        return json_response({"rules": runtime.controls.rate_state()})

    @app.post("/connect/token", tags=["OAuth2"], summary="OAuth2 client credentials")
    async def token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("latin-1")).items()}
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        scheme, _, credentials = (request.headers.get("authorization") or "").partition(" ")
        if scheme.lower() == "basic":
            try:
                pair = base64.b64decode(credentials.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return json_response({"error": "invalid_client"}, 400)
            client_id, _, client_secret = pair.partition(":")
        if form.get("grant_type") != "client_credentials":
            return json_response({"error": "unsupported_grant_type"}, 400)
        if not client_id or not client_secret:
            return json_response({"error": "invalid_client"}, 400)
        public_ok = secrets.compare_digest(client_id.encode(), config.public_key.encode())
        private_ok = secrets.compare_digest(
            client_secret.encode(), config.private_key.get_secret_value().encode()
        )
        if not (public_ok and private_ok):
            return json_response({"error": "invalid_client"}, 400)
        if form.get("scope") not in (None, "api1"):
            return json_response({"error": "invalid_scope"}, 400)
        access_token, expires_in = runtime.controls.issue_token()
        return json_response(
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
        return json_response(body)

    @app.get("/v1/WorkSpaces/{id}", tags=["WorkSpaces"], summary="One workspace")
    async def one_workspace(id: int) -> Response:
        if id not in state.workspaces:
            raise NotFoundError(str(id))
        return json_response(state.workspaces[id])

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
        return json_response(
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
        return json_response(state.get("rightsRequests", ws, id))

    @app.post(
        "/v1/ws/{workspaceId}/DataSubjectRequests",
        tags=["DataSubjectRequests"],
        summary="Create a rights request",
        openapi_extra=_body_doc("DataSubjectRequestDto", _ref("DataSubjectRequestLightDto")),
    )
    async def create_rights_request(request: Request, ws: int = Depends(workspace)) -> Response:
        body = validated("DataSubjectRequestDto", await read_json(request))
        created = state.create_rights_request(ws, body)
        runtime.created("rightsRequests", ws, created)
        return json_response(project(created, "DataSubjectRequestLightDto"))

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
        return json_response(state.get("tasks", ws, id))

    @app.delete("/v1/ws/{workspaceId}/Tasks/{id}", tags=["Tasks"], summary="Delete a task")
    async def delete_task(id: int, ws: int = Depends(workspace)) -> Response:
        state.get("tasks", ws, id)  # 404 for another workspace's task
        state.delete("tasks", id)
        return json_response(True)

    @app.post(
        "/v1/ws/{workspaceId}/Tasks",
        tags=["Tasks"],
        summary="Create a task",
        openapi_extra=_body_doc("TaskCreateUpdateDto", _ref("TaskDto")),
    )
    async def create_task(request: Request, ws: int = Depends(workspace)) -> Response:
        body = validated("TaskCreateUpdateDto", await read_json(request))
        if config.dotnet_defaults:
            body = _dotnet_task_defaults(body)
        created = state.create_task(ws, body)
        runtime.created("tasks", ws, created)
        return json_response(created)

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
        return json_response(state.get("actors", ws, id))

    @app.post(
        "/v1/ws/{workspaceId}/Actors",
        tags=["Actors"],
        summary="Create an actor",
        openapi_extra=_body_doc("ActorDto", _ref("ActorDto")),
    )
    async def create_actor(request: Request, ws: int = Depends(workspace)) -> Response:
        body = validated("ActorDto", await read_json(request))
        return json_response(state.create_actor(ws, body))

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
        return json_response(select_fields([state.get("processings", ws, key)], select)[0])

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
        body = validated("ActorDataProcessingBatchDto", await read_json(request))
        return json_response(state.link_actors(ws, body))

    # --- webhooks ----------------------------------------------------------------------------

    hooks = runtime.webhooks

    def _hook_dto(hook: dict[str, Any]) -> dict[str, Any]:
        ws = hook["workSpaceId"]
        place = state.workspaces.get(ws) if ws is not None else None
        return {**hook, "workSpace": project(place, "WorkSpaceDto") if place else None}

    def _hook_body(body: dict[str, Any]) -> dict[str, Any]:
        ws = body.get("workSpaceId")
        if ws is not None and not state.has_workspace(ws):
            raise _ForbiddenError()
        return body

    @app.get("/v1/WebHookUrls", tags=["WebHookUrls"], summary="Webhook URLs of a workspace")
    async def webhook_urls(workspace_id: int | None = Query(None, alias="workspaceId")) -> Response:
        return json_response([_hook_dto(h) for h in hooks.listed(workspace_id)])

    @app.post(
        "/v1/WebHookUrls",
        tags=["WebHookUrls"],
        summary="Register a webhook URL (Dastra then POSTs each subscribed event, signed)",
        openapi_extra=_body_doc("WebHookUrlCreationDto", _ref("WebHookUrlDto")),
    )
    async def create_webhook_url(request: Request) -> Response:
        body = _hook_body(validated("WebHookUrlCreationDto", await read_json(request)))
        return json_response(_hook_dto(hooks.create(body)))

    @app.get("/v1/WebHookUrls/{id}", tags=["WebHookUrls"], summary="One webhook URL")
    async def webhook_url(id: int) -> Response:
        return json_response(_hook_dto(hooks.get(id)))

    @app.put(
        "/v1/WebHookUrls/{id}",
        tags=["WebHookUrls"],
        summary="Save a webhook URL again (same key; clears its errors)",
        openapi_extra=_body_doc("WebHookUrlCreationDto"),
    )
    async def update_webhook_url(id: int, request: Request) -> Response:
        body = _hook_body(validated("WebHookUrlCreationDto", await read_json(request)))
        hooks.update(id, body)
        return json_response(True)

    @app.delete("/v1/WebHookUrls/{id}", tags=["WebHookUrls"], summary="Delete a webhook URL")
    async def delete_webhook_url(id: int) -> Response:
        hooks.delete(id)
        return json_response(True)

    app.include_router(admin_router(runtime))

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
