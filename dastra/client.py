"""The async Dastra REST client.

Consumes `DastraSettings` (base URL, API key or OAuth2 client credentials, timeouts, retry
deadline, rate limits). Produces typed models (`dastra.models`) that keep the exact JSON Dastra
returned (`.raw`), and `dastra.errors` exceptions. Calls (paths relative to the base URL):

    GET  /me                                      GET  /v1/WorkSpaces, /v1/TenantUsers
    GET  /v1/ws/{ws}/Areas                        GET  /v1/ws/{ws}/DataProcessings[/{uuid}]
    GET  /v1/ws/{ws}/DataSubjectRequests[/{id}]   POST /v1/ws/{ws}/DataSubjectRequests
    GET  /v1/ws/{ws}/Tasks[/{id}]                 POST /v1/ws/{ws}/Tasks, DELETE .../Tasks/{id}
    GET  /v1/ws/{ws}/Actors[/{id}]                POST /v1/ws/{ws}/Actors
    POST /v1/ws/{ws}/DataProcessings/recipients/batch

Every HTTP attempt takes a slot of the process-wide rate limiter. Retryable failures (timeouts,
dropped connections, 5xx, 429) are retried with full-jitter exponential backoff until
`retry_deadline_s`, waiting at least what `Retry-After` asks (the policy of `dastra.retry`); a
POST whose outcome is unknown (read timeout, dropped connection, 500/502/504) is not retried,
since Dastra may have applied it: the caller decides (look it up by a natural key first).
`retries=False` on the client or `retry=False` on a call raises the first typed error at once.
`adapt()` makes every typed filter fit the server found by `dastra.doctor` (PascalCase fields,
filter dates read in the server's local time). With `metrics=` (a `DastraMetrics` in the
owner's registry) every attempt, retry and rate-limiter wait is counted per endpoint template.

    async with DastraClient(settings.dastra) as dastra:
        async for request in dastra.iter_rights_requests(ws, states=["Open"]):
            print(request.id, request.raw["dateCreation"])
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, date, datetime, timedelta
from enum import Enum
from types import TracebackType
from typing import Any, Final, Literal, Self, TypeVar

import httpx
import structlog
from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from dastra._auth import Auth, auth_from_settings
from dastra._http import error_for_response, error_for_transport
from dastra._tracing import client_span
from dastra.errors import (
    DastraConfigError,
    DastraResponseError,
    DastraRetryable,
)
from dastra.filters import Filter, FilterCase, adapt_filter, filters_param
from dastra.metrics import DastraMetrics, endpoint_template
from dastra.models import (
    Actor,
    ActorCreate,
    ActorProcessingLink,
    Area,
    DastraModel,
    DataProcessing,
    Page,
    RightsRequest,
    RightsRequestCreate,
    Task,
    TaskCreate,
    User,
    Workspace,
)
from dastra.ratelimit import RateLimiter, shared_limiter
from dastra.retry import backoff_delay
from dastra.settings import DastraSettings

__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "DastraClient"]

MAX_PAGE_SIZE: Final = 500
DEFAULT_PAGE_SIZE: Final = 100
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_USER_AGENT = "dastra-kafka/0.1"

_M = TypeVar("_M", bound=DastraModel)
_log = structlog.get_logger(__name__)

_State = Literal["unopened", "open", "closed"]


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, Enum):
        return str(value.value)
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return str(value.isoformat()).replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


_Query = list[tuple[str, str | int | float | bool | None]]


def _query(params: Mapping[str, Any]) -> _Query:
    """Query pairs: snake_case names to camelCase, lists as repeated keys, None dropped."""
    pairs: _Query = []
    for key, value in params.items():
        if value is None:
            continue
        name = to_camel(key) if "_" in key else key
        values = value if isinstance(value, (list, tuple, set, frozenset)) else [value]
        pairs.extend((name, _scalar(item)) for item in values)
    return pairs


def _int_id(value: int | str, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise DastraConfigError(f"{what} must be an integer, not {value!r}") from None
    if isinstance(value, bool) or number < 0:
        raise DastraConfigError(f"{what} must be a non-negative integer, not {value!r}")
    return number


def _uuid(value: uuid.UUID | str, what: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        raise DastraConfigError(f"{what} must be a uuid, not {value!r}") from None


def _check_paging(page: int, size: int) -> None:
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise DastraConfigError(f"size must be between 1 and {MAX_PAGE_SIZE}, not {size}")
    if page < 1:
        raise DastraConfigError(f"page is 1-based, not {page}")


def _body(value: DastraModel | Mapping[str, Any]) -> Any:
    return value.to_api() if isinstance(value, DastraModel) else dict(value)


def _invalid(method: str, path: str, exc: ValidationError) -> DastraResponseError:
    # Locations only: pydantic's own message quotes the input (personal data).
    where = sorted({".".join(str(p) for p in err["loc"]) for err in exc.errors()})
    return DastraResponseError(
        f"{method} {path}: unexpected response shape at {', '.join(where) or 'top level'}",
        method=method,
        path=path,
    )


class DastraClient:
    """Async client of Dastra's REST API; open it with `async with`.

    DastraClient(settings.dastra, base_url=sandbox.base_url)
    """

    def __init__(
        self,
        settings: DastraSettings,
        *,
        base_url: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        limiter: RateLimiter | None = None,
        retries: bool = True,
        metrics: DastraMetrics | None = None,
    ) -> None:
        url = base_url or settings.base_url
        if not url:
            raise DastraConfigError(
                "no Dastra base URL: set DASTRA_BASE_URL, or pass base_url= "
                "(e.g. a running sandbox's)"
            )
        self._settings = settings
        self._base_url = url.rstrip("/")
        self._auth: Auth = auth_from_settings(settings)
        self._transport = transport
        self._limiter = (
            limiter if limiter is not None else shared_limiter(settings, scope=self._base_url)
        )
        self._retries = retries
        self._metrics = metrics
        if metrics is not None:
            metrics.watch_budget(self._limiter, settings.key_windows())
        self._http: httpx.AsyncClient | None = None
        self._state: _State = "unopened"
        self._filter_case: FilterCase = "camel"
        self._filter_shift = timedelta(0)

    def __repr__(self) -> str:
        return (
            f"DastraClient(base_url={self._base_url!r}, auth={self._auth.mode!r}, "
            f"state={self._state!r})"
        )

    @property
    def base_url(self) -> str:
        return self._base_url

    @property
    def limiter(self) -> RateLimiter:
        return self._limiter

    @property
    def filter_case(self) -> FilterCase:
        return self._filter_case

    @property
    def filter_shift(self) -> timedelta:
        return self._filter_shift

    def adapt(self, *, filter_case: FilterCase = "camel", filter_shift: timedelta) -> None:
        """Spell typed filter fields in `filter_case` and move filter dates by `filter_shift`
        (the server reads them as local time that far ahead of UTC) from now on.

        dastra.adapt(filter_case="pascal", filter_shift=timedelta(hours=1))"""
        self._filter_case = filter_case
        self._filter_shift = filter_shift

    def filters_value(self, filters: Filter | None) -> str | None:
        """The `filters` query value this client sends for `filters` (adapted)."""
        adapted = adapt_filter(filters, case=self._filter_case, shift=self._filter_shift)
        return filters_param(adapted)

    # --- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._state != "unopened":
            raise RuntimeError(f"this DastraClient is {self._state}: create a new one")
        self._http = httpx.AsyncClient(
            base_url=self._base_url,
            transport=self._transport,
            timeout=httpx.Timeout(self._settings.timeout_s, pool=None),
            headers={"Accept": "application/json", "User-Agent": _USER_AGENT},
            follow_redirects=False,
        )
        self._state = "open"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the HTTP connections; the client cannot be used afterwards."""
        http, self._http = self._http, None
        self._state = "closed"
        if http is not None:
            await http.aclose()

    def _open_http(self) -> httpx.AsyncClient:
        if self._http is None:
            if self._state == "closed":
                raise RuntimeError("this DastraClient is closed: create a new one")
            raise RuntimeError(
                "this DastraClient is not open: use `async with DastraClient(...) as dastra:`"
            )
        return self._http

    # --- requests ----------------------------------------------------------------------------

    async def _attempt(
        self,
        http: httpx.AsyncClient,
        method: str,
        path: str,
        params: _Query | None,
        body: Any,
    ) -> tuple[httpx.Response, dict[str, str]]:
        headers = await self._auth.headers(http)
        queued = time.monotonic()
        async with self._limiter.slot():
            started = time.monotonic()
            with client_span(method, self._base_url, path, endpoint_template(path)) as span:
                try:
                    response = await http.request(
                        method, path, params=params, json=body, headers=headers
                    )
                except httpx.TransportError as exc:
                    error = error_for_transport(exc, method, path)
                    self._count(method, path, error.kind, started - queued, started)
                    raise error from exc
                span.set_attribute("http.response.status_code", response.status_code)
        self._count(method, path, str(response.status_code), started - queued, started)
        return response, headers

    def _count(self, method: str, path: str, status: str, waited: float, started: float) -> None:
        if self._metrics is not None:
            took = time.monotonic() - started
            endpoint = endpoint_template(path)
            self._metrics.attempt(endpoint, method, status, waited_s=waited, took_s=took)

    def _count_retry(self, error: DastraRetryable) -> None:
        if self._metrics is not None:
            self._metrics.retried(error)

    def _delay(self, error: DastraRetryable, attempt: int) -> float:
        # At least what Dastra asked for, plus a little jitter so callers do not stampede.
        return backoff_delay(
            attempt + 1,
            base=self._settings.retry_backoff_s,
            cap=self._settings.retry_backoff_max_s,
            retry_after=error.retry_after,
            rule="pad",
        )

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        retry: bool | None = None,
    ) -> Any:
        http = self._open_http()
        query = _query(params) if params else None
        retrying = self._retries if retry is None else retry
        deadline = time.monotonic() + self._settings.retry_deadline_s
        attempt = 0
        reauthenticated = False
        while True:
            try:
                response, sent = await self._attempt(http, method, path, query, body)
                if (
                    response.status_code == 401
                    and not reauthenticated
                    and self._auth.invalidate(sent)
                ):
                    reauthenticated = True
                    _log.info("dastra.reauthenticate", method=method, path=path)
                    continue
                if not response.is_success:
                    raise error_for_response(response, method, path)
            except DastraRetryable as exc:
                if not retrying or (exc.outcome_unknown and method not in _IDEMPOTENT):
                    raise
                delay = self._delay(exc, attempt)
                if time.monotonic() + delay > deadline:
                    raise
                _log.warning(
                    "dastra.retry",
                    method=method,
                    path=path,
                    kind=exc.kind,
                    status=exc.status,
                    attempt=attempt + 1,
                    delay_s=round(delay, 3),
                )
                self._count_retry(exc)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            if not response.content:
                return None
            try:
                return response.json()
            except ValueError:
                raise DastraResponseError(
                    f"{method} {path}: Dastra answered {response.status_code} without JSON",
                    method=method,
                    path=path,
                    status=response.status_code,
                ) from None

    async def raw_get(
        self, path: str, params: Mapping[str, Any] | None = None, *, retry: bool | None = None
    ) -> httpx.Response:
        """A `GET` answered whatever its status: for diagnostics that need statuses and
        headers. When retrying (the client's default, or `retry=True`), 429, 5xx and transport
        failures are retried like any call and raised past the deadline; a 4xx is returned.
        Without retries one attempt is made, and only a transport failure raises.

        response = await dastra.raw_get("/me")"""
        http = self._open_http()
        query = _query(params) if params else None
        retrying = self._retries if retry is None else retry
        deadline = time.monotonic() + self._settings.retry_deadline_s
        attempt = 0
        while True:
            try:
                response, _sent = await self._attempt(http, "GET", path, query, None)
                if response.status_code == 429 or response.status_code >= 500:
                    error = error_for_response(response, "GET", path)
                    if retrying and isinstance(error, DastraRetryable):
                        raise error
                return response
            except DastraRetryable as exc:
                delay = self._delay(exc, attempt)
                if not retrying or time.monotonic() + delay > deadline:
                    raise
                _log.warning(
                    "dastra.retry", method="GET", path=path, kind=exc.kind, status=exc.status,
                    attempt=attempt + 1, delay_s=round(delay, 3),
                )  # fmt: skip
                self._count_retry(exc)
                await asyncio.sleep(delay)
                attempt += 1

    def _one(self, model: type[_M], data: Any, method: str, path: str) -> _M:
        if not isinstance(data, dict):
            raise DastraResponseError(
                f"{method} {path}: expected a JSON object", method=method, path=path
            )
        try:
            return model.from_api(data)
        except ValidationError as exc:
            raise _invalid(method, path, exc) from None

    def _page_of(self, model: type[_M], data: Any, path: str) -> Page[_M]:
        items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(items if items is not None else [], list):
            raise DastraResponseError(
                f"GET {path}: expected a page {{items, total, size, page}}",
                method="GET",
                path=path,
            )
        try:
            parsed = [model.from_api(item) for item in items or []]
            page: Page[_M] = Page.model_validate({**data, "items": []})
        except ValidationError as exc:
            raise _invalid("GET", path, exc) from None
        page.items = parsed
        page._raw = data
        return page

    async def _list(
        self,
        path: str,
        model: type[_M],
        *,
        page: int,
        size: int,
        sort_by: str | None,
        asc: bool | None,
        filters: Filter | None,
        retry: bool | None,
        params: Mapping[str, Any],
    ) -> Page[_M]:
        _check_paging(page, size)
        query = {
            **params,
            "page": page,
            "size": size,
            "sortBy": sort_by,
            "asc": asc,
            "filters": self.filters_value(filters),
        }
        data = await self._request("GET", path, params=query, retry=retry)
        return self._page_of(model, data, path)

    async def _iterate(
        self,
        path: str,
        model: type[_M],
        *,
        size: int,
        sort_by: str | None,
        asc: bool | None,
        filters: Filter | None,
        retry: bool | None,
        params: Mapping[str, Any],
    ) -> AsyncIterator[_M]:
        number = 1
        while True:
            page = await self._list(
                path,
                model,
                page=number,
                size=size,
                sort_by=sort_by,
                asc=asc,
                filters=filters,
                retry=retry,
                params=params,
            )
            for item in page.items:
                yield item
            if len(page.items) < size or number * size >= page.total:
                return
            number += 1

    @staticmethod
    def _ws(ws: int | str) -> str:
        return f"/v1/ws/{_int_id(ws, 'workspace id')}"

    # --- tenant ------------------------------------------------------------------------------

    async def me(self, *, retry: bool | None = None) -> User:
        """The user behind the credentials (`GET /me`)."""
        return self._one(User, await self._request("GET", "/me", retry=retry), "GET", "/me")

    async def workspaces(
        self, *, q: str | None = None, state: str | None = None, retry: bool | None = None
    ) -> list[Workspace]:
        """The workspaces the key can see (`GET /v1/WorkSpaces`).

        Accepts both documented shapes: the spec's `{workSpaces: [...]}` and the docs'
        `{items: [...], total}` (and a bare list)."""
        path = "/v1/WorkSpaces"
        data = await self._request("GET", path, params={"q": q, "state": state}, retry=retry)
        if isinstance(data, dict):
            data = data.get("workSpaces", data.get("items"))
        if not isinstance(data, list):
            raise DastraResponseError(
                f"GET {path}: expected a list of workspaces", method="GET", path=path
            )
        return [self._one(Workspace, item, "GET", path) for item in data]

    async def users(
        self,
        *,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
        q: str | None = None,
        workspace_id: int | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> Page[User]:
        """Users of the tenant (`GET /v1/TenantUsers`): ids for `ownerId`/`assignedToUserId`."""
        return await self._list(
            "/v1/TenantUsers",
            User,
            page=page,
            size=size,
            sort_by=None,
            asc=None,
            filters=None,
            retry=retry,
            params={**params, "q": q, "workspaceId": workspace_id},
        )

    async def areas(
        self,
        ws: int | str,
        *,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
        sort_by: str | None = None,
        asc: bool | None = None,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> Page[Area]:
        """Entities and organisational units (`GET /v1/ws/{ws}/Areas`; `q=`, `type=`...)."""
        return await self._list(
            f"{self._ws(ws)}/Areas",
            Area,
            page=page,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params=params,
        )

    # --- rights requests ---------------------------------------------------------------------

    async def collection_page(
        self,
        ws: int | str,
        collection: str,
        model: type[_M],
        *,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
        sort_by: str | None = None,
        asc: bool | None = None,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> Page[_M]:
        """One page of a workspace collection (`DataSubjectRequests`, `Tasks`...) parsed as
        `model`: for callers that need a few fields (and `.raw`) and must not fail on an
        unexpected value elsewhere in an object."""
        if not collection.isidentifier():
            raise DastraConfigError(f"not a collection name: {collection!r}")
        return await self._list(
            f"{self._ws(ws)}/{collection}",
            model,
            page=page,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params=params,
        )

    async def rights_requests_page(
        self,
        ws: int | str,
        *,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
        sort_by: str | None = None,
        asc: bool | None = None,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> Page[RightsRequest]:
        """One page of rights requests (`GET /v1/ws/{ws}/DataSubjectRequests`).

        Extra keyword arguments are Dastra's query parameters (`states=["Open"]`, `q=`,
        `area_id=`, `archived=`...)."""
        return await self._list(
            f"{self._ws(ws)}/DataSubjectRequests",
            RightsRequest,
            page=page,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params=params,
        )

    def iter_rights_requests(
        self,
        ws: int | str,
        *,
        size: int = MAX_PAGE_SIZE,
        sort_by: str | None = "id",
        asc: bool | None = True,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> AsyncIterator[RightsRequest]:
        """Every rights request matching, page after page (oldest id first by default)."""
        _check_paging(1, size)
        return self._iterate(
            f"{self._ws(ws)}/DataSubjectRequests",
            RightsRequest,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params=params,
        )

    async def get_rights_request(
        self, ws: int | str, id: int | str, *, retry: bool | None = None
    ) -> RightsRequest:
        """One rights request (`GET /v1/ws/{ws}/DataSubjectRequests/{id}`)."""
        path = f"{self._ws(ws)}/DataSubjectRequests/{_int_id(id, 'rights request id')}"
        return self._one(RightsRequest, await self._request("GET", path, retry=retry), "GET", path)

    async def create_rights_request(
        self,
        ws: int | str,
        body: RightsRequestCreate | Mapping[str, Any],
        *,
        retry: bool | None = None,
    ) -> RightsRequest:
        """Create a rights request (`POST /v1/ws/{ws}/DataSubjectRequests`); a mapping is sent
        as is. Returns Dastra's answer (DataSubjectRequestLightDto: no nested objects)."""
        path = f"{self._ws(ws)}/DataSubjectRequests"
        data = await self._request("POST", path, body=_body(body), retry=retry)
        return self._one(RightsRequest, data, "POST", path)

    # --- tasks -------------------------------------------------------------------------------

    async def tasks_page(
        self,
        ws: int | str,
        *,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
        sort_by: str | None = None,
        asc: bool | None = None,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> Page[Task]:
        """One page of tasks (`GET /v1/ws/{ws}/Tasks`; `states=`, `object_type=`...)."""
        return await self._list(
            f"{self._ws(ws)}/Tasks",
            Task,
            page=page,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params=params,
        )

    def iter_tasks(
        self,
        ws: int | str,
        *,
        size: int = MAX_PAGE_SIZE,
        sort_by: str | None = "id",
        asc: bool | None = True,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> AsyncIterator[Task]:
        """Every task matching, page after page (oldest id first by default)."""
        _check_paging(1, size)
        return self._iterate(
            f"{self._ws(ws)}/Tasks",
            Task,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params=params,
        )

    async def get_task(self, ws: int | str, id: int | str, *, retry: bool | None = None) -> Task:
        """One task (`GET /v1/ws/{ws}/Tasks/{id}`)."""
        path = f"{self._ws(ws)}/Tasks/{_int_id(id, 'task id')}"
        return self._one(Task, await self._request("GET", path, retry=retry), "GET", path)

    async def create_task(
        self, ws: int | str, body: TaskCreate | Mapping[str, Any], *, retry: bool | None = None
    ) -> Task:
        """Create a task (`POST /v1/ws/{ws}/Tasks`); a mapping is sent as is."""
        path = f"{self._ws(ws)}/Tasks"
        data = await self._request("POST", path, body=_body(body), retry=retry)
        return self._one(Task, data, "POST", path)

    async def delete_task(self, ws: int | str, id: int | str, *, retry: bool | None = None) -> None:
        """Delete a task (`DELETE /v1/ws/{ws}/Tasks/{id}`)."""
        path = f"{self._ws(ws)}/Tasks/{_int_id(id, 'task id')}"
        await self._request("DELETE", path, retry=retry)

    # --- actors ------------------------------------------------------------------------------

    async def actors_page(
        self,
        ws: int | str,
        *,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
        q: str | None = None,
        sort_by: str | None = None,
        asc: bool | None = None,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> Page[Actor]:
        """One page of actors (`GET /v1/ws/{ws}/Actors`): `q=` searches names and e-mails;
        `filters=Rule("email", "equal", ...)` finds an exact match."""
        return await self._list(
            f"{self._ws(ws)}/Actors",
            Actor,
            page=page,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params={**params, "q": q},
        )

    def iter_actors(
        self,
        ws: int | str,
        *,
        size: int = MAX_PAGE_SIZE,
        q: str | None = None,
        sort_by: str | None = "id",
        asc: bool | None = True,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> AsyncIterator[Actor]:
        """Every actor matching, page after page."""
        _check_paging(1, size)
        return self._iterate(
            f"{self._ws(ws)}/Actors",
            Actor,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params={**params, "q": q},
        )

    async def get_actor(self, ws: int | str, id: int | str, *, retry: bool | None = None) -> Actor:
        """One actor (`GET /v1/ws/{ws}/Actors/{id}`)."""
        path = f"{self._ws(ws)}/Actors/{_int_id(id, 'actor id')}"
        return self._one(Actor, await self._request("GET", path, retry=retry), "GET", path)

    async def create_actor(
        self, ws: int | str, body: ActorCreate | Mapping[str, Any], *, retry: bool | None = None
    ) -> Actor:
        """Create an actor (`POST /v1/ws/{ws}/Actors`); a mapping is sent as is."""
        path = f"{self._ws(ws)}/Actors"
        data = await self._request("POST", path, body=_body(body), retry=retry)
        return self._one(Actor, data, "POST", path)

    # --- processing activities ---------------------------------------------------------------

    async def processings_page(
        self,
        ws: int | str,
        *,
        page: int = 1,
        size: int = DEFAULT_PAGE_SIZE,
        sort_by: str | None = None,
        asc: bool | None = None,
        filters: Filter | None = None,
        retry: bool | None = None,
        **params: Any,
    ) -> Page[DataProcessing]:
        """One page of processing activities (`GET /v1/ws/{ws}/DataProcessings`)."""
        return await self._list(
            f"{self._ws(ws)}/DataProcessings",
            DataProcessing,
            page=page,
            size=size,
            sort_by=sort_by,
            asc=asc,
            filters=filters,
            retry=retry,
            params=params,
        )

    async def get_processing(
        self, ws: int | str, id: uuid.UUID | str, *, retry: bool | None = None
    ) -> DataProcessing:
        """One processing activity and its linked actors (`GET .../DataProcessings/{id}`)."""
        path = f"{self._ws(ws)}/DataProcessings/{_uuid(id, 'processing id')}"
        return self._one(DataProcessing, await self._request("GET", path, retry=retry), "GET", path)

    async def link_actors_to_processing(
        self,
        ws: int | str,
        link: ActorProcessingLink | Mapping[str, Any],
        *,
        retry: bool | None = None,
    ) -> int:
        """Link actors to a processing activity in one role
        (`POST /v1/ws/{ws}/DataProcessings/recipients/batch`); returns Dastra's count."""
        path = f"{self._ws(ws)}/DataProcessings/recipients/batch"
        data = await self._request("POST", path, body=_body(link), retry=retry)
        if isinstance(data, bool) or not isinstance(data, int):
            raise DastraResponseError(f"POST {path}: expected an integer", method="POST", path=path)
        return data
