"""Helpers of the tracing tests: an SDK tracer provider with an in-memory exporter for the spans
of this test process, and an OTLP/HTTP receiver for the spans of a service subprocess (the real
`dastra-kafka worker`, exporting because OTEL_EXPORTER_OTLP_ENDPOINT points at the receiver).
Both give spans as `SpanView`s, so one trace can be checked across processes."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

__all__ = ["OtlpReceiver", "SpanView", "fresh_tracing_globals", "in_memory_spans", "views_of"]

# The OTLP span kinds (SPAN_KIND_INTERNAL = 1, ...) by the API's names.
_OTLP_KINDS = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


@dataclass(frozen=True)
class SpanView:
    """One span, wherever it was recorded: ids as hex, kind as the API names it."""

    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str | None
    attributes: Mapping[str, Any] = field(default_factory=dict)
    service: str = ""


def views_of(spans: Iterator[ReadableSpan] | tuple[ReadableSpan, ...]) -> list[SpanView]:
    """The spans an in-memory exporter holds, as `SpanView`s."""
    views = []
    for span in spans:
        context = span.get_span_context()
        assert context is not None
        views.append(
            SpanView(
                name=span.name,
                kind=span.kind.name,
                trace_id=f"{context.trace_id:032x}",
                span_id=f"{context.span_id:016x}",
                parent_id=f"{span.parent.span_id:016x}" if span.parent is not None else None,
                attributes=dict(span.attributes or {}),
                service=str(span.resource.attributes.get("service.name", "")),
            )
        )
    return views


@contextmanager
def fresh_tracing_globals() -> Iterator[None]:
    """For the block, a global tracer provider may be set (once) again; the previous one (the
    API's no-op proxy) is back afterwards, so other tests stay untraced.

    The API lets a process set its provider once; OpenTelemetry's own test utilities
    (`opentelemetry.test.globals_test.reset_trace_globals`) reset these two globals the same way.
    """
    saved = (trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE)
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    try:
        yield
    finally:
        trace._TRACER_PROVIDER, trace._TRACER_PROVIDER_SET_ONCE = saved


@contextmanager
def in_memory_spans() -> Iterator[InMemorySpanExporter]:
    """An SDK provider as this process's global one for the block, every span kept in memory."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with fresh_tracing_globals():
        trace.set_tracer_provider(provider)
        try:
            yield exporter
        finally:
            provider.shutdown()


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    return getattr(value, which) if which is not None else None


class OtlpReceiver:
    """An OTLP/HTTP (protobuf) trace endpoint on a loopback port: `endpoint` is what
    OTEL_EXPORTER_OTLP_ENDPOINT names; `spans()` is everything received so far."""

    def __init__(self) -> None:
        self._spans: list[SpanView] = []
        self._lock = threading.Lock()
        receiver = self

        class _Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver._add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def _add(self, request: ExportTraceServiceRequest) -> None:
        views = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    views.append(
                        SpanView(
                            name=span.name,
                            kind=_OTLP_KINDS.get(span.kind, str(span.kind)),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex() or None,
                            attributes={a.key: _value(a.value) for a in span.attributes},
                            service=str(resource.get("service.name", "")),
                        )
                    )
        with self._lock:
            self._spans.extend(views)

    def spans(self) -> list[SpanView]:
        with self._lock:
            return list(self._spans)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
