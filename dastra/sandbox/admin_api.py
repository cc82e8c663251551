"""The sandbox's test controls: the admin API under `/_sandbox` (no Dastra auth, no rate limit,
not counted; `X-Sandbox-Admin-Token` is required when `SANDBOX_ADMIN_TOKEN` is set).

Consumes the app's `SandboxRuntime` (its state and controls) and what tests, the demo and
benchmarks ask, through `SandboxAdmin` or plain HTTP. Produces objects created, changed or
deleted "as a Dastra user would" (or many at once), injected faults, the call counts and the
rate limiter's log, the full state, the config in force, expired tokens, and a reset.

    app.include_router(admin_router(runtime))      # in create_app
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field

from dastra.sandbox.bodies import BadBodyError, json_response, validated
from dastra.sandbox.controls import FaultSpec
from dastra.sandbox.query import QueryError
from dastra.sandbox.state import NotFoundError

if TYPE_CHECKING:
    from dastra.sandbox.app import SandboxRuntime

__all__ = ["ADMIN_PREFIX", "admin_router"]

ADMIN_PREFIX = "/_sandbox"


class BulkSpec(BaseModel):
    kind: Literal["rightsRequests", "rights-requests", "tasks", "actors"]
    count: int = Field(ge=1, le=200_000)
    ws: int | None = None
    template: dict[str, Any] = Field(default_factory=dict)


class ConfigSpec(BaseModel):
    rate_limit: bool | None = None
    rate_limit_windows: list[tuple[int, float]] | None = None
    token_lifetime_s: float | None = Field(default=None, gt=0)


def admin_router(runtime: SandboxRuntime) -> APIRouter:
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
        return json_response(
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
        return json_response({"workspaces": list(state.workspaces)})

    @router.get("/state", summary="The full state, or one workspace's (and one collection)")
    async def full_state(ws: int | None = None, collection: str | None = None) -> Response:
        if collection is not None and collection not in runtime.fields:
            raise QueryError("collection", f"collection is one of {', '.join(runtime.fields)}")
        if ws is not None:
            ws_or_default(ws)
        return json_response(state.snapshot(ws, collection))

    @router.get("/calls", summary="Calls per endpoint (METHOD /path/{template}) and statuses")
    async def calls() -> Response:
        return json_response(
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
        return json_response({})

    @router.get("/requests", summary="The rate limiter's log: each authenticated API call")
    async def requests_log(since: float = 0.0) -> Response:
        return json_response(
            [
                {"at": entry.at, "endpoint": entry.endpoint, "admitted": entry.admitted}
                for entry in controls.log
                if entry.at >= since
            ]
        )

    @router.get("/faults", summary="The faults still active")
    async def faults() -> Response:
        return json_response([f.describe() for f in controls.faults])

    @router.post("/faults", summary="Inject a fault (status, latency, hang or drop)")
    async def add_fault(spec: FaultSpec) -> Response:
        return json_response(controls.add_fault(spec).describe(), 201)

    @router.delete("/faults", summary="Clear every fault")
    async def clear_faults() -> Response:
        controls.faults.clear()
        return json_response({})

    @router.delete("/faults/{fault_id}", summary="Clear one fault")
    async def clear_fault(fault_id: str) -> Response:
        controls.faults = [f for f in controls.faults if f.id != fault_id]
        return json_response({})

    @router.get("/config", summary="Rate limiting and token lifetime in force")
    async def get_config() -> Response:
        return json_response(controls.describe())

    @router.post("/config", summary="Change rate limiting or token lifetime (until reset)")
    async def set_config(spec: ConfigSpec) -> Response:
        controls.configure(
            rate_limit=spec.rate_limit,
            rate_limit_windows=spec.rate_limit_windows,
            token_lifetime_s=spec.token_lifetime_s,
        )
        return json_response(controls.describe())

    @router.post("/tokens/expire", summary="Invalidate every OAuth2 token issued so far")
    async def expire_tokens() -> Response:
        return json_response({"expired": controls.expire_tokens()})

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
        validated("DataSubjectRequestDto", body)
        created = state.create_rights_request(
            workspace_id, body, creator=state.ui_user(), backdate_s=backdate_s
        )
        runtime.created("rightsRequests", workspace_id, created)
        return json_response(created)

    @router.patch("/rights-requests/{id}", summary="Update a rights request (bumps dateUpdate)")
    async def admin_update_rights_request(id: int, request: Request) -> Response:
        changes = validated("DataSubjectRequestDto", await _admin_body(request), partial=True)
        return json_response(state.update_rights_request(id, changes))

    @router.delete("/rights-requests/{id}", summary="Delete a rights request (in the app)")
    async def admin_delete_rights_request(id: int) -> Response:
        return json_response(state.delete("rightsRequests", id))

    @router.post("/tasks", summary="Create a task as a Dastra user would")
    async def admin_create_task(
        request: Request, ws: int | None = None, backdate_s: float = 0.0
    ) -> Response:
        workspace_id = ws_or_default(ws)
        body = {"label": "Task", "priority": "Medium", **(await _admin_body(request))}
        validated("TaskCreateUpdateDto", body)
        created = state.create_task(
            workspace_id, body, creator=state.ui_user(), backdate_s=backdate_s
        )
        runtime.created("tasks", workspace_id, created)
        return json_response(created)

    @router.patch("/tasks/{id}", summary="Update a task (bumps dateUpdate)")
    async def admin_update_task(id: int, request: Request) -> Response:
        changes = validated("TaskCreateUpdateDto", await _admin_body(request), partial=True)
        return json_response(state.update_task(id, changes))

    @router.delete("/tasks/{id}", summary="Delete a task (in the app)")
    async def admin_delete_task(id: int) -> Response:
        return json_response(state.delete("tasks", id))

    @router.post("/actors", summary="Create an actor as a Dastra user would")
    async def admin_create_actor(request: Request, ws: int | None = None) -> Response:
        workspace_id = ws_or_default(ws)
        body = validated("ActorDto", await _admin_body(request))
        return json_response(state.create_actor(workspace_id, body, creator=state.ui_user()))

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
        validated(schema, {k: v.replace("{n}", "1") if isinstance(v, str) else v
                            for k, v in template.items()})  # fmt: skip
        ids = state.bulk_create(kind, workspace_id, spec.count, template)
        return json_response({"created": len(ids), "firstId": ids[0], "lastId": ids[-1]}, 201)

    return router


async def _admin_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except ValueError:
        raise BadBodyError(400, {"$": ["The request body is not valid JSON."]}) from None
    if not isinstance(body, dict):
        raise BadBodyError(400, {"$": ["The request body must be a JSON object."]})
    return body
