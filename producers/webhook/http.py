"""Request plumbing of the webhook: the body size limit and metrics middlewares, body
parsing, field errors, the Idempotency-Key fingerprint, the status of a failed result and
the workspaces a Dastra webhook names.

    raw = await read_body(request, settings.max_body_bytes)
"""

import hashlib
import hmac
import json
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from bus.records.commands import Command, CommandResult
from dastra.settings import DastraSettings
from producers.webhook.models import Refused, problem
from producers.webhook.service import WebhookMetrics

__all__ = [
    "BodyLimit",
    "Measure",
    "body_doc",
    "failed_status",
    "field_errors",
    "fingerprint",
    "json_body",
    "read_body",
    "result_response",
    "token_id",
    "workspaces_of",
]


class BodyLimit:
    """413 at once for a declared Content-Length above the limit (bodies without one are
    counted as they are read: see `read_body`)."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            for name, value in scope.get("headers", []):
                if name == b"content-length":
                    try:
                        declared = int(value)
                    except ValueError:
                        declared = -1
                    if declared > self.limit:
                        response = problem(413, "too-large", f"the body exceeds {self.limit} bytes")
                        await response(scope, receive, send)
                        return
        await self.app(scope, receive, send)


class Measure:
    """Request counts and durations by route template (a plain ASGI middleware: Starlette's
    BaseHTTPMiddleware would cost more than the rest of a request)."""

    def __init__(self, app: ASGIApp, metrics: WebhookMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: ASGIMessage) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            label = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(label, scope["method"], str(status)).inc()
            self.metrics.latency.labels(label).observe(time.perf_counter() - started)


async def read_body(request: Request, limit: int) -> bytes:
    chunks = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise Refused(413, "too-large", f"the body exceeds {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def json_body(raw: bytes) -> Any:
    if not raw:
        raise Refused(400, "malformed-json", "the body is empty; send a JSON object")
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise Refused(400, "malformed-json", "the body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        where = f" at line {exc.lineno} column {exc.colno}"
        raise Refused(400, "malformed-json", f"the body is not JSON{where}") from None


def field_errors(exc: ValidationError) -> dict[str, list[str]]:
    """Field path -> messages, without the values sent (they may be personal data)."""
    errors: dict[str, list[str]] = {}
    for error in exc.errors(include_input=False, include_url=False):
        path = ".".join(str(part) for part in error["loc"]) or "(body)"
        errors.setdefault(path, []).append(error["msg"])
    return errors


def fingerprint(action: str, command: Command, token: str) -> str:
    """The body's fingerprint on the idempotency topic: keyed by the caller's token, so that a
    reader of the topic cannot confirm a guessed body (an e-mail search, say)."""
    canonical = json.dumps(
        command.model_dump(mode="json", by_alias=True, exclude_unset=True),
        sort_keys=True,
        separators=(",", ":"),
    )
    key = hashlib.sha256(token.encode()).digest()
    return hmac.new(key, f"{action}\0{canonical}".encode(), hashlib.sha256).hexdigest()


def token_id(token: str) -> str:
    return "tok_" + hashlib.sha256(token.encode()).hexdigest()[:12]


def failed_status(result: CommandResult) -> int:
    error = result.error
    if error is None:
        return 502
    if error.kind == "dastra-rejected" and error.status == 409:
        return 409
    return _FAILED_STATUS.get(error.kind, 502)


def body_doc(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def result_response(result: CommandResult, headers: dict[str, str], opened: Any) -> JSONResponse:
    headers = {**headers, "Command-Status": result.status}
    if result.status == "succeeded":
        body: Any = opened
        if body is None:
            body = {"command_id": result.command_id, "status": "succeeded"}
        return JSONResponse(body, status_code=200, headers=headers)
    error = result.error
    status = failed_status(result)
    return problem(
        status,
        error.kind if error else "failed",
        error.message if error else "the command failed",
        headers,
        field_errors=error.field_errors if error else {},
        command_id=result.command_id,
    )


def workspaces_of(body: Any, query: int | None, dastra: DastraSettings) -> list[int]:
    if query is not None:
        return [query]
    if isinstance(body, dict):
        inner = body.get("data")
        places: list[dict[str, Any]] = [body, inner if isinstance(inner, dict) else {}]
        for place in places:
            for name in ("workspaceId", "workSpaceId", "WorkspaceId"):
                value = place.get(name)
                if isinstance(value, int) and value > 0:
                    return [value]
                if isinstance(value, str) and value.isdigit():
                    return [int(value)]
    return dastra.watched_workspaces()


_FAILED_STATUS = {
    "invalid-command": 422,
    "unknown-action": 404,
    "dastra-rejected": 422,
    "dastra-not-found": 404,
}
