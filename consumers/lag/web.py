"""The lag monitor's HTTP face (`dastra-kafka lag serve`). Consumes `LagSnapshot`s from a
`LagMonitor` refreshed every LAG_REFRESH_INTERVAL_S in a worker thread. Produces:

- `GET /metrics`: Prometheus text with kafka-lag-exporter's metric names and labels
  (`kafka_consumergroup_group_offset`, `..._group_lag`, `..._group_lag_seconds`,
  `..._group_max_lag`, `..._group_max_lag_seconds`, `..._group_sum_lag`,
  `..._group_topic_sum_lag`, `kafka_partition_latest_offset`, `kafka_partition_earliest_offset`,
  `kafka_consumergroup_poll_time_ms`) plus `dastra_consumergroup_status` and
  `dastra_consumergroup_partition_status` (0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP,
  5 NOTFOUND) and `dastra_lag_up`;
- `GET /api/lag`: the last snapshot as JSON; `GET /api/lag/trend`: per group, lag and time lag
  over the last LAG_TREND_S seconds;
- `GET /`: a self-contained page (inline JS and SVG, no CDN) that redraws itself;
- `GET /docs`: Swagger UI from the project's own pinned files (`dastra.apidocs`), no CDN;
- `GET /healthz`: 200 while refreshes succeed, else 503;
- optionally a JSON POST to LAG_ALERT_URL on every change of a group's status, retried with
  jittered exponential backoff (honouring Retry-After), `webhook-id` stable across retries.

    app = create_app(LagMonitor(settings.kafka, settings.lag), settings.lag)
    uvicorn.run(app, host="127.0.0.1", port=settings.lag.port)
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import structlog
from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bus.errors import KafkaAuthorizationError
from bus.metrics import role_registry
from consumers.lag import LagMonitor, LagSnapshot, LagUnavailableError, StatusChange
from consumers.lag.page import PAGE
from consumers.lag.settings import LagSettings
from dastra.apidocs import add_api_docs
from dastra.retry import backoff_delay, parse_retry_after

__all__ = ["LagService", "create_app"]

_log = structlog.get_logger(__name__)

_PARTITION_LABELS = [
    "cluster_name",
    "group",
    "topic",
    "partition",
    "member_host",
    "consumer_id",
    "client_id",
]


class LagService:
    """The last snapshot, the trend behind the page's charts, and the refresh loop's health."""

    def __init__(self, monitor: LagMonitor, lag: LagSettings) -> None:
        self.monitor = monitor
        self.lag = lag
        self.snapshot: LagSnapshot | None = None
        self.error: str | None = None
        self.last_success: float | None = None
        self._opened = False
        self._trend: dict[str, deque[tuple[float, int, float, int]]] = {}

    def refresh(self) -> list[StatusChange]:
        """One refresh (blocking: run it in a thread). Returns the status changes it saw."""
        try:
            if not self._opened:
                self.monitor.open()
                self._opened = True
            snapshot = self.monitor.refresh()
        except (LagUnavailableError, KafkaAuthorizationError) as exc:
            self.error = str(exc)
            _log.warning("lag refresh failed", error=self.error)
            return []
        except Exception as exc:
            # Loud (a traceback, /healthz 503, dastra_lag_up 0) but not fatal: a dead refresh
            # loop behind a live page would show stale figures as if they were current.
            self.error = f"{type(exc).__name__}: {exc}"
            _log.exception("lag refresh crashed")
            return []
        self.snapshot = snapshot
        self.error = None
        self.last_success = time.monotonic()
        self._add_trend(snapshot)
        return list(snapshot.changes)

    def close(self) -> None:
        if self._opened:
            self.monitor.close()
            self._opened = False

    def healthy(self) -> bool:
        if self.last_success is None:
            return False
        return time.monotonic() - self.last_success < 3 * self.lag.refresh_interval_s + 30

    def _add_trend(self, snapshot: LagSnapshot) -> None:
        cutoff = snapshot.taken_at - self.lag.trend_s
        for g in snapshot.groups:
            points = self._trend.setdefault(g.group, deque())
            points.append((snapshot.taken_at, g.lag, g.max_time_lag_s, g.status.code))
        for name in list(self._trend):
            points = self._trend[name]
            while points and points[0][0] < cutoff:
                points.popleft()
            if not points:
                del self._trend[name]

    def trend(self) -> dict[str, Any]:
        return {
            "trend_s": self.lag.trend_s,
            "groups": {
                name: {
                    "t": [round(p[0], 3) for p in points],
                    "lag": [p[1] for p in points],
                    "time_lag_s": [round(p[2], 3) for p in points],
                    "status_code": [p[3] for p in points],
                }
                for name, points in self._trend.items()
            },
        }


class _LagCollector(Collector):
    """Metric families built from the service's last snapshot at each scrape, so groups and
    partitions that went away disappear from /metrics (no ghost series)."""

    def __init__(self, service: LagService) -> None:
        self._service = service

    def collect(self) -> Iterator[Metric]:
        snapshot = self._service.snapshot
        cluster = self._service.lag.cluster_name
        up = GaugeMetricFamily(
            "dastra_lag_up", "1 when the last refresh reached Kafka", labels=["cluster_name"]
        )
        up.add_metric([cluster], 1.0 if self._service.error is None and snapshot else 0.0)
        yield up
        if snapshot is None:
            return
        offset = GaugeMetricFamily(
            "kafka_consumergroup_group_offset",
            "The committed offset of the group on the partition",
            labels=_PARTITION_LABELS,
        )
        lag = GaugeMetricFamily(
            "kafka_consumergroup_group_lag",
            "Log end offset minus committed offset",
            labels=_PARTITION_LABELS,
        )
        lag_s = GaugeMetricFamily(
            "kafka_consumergroup_group_lag_seconds",
            "Age of the oldest unconsumed record (its own timestamp); 0 when caught up",
            labels=_PARTITION_LABELS,
        )
        max_lag = GaugeMetricFamily(
            "kafka_consumergroup_group_max_lag",
            "The largest partition lag of the group",
            labels=["cluster_name", "group", "is_simple_consumer"],
        )
        max_lag_s = GaugeMetricFamily(
            "kafka_consumergroup_group_max_lag_seconds",
            "The largest partition time lag of the group",
            labels=["cluster_name", "group", "is_simple_consumer"],
        )
        sum_lag = GaugeMetricFamily(
            "kafka_consumergroup_group_sum_lag",
            "The lag of the group summed over its partitions",
            labels=["cluster_name", "group"],
        )
        topic_sum = GaugeMetricFamily(
            "kafka_consumergroup_group_topic_sum_lag",
            "The lag of the group summed over the partitions of one topic",
            labels=["cluster_name", "group", "topic"],
        )
        latest = GaugeMetricFamily(
            "kafka_partition_latest_offset",
            "The log end offset of the partition",
            labels=["cluster_name", "topic", "partition"],
        )
        earliest = GaugeMetricFamily(
            "kafka_partition_earliest_offset",
            "The log start offset of the partition",
            labels=["cluster_name", "topic", "partition"],
        )
        poll = GaugeMetricFamily(
            "kafka_consumergroup_poll_time_ms",
            "How long the last refresh took",
            labels=["cluster_name"],
        )
        status = GaugeMetricFamily(
            "dastra_consumergroup_status",
            "Group status: 0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP, 5 NOTFOUND",
            labels=["cluster_name", "group"],
        )
        partition_status = GaugeMetricFamily(
            "dastra_consumergroup_partition_status",
            "Partition status: 0 OK, 1 WARN, 2 REWIND, 3 STALL, 4 STOP",
            labels=["cluster_name", "group", "topic", "partition"],
        )
        seen: set[tuple[str, int]] = set()
        for g in snapshot.groups:
            simple = "true" if g.simple else "false"
            status.add_metric([cluster, g.group], g.status.code)
            max_lag.add_metric([cluster, g.group, simple], g.max_lag)
            max_lag_s.add_metric([cluster, g.group, simple], g.max_time_lag_s)
            sum_lag.add_metric([cluster, g.group], g.lag)
            for topic, total in g.topics.items():
                topic_sum.add_metric([cluster, g.group, topic], total)
            for p in g.partitions:
                labels = [
                    cluster,
                    g.group,
                    p.topic,
                    str(p.partition),
                    p.host,
                    p.consumer_id,
                    p.client_id,
                ]
                if p.committed is not None:
                    offset.add_metric(labels, p.committed)
                if p.lag is not None:
                    lag.add_metric(labels, p.lag)
                if p.time_lag_s is not None:
                    lag_s.add_metric(labels, p.time_lag_s)
                partition_status.add_metric(
                    [cluster, g.group, p.topic, str(p.partition)], p.status.code
                )
                if (p.topic, p.partition) not in seen:
                    seen.add((p.topic, p.partition))
                    where = [cluster, p.topic, str(p.partition)]
                    if p.log_end is not None:
                        latest.add_metric(where, p.log_end)
                    if p.log_start is not None:
                        earliest.add_metric(where, p.log_start)
        poll.add_metric([cluster], snapshot.poll_ms)
        yield from (
            offset,
            lag,
            lag_s,
            max_lag,
            max_lag_s,
            sum_lag,
            topic_sum,
            latest,
            earliest,
            poll,
            status,
            partition_status,
        )


class _Alerter:
    """POSTs status changes to LAG_ALERT_URL, one at a time, each retried with backoff."""

    def __init__(self, lag: LagSettings, transport: httpx.AsyncBaseTransport | None = None) -> None:
        assert lag.alert_url is not None
        self._url = lag.alert_url
        self._lag = lag
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._client = httpx.AsyncClient(timeout=lag.alert_timeout_s, transport=transport)

    def submit(self, change: StatusChange, snapshot: LagSnapshot | None) -> None:
        group = None
        if snapshot is not None:
            with contextlib.suppress(KeyError):
                group = snapshot.group(change.group)
        self._queue.put_nowait(
            {
                "type": "dastra.lag.status_changed",
                "id": str(uuid.uuid4()),
                "cluster": self._lag.cluster_name,
                "group": change.group,
                "previous": change.previous.value if change.previous else None,
                "status": change.status.value,
                "status_code": change.status.code,
                "reason": change.reason,
                "lag": group.lag if group else None,
                "max_time_lag_s": round(group.max_time_lag_s, 3) if group else None,
                "at": datetime.fromtimestamp(change.at, UTC).isoformat(),
            }
        )

    async def run(self) -> None:
        while True:
            payload = await self._queue.get()
            await self._deliver(payload)

    async def _deliver(self, payload: dict[str, Any]) -> None:
        url = self._url.get_secret_value()
        headers = {"webhook-id": payload["id"], "user-agent": "dastra-kafka-lag"}
        for attempt in range(1, self._lag.alert_max_attempts + 1):
            retry_after: float | None = None
            try:
                response = await self._client.post(url, json=payload, headers=headers)
            except httpx.HTTPError as exc:
                outcome = type(exc).__name__
            else:
                if response.is_success:
                    _log.info("lag alert delivered", group=payload["group"], attempt=attempt)
                    return
                outcome = f"HTTP {response.status_code}"
                if response.status_code < 500 and response.status_code not in (408, 429):
                    _log.warning("lag alert refused", group=payload["group"], outcome=outcome)
                    return
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            if attempt < self._lag.alert_max_attempts:
                # Spread jitter: many monitors do not retry in step. Retry-After: at most 5 min.
                wait = backoff_delay(
                    attempt,
                    base=self._lag.alert_backoff_s,
                    cap=60.0,
                    retry_after=retry_after,
                    jitter="spread",
                    rule="exact",
                    retry_after_cap=300.0,
                )
                _log.info("lag alert retried", group=payload["group"], outcome=outcome, wait=wait)
                await asyncio.sleep(wait)
        _log.warning("lag alert given up", group=payload["group"], outcome=outcome)

    async def aclose(self) -> None:
        await self._client.aclose()


def create_app(
    monitor: LagMonitor,
    lag: LagSettings,
    *,
    alert_transport: httpx.AsyncBaseTransport | None = None,
) -> FastAPI:
    """The FastAPI app of `lag serve`; it opens `monitor` on start-up and closes it on shutdown.

    app = create_app(LagMonitor(kafka, lag), lag)
    """
    service = LagService(monitor, lag)
    registry = role_registry()
    registry.register(_LagCollector(service))

    async def refresh_loop(alerter: _Alerter | None, stop: asyncio.Event) -> None:
        while not stop.is_set():
            changes = await asyncio.to_thread(service.refresh)
            if alerter is not None:
                for change in changes:
                    alerter.submit(change, service.snapshot)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(lag.refresh_interval_s):
                    await stop.wait()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        alerter = _Alerter(lag, alert_transport) if lag.alert_url is not None else None
        stop = asyncio.Event()
        refreshing = asyncio.create_task(refresh_loop(alerter, stop), name="lag-refresh")
        alerting = asyncio.create_task(alerter.run(), name="lag-alerts") if alerter else None
        try:
            yield
        finally:
            # Let a refresh running in its thread finish before the monitor is closed under it
            # (cancelling the task would not stop the thread).
            stop.set()
            await refreshing
            if alerting is not None:
                alerting.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await alerting
            if alerter is not None:
                await alerter.aclose()
            await asyncio.to_thread(service.close)

    app = FastAPI(
        title="dastra-kafka lag",
        description="Consumer lag of the watched groups: metrics, JSON and a web page.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    add_api_docs(app)
    app.state.service = service
    app.state.registry = registry

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page() -> HTMLResponse:
        return HTMLResponse(PAGE, headers={"cache-control": "no-store"})

    @app.get("/api/lag")
    async def api_lag() -> JSONResponse:
        snapshot = service.snapshot
        if snapshot is None:
            return JSONResponse(
                {"error": service.error or "no refresh yet"},
                status_code=503,
                headers={"retry-after": str(max(1, round(lag.refresh_interval_s)))},
            )
        body = snapshot.to_dict()
        body["error"] = service.error
        body["refresh_interval_s"] = lag.refresh_interval_s
        return JSONResponse(body)

    @app.get("/api/lag/trend")
    async def api_trend() -> dict[str, Any]:
        return service.trend()

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        ok = service.healthy()
        return JSONResponse({"ok": ok, "error": service.error}, status_code=200 if ok else 503)

    return app
