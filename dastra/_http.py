"""The httpx boundary: transport errors and HTTP statuses become `dastra.errors` exceptions.

Consumes httpx exceptions and responses; produces `DastraError` subclasses whose messages hold
the method, the path and the status only (no query string, no credential, no body value).
"""

from __future__ import annotations

from typing import Any

import httpx

from dastra.errors import (
    DastraAuthError,
    DastraConnectionError,
    DastraError,
    DastraNotFound,
    DastraRateLimited,
    DastraRejected,
    DastraServerError,
    DastraTimeout,
)
from dastra.retry import parse_retry_after

__all__ = ["error_for_response", "error_for_transport"]


def error_for_transport(exc: httpx.TransportError, method: str, path: str) -> DastraError:
    """Translate an httpx transport failure (raise the result `from exc`)."""
    where = f"{method} {path}"
    # Before the request left (connect phase, waiting for a pooled connection) nothing can have
    # been applied; afterwards the outcome is unknown.
    if isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout)):
        return DastraTimeout(f"{where}: timed out connecting to Dastra", method=method, path=path)
    if isinstance(exc, httpx.TimeoutException):
        return DastraTimeout(
            f"{where}: Dastra did not answer in time",
            method=method,
            path=path,
            outcome_unknown=True,
        )
    if isinstance(exc, httpx.ConnectError):
        return DastraConnectionError(
            f"{where}: cannot connect to Dastra ({type(exc).__name__})", method=method, path=path
        )
    return DastraConnectionError(
        f"{where}: the connection failed before a complete response ({type(exc).__name__})",
        method=method,
        path=path,
        outcome_unknown=True,
    )


def _problem(response: httpx.Response) -> tuple[str | None, dict[str, list[str]]]:
    """The ProblemDetails title and ASP.NET validation errors of an error response, if any."""
    try:
        body: Any = response.json()
    except ValueError:
        return None, {}
    if not isinstance(body, dict):
        return None, {}
    title = body.get("title") if isinstance(body.get("title"), str) else None
    errors: dict[str, list[str]] = {}
    raw_errors = body.get("errors")
    if isinstance(raw_errors, dict):
        for field, messages in raw_errors.items():
            if isinstance(messages, list):
                errors[str(field)] = [str(m) for m in messages]
            elif messages is not None:
                errors[str(field)] = [str(messages)]
    return title, errors


def error_for_response(response: httpx.Response, method: str, path: str) -> DastraError:
    """Translate a non-2xx response."""
    status = response.status_code
    where = f"{method} {path}"
    reason = response.reason_phrase or ""
    # Dastra may ask for a wait on any retryable status (429, 503, ...), not only on 429.
    retry_after = parse_retry_after(response.headers.get("Retry-After"))
    hint = f", retry after {retry_after:g} s" if retry_after is not None else ""
    if status == 429:
        return DastraRateLimited(
            f"{where}: rate limited by Dastra (429{hint})",
            retry_after=retry_after,
            method=method,
            path=path,
        )
    if status == 408:
        return DastraTimeout(
            f"{where}: Dastra timed out reading the request (408{hint})",
            method=method,
            path=path,
            status=status,
            retry_after=retry_after,
        )
    if status >= 500:
        return DastraServerError(
            f"{where}: Dastra answered {status} {reason}".rstrip() + hint,
            method=method,
            path=path,
            status=status,
            # 503 is an explicit "not now": the request was not processed.
            outcome_unknown=status != 503,
            retry_after=retry_after,
        )
    title, field_errors = _problem(response)
    message = f"{where}: Dastra answered {status} {reason}".rstrip()
    if title:
        message += f": {title}"
    if field_errors:
        message += f" (fields: {', '.join(sorted(field_errors))})"
    cls: type[DastraRejected] = DastraRejected
    if status in (401, 403):
        cls = DastraAuthError
    elif status == 404:
        cls = DastraNotFound
    return cls(
        message,
        status=status,
        method=method,
        path=path,
        title=title,
        field_errors=field_errors,
    )
