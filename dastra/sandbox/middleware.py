"""The sandbox's ASGI middleware: what every request meets before its route.

Consumes each HTTP request and the app's `SandboxRuntime` (its controls, credentials and route
templates). Produces, for `/_sandbox/*`, a 401 without the admin token (when one is set); for
Dastra API calls, a count per endpoint and status, the injected faults (a status, latency, a
hang, a dropped connection), a 401 without valid credentials and a 429 + `Retry-After` over the
rate limit. `/docs` and `/openapi.json` pass as they are.

    app.add_middleware(SandboxMiddleware, runtime=runtime)
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Mapping
from http import HTTPStatus
from typing import TYPE_CHECKING

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dastra.sandbox.admin_api import ADMIN_PREFIX
from dastra.sandbox.connections import abort_connection
from dastra.sandbox.validation import problem

if TYPE_CHECKING:
    from dastra.sandbox.app import SandboxRuntime

__all__ = ["SandboxMiddleware"]

_PUBLIC = frozenset({"/status", "/connect/token"})
_DOCS = ("/docs", "/openapi.json")


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


class SandboxMiddleware:
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
