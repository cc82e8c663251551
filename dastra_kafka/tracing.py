"""The OpenTelemetry SDK of one service process, set up once at its entry point.

Consumes `TracingSettings` (`OTEL_EXPORTER_OTLP_ENDPOINT`, `OTEL_SERVICE_NAME`; the OTLP
exporter also reads the other standard `OTEL_EXPORTER_OTLP_*` variables itself, such as
`OTEL_EXPORTER_OTLP_HEADERS`). Produces, when an endpoint is set, a global SDK tracer provider
that batches spans to `<endpoint>/v1/traces` over OTLP HTTP/protobuf, flushed and shut down when
the block ends. With no endpoint it installs nothing: the spans of `bus/tracing.py` and
`dastra/_tracing.py` stay the API's no-op ones (no span processor, no export, no sampling cost),
and a trace context a record brings passes through unchanged.

    with traced(settings.tracing, "worker"):
        run_the_worker()
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import structlog
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["TracingSettings", "traced"]

_log = structlog.get_logger(__name__)


class TracingSettings(BaseSettings):
    """The standard OpenTelemetry variables this project reads (prefix `OTEL_`)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", frozen=True, extra="ignore")

    # The OTLP/HTTP collector, e.g. http://otel-collector:4318; unset: no tracing.
    exporter_otlp_endpoint: str | None = None
    # The service.name resource attribute; default `dastra-kafka-<role>`.
    service_name: str | None = None


@contextmanager
def traced(settings: TracingSettings, role: str) -> Iterator[None]:
    """Export this process's spans for the block when `OTEL_EXPORTER_OTLP_ENDPOINT` is set."""
    endpoint = settings.exporter_otlp_endpoint
    if not endpoint:
        yield
        return
    # Imported here: a process without tracing never loads the SDK.
    from opentelemetry import trace
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    name = settings.service_name or f"dastra-kafka-{role}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(
        BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces"))
    )
    trace.set_tracer_provider(provider)
    _log.info("tracing.enabled", service=name, exporter="otlp-http")
    try:
        yield
    finally:
        provider.shutdown()
