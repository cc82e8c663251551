"""The Dastra client's metrics (dastra/metrics.py) at the HTTP edge: attempts by endpoint
template and status, retries, latency and rate-limiter waits, in the registry the owner passes
and never in the global one; endpoint templates keep ids and e-mails out of labels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from dastra import DastraClient, DastraConnectionError, RateLimiter
from dastra.metrics import DastraMetrics, endpoint_template
from dastra.settings import DastraSettings

BASE = "https://api.dastra.test"


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/me", "/me"),
        ("/v1/ws/12/Tasks/345", "/v1/ws/{ws}/Tasks/{id}"),
        ("/v1/ws/12/DataSubjectRequests", "/v1/ws/{ws}/DataSubjectRequests"),
        (
            "/v1/ws/12/DataProcessings/0f8fad5b-d9cb-469f-a165-70867728950e",
            "/v1/ws/{ws}/DataProcessings/{uuid}",
        ),
        (
            "/v1/ws/12/DataProcessings/recipients/batch",
            "/v1/ws/{ws}/DataProcessings/recipients/batch",
        ),
        ("/v1/ws/12/Actors/jane.doe@example.com", "/v1/ws/{ws}/Actors/{value}"),
        ("/v1/ws/12/Actors/JaneDoe", "/v1/ws/{ws}/Actors/{value}"),
        ("/v1/ws/12/Actors?q=jane.doe@example.com", "/v1/ws/{ws}/Actors"),
    ],
)
def test_endpoint_templates_carry_no_ids_and_no_personal_data(path: str, template: str) -> None:
    assert endpoint_template(path) == template


def _client(
    handler: Callable[[httpx.Request], httpx.Response],
    metrics: DastraMetrics,
    limiter: RateLimiter | None = None,
) -> DastraClient:
    settings = DastraSettings(
        base_url=BASE,
        api_key=SecretStr("sk-test"),
        retry_deadline_s=10,
        retry_backoff_s=0.01,
        retry_backoff_max_s=0.05,
    )
    return DastraClient(
        settings,
        transport=httpx.MockTransport(handler),
        limiter=limiter or RateLimiter.unlimited(),
        metrics=metrics,
    )


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_attempts_retries_and_latency_are_counted_per_endpoint_template() -> None:
    answers = [httpx.Response(429, headers={"Retry-After": "0"}), httpx.Response(200, json={})]

    def handler(request: httpx.Request) -> httpx.Response:
        return answers.pop(0)

    registry = CollectorRegistry()
    async with _client(handler, DastraMetrics(registry)) as dastra:
        await dastra.raw_get("/v1/ws/7/Tasks/9")
    where: dict[str, Any] = {"endpoint": "/v1/ws/{ws}/Tasks/{id}", "method": "GET"}
    assert _value(registry, "dastra_client_requests_total", **where, status="429") == 1
    assert _value(registry, "dastra_client_requests_total", **where, status="200") == 1
    assert _value(registry, "dastra_client_retries_total", **where, kind="rate_limited") == 1
    assert _value(registry, "dastra_client_request_duration_seconds_count", **where) == 2
    endpoint = where["endpoint"]
    assert _value(registry, "dastra_client_limiter_wait_seconds_count", endpoint=endpoint) == 2
    # Only the registry the owner passed: nothing in prometheus_client's global one.
    assert (
        prometheus_client.REGISTRY.get_sample_value(
            "dastra_client_requests_total", {**where, "status": "200"}
        )
        is None
    )


async def test_a_failure_without_response_is_counted_by_its_kind() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    registry = CollectorRegistry()
    async with _client(handler, DastraMetrics(registry)) as dastra:
        with pytest.raises(DastraConnectionError):
            await dastra.raw_get("/me", retry=False)
    labels = {"endpoint": "/me", "method": "GET", "status": "connection"}
    assert _value(registry, "dastra_client_requests_total", **labels) == 1


async def test_the_rate_limiters_wait_is_observed() -> None:
    registry = CollectorRegistry()
    # One request per 0.5 s: the second of two back-to-back requests waits for the window.
    limiter = RateLimiter([(1, 0.5)])
    async with _client(
        lambda _: httpx.Response(200, json={}), DastraMetrics(registry), limiter
    ) as dastra:
        await dastra.raw_get("/me")
        await dastra.raw_get("/me")
    assert _value(registry, "dastra_client_limiter_wait_seconds_count", endpoint="/me") == 2
    assert _value(registry, "dastra_client_limiter_wait_seconds_sum", endpoint="/me") >= 0.4
    assert (
        _value(registry, "dastra_client_limiter_wait_seconds_bucket", endpoint="/me", le="0.01")
        == 1
    )


async def test_the_share_of_the_rate_budget_used_is_reported_at_scrape_time() -> None:
    registry = CollectorRegistry()
    now = [100.0]
    # The poller's part of the default key (500/min, 10 000/10 min): 1/4, 125/min and 2 500.
    settings = DastraSettings(base_url=BASE, api_key=SecretStr("sk-test"), budget_role="poller")
    limiter = RateLimiter(settings.process_windows(), clock=lambda: now[0])
    dastra = DastraClient(
        settings,
        transport=httpx.MockTransport(lambda _: httpx.Response(200, json={})),
        limiter=limiter,
        metrics=DastraMetrics(registry),
    )

    def used(window: str, of: str) -> float:
        return _value(registry, "dastra_client_budget_used_ratio", window=window, of=of)

    assert used("60s", "key") == 0 and used("60s", "process") == 0
    async with dastra:
        for _ in range(25):
            await dastra.raw_get("/me")
    assert used("60s", "key") == pytest.approx(25 / 500)
    assert used("60s", "process") == pytest.approx(25 / 125)
    assert used("600s", "key") == pytest.approx(25 / 10_000)
    assert used("600s", "process") == pytest.approx(25 / 2_500)
    now[0] += 61  # the minute window has moved past them; the ten-minute one still holds them
    assert used("60s", "key") == 0
    assert used("600s", "process") == pytest.approx(25 / 2_500)
