"""Every error the Dastra client raises, in one tree.

Consumes nothing; produced by `dastra.client`, which translates httpx errors and HTTP statuses
at the boundary (`raise ... from exc`). Callers classify with `isinstance` or `.kind`:

    DastraError                        base; .kind, .method, .path, .status
    ├── DastraConfigError              no base URL, no credentials, a bad argument (ValueError)
    ├── DastraRetryable                worth retrying later; .outcome_unknown, .retry_after
    │   ├── DastraTimeout              connect/read/write/pool timeout, 408
    │   ├── DastraConnectionError      refused, reset, dropped before the response
    │   ├── DastraServerError          5xx
    │   └── DastraRateLimited          429
    ├── DastraRejected                 permanent 4xx; .status, .title, .field_errors
    │   ├── DastraAuthError            401, 403, or the token endpoint refusing the credentials
    │   └── DastraNotFound             404
    └── DastraResponseError            a 2xx whose body is not the JSON we expect

`outcome_unknown` is true when the request may have reached Dastra and been applied (a read
timeout, a dropped connection, 500/502/504): retrying a create is then only safe after looking it
up by a natural key. Messages carry the method, the path (never the query string, which can hold
search terms) and the status, never a credential and never a value from a request body.

    try:
        await dastra.create_task(ws, body)
    except DastraRejected as exc:
        dead_letter(kind=exc.kind, reason=str(exc), fields=exc.field_errors)
"""

from __future__ import annotations

__all__ = [
    "DastraAuthError",
    "DastraConfigError",
    "DastraConnectionError",
    "DastraError",
    "DastraNotFound",
    "DastraRateLimited",
    "DastraRejected",
    "DastraResponseError",
    "DastraRetryable",
    "DastraServerError",
    "DastraTimeout",
]


class DastraError(Exception):
    """Base of everything the Dastra client raises."""

    kind = "error"

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.method = method
        self.path = path
        self.status = status

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status!r})"


class DastraConfigError(DastraError, ValueError):
    """The client cannot be used as configured or called (no I/O happened)."""

    kind = "config"


class DastraRetryable(DastraError):  # noqa: N818 - the name other modules use
    """A transient failure: the same call may succeed later.

    `retry_after` is the wait Dastra asked for with `Retry-After` (seconds; 429, 503, any
    retryable status), None when it did not say.
    """

    kind = "retryable"

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        path: str | None = None,
        status: int | None = None,
        outcome_unknown: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, method=method, path=path, status=status)
        self.outcome_unknown = outcome_unknown
        self.retry_after = retry_after


class DastraTimeout(DastraRetryable):
    """No answer in time (connect, read, write or connection-pool timeout, or HTTP 408)."""

    kind = "timeout"


class DastraConnectionError(DastraRetryable):
    """The connection failed or was dropped before a complete response."""

    kind = "connection"


class DastraServerError(DastraRetryable):
    """Dastra answered 5xx."""

    kind = "server_error"


class DastraRateLimited(DastraRetryable):
    """Dastra answered 429; `retry_after` is the wait it asked for, in seconds, if it said."""

    kind = "rate_limited"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None,
        method: str | None = None,
        path: str | None = None,
    ) -> None:
        super().__init__(
            message,
            method=method,
            path=path,
            status=429,
            outcome_unknown=False,
            retry_after=retry_after,
        )


class DastraRejected(DastraError):  # noqa: N818 - the name other modules use
    """Dastra refused the request for good (4xx): retrying the same call cannot help.

    `field_errors` holds ASP.NET's validation errors (`{"Title": ["The Title field is
    required."]}`), empty when the body had none.
    """

    kind = "rejected"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        method: str | None = None,
        path: str | None = None,
        title: str | None = None,
        field_errors: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(message, method=method, path=path, status=status)
        self.title = title
        self.field_errors: dict[str, list[str]] = dict(field_errors or {})


class DastraAuthError(DastraRejected):
    """The credentials are missing, wrong or not allowed there (401, 403, token refused)."""

    kind = "auth"


class DastraNotFound(DastraRejected):
    """No such object (404)."""

    kind = "not_found"


class DastraResponseError(DastraError):
    """Dastra answered 2xx with a body that is not the JSON we expect."""

    kind = "invalid_response"
