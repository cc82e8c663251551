"""JSON bodies of the sandbox, in and out, for the Dastra API routes (`app.py`) and the test
controls (`admin_api.py`).

Consumes a request's body (and content type) and the spec subset's schema for it. Produces the
parsed body, or a `BadBodyError` the app answers as ASP.NET Core does (400 with
ValidationProblemDetails, 415 for a body that is not JSON); and the responses: compact UTF-8
JSON, and problem+json for an error status.

    body = validated("TaskCreateUpdateDto", await read_json(request))
    return json_response(state.create_task(ws, body))
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from dastra.sandbox.validation import problem, validate_body

__all__ = ["BadBodyError", "json_response", "problem_response", "read_json", "validated"]

_JSON_TYPES = ("application/json", "text/json", "application/json-patch+json")


def json_response(
    data: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    return Response(
        content=json.dumps(data, separators=(",", ":"), ensure_ascii=False),
        status_code=status,
        media_type="application/json; charset=utf-8",
        headers=dict(headers or {}),
    )


def problem_response(status: int, errors: dict[str, list[str]] | None = None) -> Response:
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


class BadBodyError(Exception):
    def __init__(self, status: int, errors: dict[str, list[str]] | None) -> None:
        super().__init__(str(errors))
        self.status = status
        self.errors = errors


async def read_json(request: Request) -> Any:
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    raw = await request.body()
    if not raw.strip():
        raise BadBodyError(400, {"": ["A non-empty request body is required."]})
    if content_type not in _JSON_TYPES and not (
        content_type.startswith("application/") and content_type.endswith("+json")
    ):
        raise BadBodyError(415, None)
    try:
        return json.loads(raw)
    except ValueError:
        raise BadBodyError(
            400, {"$": ["The request body is not valid JSON. Path: $ | LineNumber: 0."]}
        ) from None


def validated(schema: str, body: Any, *, partial: bool = False) -> dict[str, Any]:
    errors = validate_body(schema, body)
    if errors and partial:
        errors = {k: [m for m in v if "field is required" not in m] for k, v in errors.items()}
        errors = {k: v for k, v in errors.items() if v} or None
    if errors:
        raise BadBodyError(400, errors)
    assert isinstance(body, dict)
    return body
