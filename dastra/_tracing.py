"""The CLIENT span of one HTTP attempt to Dastra.

Consumes the method, the base URL, the request path and the endpoint template. Produces an
OpenTelemetry span `<METHOD> <template>` (a child of the current span, say the agent's
processing span) with `http.request.method`, `url.full` without its query string (searches carry
e-mails in it), `url.template`, `server.address` and, once known, `http.response.status_code`.
Never a query, a header, a body or an error's text (a failed attempt's status is its class).
Without an OpenTelemetry SDK the span is the API's no-op one.

    with client_span("GET", base_url, "/v1/ws/12/Actors", "/v1/ws/{ws}/Actors") as span:
        response = await http.request(...)
        span.set_attribute("http.response.status_code", response.status_code)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from opentelemetry import trace
from opentelemetry.trace import (
    INVALID_SPAN,
    NoOpTracerProvider,
    ProxyTracerProvider,
    Span,
    SpanKind,
    StatusCode,
    Tracer,
    TracerProvider,
)

__all__ = ["client_span", "url_without_query"]

_cached: tuple[TracerProvider, Tracer] | None = None


def _tracer() -> Tracer:
    global _cached
    provider = trace.get_tracer_provider()
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer("dastra-kafka.dastra"))
    return _cached[1]


def url_without_query(base_url: str, path: str) -> httpx.URL:
    """The request's URL with no query string, no fragment and no user info.

    str(url_without_query("https://api.dastra.eu/", "/v1/ws/1/Actors?search=a@b.c"))
    # 'https://api.dastra.eu/v1/ws/1/Actors'
    """
    url = httpx.URL(base_url.rstrip("/") + "/" + path.lstrip("/"))
    return url.copy_with(query=None, fragment=None, userinfo=b"")


@contextmanager
def client_span(method: str, base_url: str, path: str, template: str) -> Iterator[Span]:
    """The span of one attempt, current for the block."""
    if isinstance(trace.get_tracer_provider(), (ProxyTracerProvider, NoOpTracerProvider)):
        yield INVALID_SPAN  # no SDK: not even a no-op span to build
        return
    url = url_without_query(base_url, path)
    with _tracer().start_as_current_span(
        f"{method} {template}",
        kind=SpanKind.CLIENT,
        attributes={
            "http.request.method": method,
            "url.full": str(url),
            "url.template": template,
            "server.address": url.host,
        },
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        try:
            yield span
        except BaseException as exc:
            # The class only: an exception's text may hold what a span must not.
            span.set_status(StatusCode.ERROR, type(exc).__name__)
            raise
