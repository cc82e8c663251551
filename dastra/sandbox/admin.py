"""A small synchronous client of the sandbox's test controls (`/_sandbox/*`).

Consumes a running sandbox's base URL. Produces what tests, the demo and benchmarks need:
objects created or changed "as a Dastra user would", bulk creation, injected faults, call counts,
the full state, reset. Field names are Dastra's (camelCase), as in the API.

    admin = SandboxAdmin(sandbox.base_url)
    admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=503, times=3)
    admin.call_counts()["POST /v1/ws/{ws}/Tasks"]
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

import httpx

__all__ = ["SandboxAdmin", "SandboxAdminError"]

_ADMIN_TOKEN_HEADER = "X-Sandbox-Admin-Token"  # noqa: S105 - a header name


class SandboxAdminError(Exception):
    """The sandbox refused an admin call; `status` and `body` say why."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"sandbox admin call failed with {status}: {body}")
        self.status = status
        self.body = body


class SandboxAdmin:
    """Synchronous helper for `/_sandbox/*` (safe to call from async tests: the sandbox runs in
    its own thread)."""

    def __init__(
        self, base_url: str, *, admin_token: str | None = None, timeout: float = 60.0
    ) -> None:
        headers = {_ADMIN_TOKEN_HEADER: admin_token} if admin_token else {}
        self._http = httpx.Client(
            base_url=f"{base_url.rstrip('/')}/_sandbox", timeout=timeout, headers=headers
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        try:
            body = response.json() if response.content else None
        except ValueError:
            body = response.text
        if not response.is_success:
            raise SandboxAdminError(response.status_code, body)
        return body

    # --- whole sandbox -----------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """Workspace, area, processing and user ids, and the config in force."""
        result: dict[str, Any] = self._call("GET", "/info")
        return result

    def reset(self) -> None:
        """Back to the seeded state; clears faults, call counts and config changes."""
        self._call("POST", "/reset")

    def state(self, ws: int | None = None, collection: str | None = None) -> dict[str, Any]:
        """Every object: `{workspaces, users, byWorkspace: {ws: {areas, processings, actors,
        rightsRequests, tasks}}}`, or one workspace's `{workspace, users, areas, ...}`."""
        params = {k: v for k, v in (("ws", ws), ("collection", collection)) if v is not None}
        result: dict[str, Any] = self._call("GET", "/state", params=params)
        return result

    def objects(self, collection: str, ws: int | None = None) -> list[dict[str, Any]]:
        """One collection of one workspace (default: the first), e.g. `objects("actors")`."""
        workspace = ws if ws is not None else int(self.info()["defaultWorkspace"])
        result: list[dict[str, Any]] = self.state(workspace, collection)[collection]
        return result

    def configure(
        self,
        *,
        rate_limit: bool | None = None,
        rate_limit_windows: list[tuple[int, float]] | None = None,
        token_lifetime_s: float | None = None,
    ) -> dict[str, Any]:
        """Change rate limiting (on/off or explicit `(limit, seconds)` windows) or the OAuth2
        token lifetime, until the next reset."""
        body = {
            "rate_limit": rate_limit,
            "rate_limit_windows": rate_limit_windows,
            "token_lifetime_s": token_lifetime_s,
        }
        result: dict[str, Any] = self._call(
            "POST", "/config", json={k: v for k, v in body.items() if v is not None}
        )
        return result

    def expire_tokens(self) -> int:
        """Invalidate every OAuth2 token issued so far; returns how many."""
        return int(self._call("POST", "/tokens/expire")["expired"])

    # --- calls and faults --------------------------------------------------------------------

    def call_counts(self) -> dict[str, int]:
        """Calls per endpoint, e.g. `{"POST /v1/ws/{ws}/Actors": 3}`."""
        return {k: int(v) for k, v in self._call("GET", "/calls")["calls"].items()}

    def status_counts(self) -> dict[str, dict[str, int]]:
        """Response statuses per endpoint, e.g. `{"GET /me": {"200": 4, "429": 1}}`
        (`"no response"` for hung or dropped calls)."""
        statuses: dict[str, dict[str, int]] = self._call("GET", "/calls")["statuses"]
        return statuses

    def reset_calls(self) -> None:
        self._call("DELETE", "/calls")

    def requests_log(self, since: float = 0.0) -> list[dict[str, Any]]:
        """The rate limiter's log from `since` on (the sandbox host's `time.monotonic()`):
        `[{"at": 1234.5, "endpoint": "GET /v1/ws/{ws}/Tasks", "admitted": true}, ...]`."""
        result: list[dict[str, Any]] = self._call("GET", "/requests", params={"since": since})
        return result

    def inject_fault(
        self,
        path: str = "*",
        *,
        method: str = "*",
        status: int | None = None,
        retry_after: float | str | None = None,
        body: Any = None,
        latency_s: float | None = None,
        hang: bool = False,
        hang_s: float | None = None,
        drop: bool = False,
        times: int | None = None,
        duration_s: float | None = None,
    ) -> str:
        """Inject a fault on calls matching `path` (a glob on the path or its template) and
        `method`, for the next `times` calls, or `duration_s` seconds, or until cleared.
        Returns the fault id."""
        spec: dict[str, Any] = {"path": path, "method": method.upper(), "hang": hang, "drop": drop}
        for name, value in (
            ("status", status),
            ("retry_after", retry_after),
            ("body", body),
            ("latency_s", latency_s),
            ("hang_s", hang_s),
            ("times", times),
            ("duration_s", duration_s),
        ):
            if value is not None:
                spec[name] = value
        return str(self._call("POST", "/faults", json=spec)["id"])

    def faults(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._call("GET", "/faults")
        return result

    def clear_faults(self, fault_id: str | None = None) -> None:
        self._call("DELETE", "/faults" if fault_id is None else f"/faults/{fault_id}")

    # --- objects -----------------------------------------------------------------------------

    def create_rights_request(
        self, ws: int | None = None, *, backdate_s: float = 0.0, **fields: Any
    ) -> dict[str, Any]:
        """A new rights request entered in Dastra's app (defaults fill title, locale, area,
        purposes, channel). `backdate_s` stamps it in the past: it becomes visible late."""
        params = {**_ws(ws), **({"backdate_s": backdate_s} if backdate_s else {})}
        result: dict[str, Any] = self._call("POST", "/rights-requests", params=params, json=fields)
        return result

    def update_rights_request(self, id: int, **changes: Any) -> dict[str, Any]:
        """Change a rights request (e.g. `state="Processing"`); bumps `dateUpdate`."""
        result: dict[str, Any] = self._call("PATCH", f"/rights-requests/{id}", json=changes)
        return result

    def delete_rights_request(self, id: int) -> dict[str, Any]:
        """Delete a rights request as a user would in Dastra's app; returns it."""
        result: dict[str, Any] = self._call("DELETE", f"/rights-requests/{id}")
        return result

    def create_task(
        self, ws: int | None = None, *, backdate_s: float = 0.0, **fields: Any
    ) -> dict[str, Any]:
        params = {**_ws(ws), **({"backdate_s": backdate_s} if backdate_s else {})}
        result: dict[str, Any] = self._call("POST", "/tasks", params=params, json=fields)
        return result

    def update_task(self, id: int, **changes: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("PATCH", f"/tasks/{id}", json=changes)
        return result

    def delete_task(self, id: int) -> dict[str, Any]:
        result: dict[str, Any] = self._call("DELETE", f"/tasks/{id}")
        return result

    def create_actor(self, ws: int | None = None, **fields: Any) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/actors", params=_ws(ws), json=fields)
        return result

    def bulk_create(
        self, kind: str, count: int, *, ws: int | None = None, **template: Any
    ) -> dict[str, Any]:
        """Create `count` rights requests (`kind="rightsRequests"`), tasks or actors at once;
        `{n}` in a template string becomes the rank. Returns `{created, firstId, lastId}`."""
        body = {"kind": kind, "count": count, "ws": ws, "template": template}
        result: dict[str, Any] = self._call("POST", "/bulk", json=body)
        return result


def _ws(ws: int | None) -> dict[str, int]:
    return {} if ws is None else {"ws": ws}
