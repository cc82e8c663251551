"""Trace context across Kafka: W3C Trace Context in record headers, and the spans around them.

Consumes Kafka record headers and the current OpenTelemetry context. Produces the CloudEvents
distributed tracing extension in binary mode: the `traceparent` and `tracestate` attributes as
`ce_traceparent` and `ce_tracestate` headers (the Kafka binding prefixes every attribute with
`ce_`), so a CloudEvents SDK reads them as the event's extension attributes. A record written by
another OpenTelemetry-instrumented client with a bare `traceparent` header is understood too.

Spans follow the OpenTelemetry messaging conventions (`send <topic>` as PRODUCER, `process
<topic>` as CONSUMER) and carry ids only: topic, partition, offset, the CloudEvent id and type.
Never a key (an actor command's key may be derived from an e-mail), a value or a header value.

The tracer comes from the global provider at each call (cheap, and a test may swap providers):
with no SDK installed (`dastra_kafka.tracing` installs one only when OTLP export is configured),
spans are the API's no-op ones and nothing is injected unless a record brought a context, which
then passes through unchanged.

    with sending(topic, message_id=command_id):
        headers = inject(headers)
    with processing(record.topic, record.partition, record.offset, record.headers):
        ...
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
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
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bus.envelope import RecordHeaders

__all__ = [
    "TRACEPARENT_HEADER",
    "TRACESTATE_HEADER",
    "context_of",
    "inject",
    "processing",
    "sending",
    "span",
]

TRACEPARENT_HEADER = "ce_traceparent"
TRACESTATE_HEADER = "ce_tracestate"

_SCOPE = "dastra-kafka"
_PROPAGATOR = TraceContextTextMapPropagator()
_cached: tuple[TracerProvider, Tracer] | None = None


def _off() -> bool:
    """No SDK installed: every span would be the API's no-op one, so none is even started."""
    return isinstance(trace.get_tracer_provider(), (ProxyTracerProvider, NoOpTracerProvider))


@contextmanager
def _passing(parent: otel_context.Context | None) -> Iterator[Span]:
    """Tracing off: no span; a record's context, if any, is made current so that `inject`
    passes it on unchanged."""
    if parent is None:
        yield INVALID_SPAN
        return
    token = otel_context.attach(parent)
    try:
        yield trace.get_current_span(parent)
    finally:
        otel_context.detach(token)


def _tracer() -> Tracer:
    global _cached
    provider = trace.get_tracer_provider()
    if _cached is None or _cached[0] is not provider:
        _cached = (provider, provider.get_tracer(_SCOPE))
    return _cached[1]


def _text(value: bytes | str | None) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def context_of(
    headers: Iterable[tuple[str, bytes | str | None]] | None,
) -> otel_context.Context | None:
    """The trace context a record's headers carry (`ce_traceparent`, else `traceparent`), or
    None when they carry none (a record from before tracing, or from an untraced producer)."""
    carrier: dict[str, str] = {}
    bare: dict[str, str] = {}
    for name, value in headers or ():
        lowered = name.lower()
        if lowered in (TRACEPARENT_HEADER, TRACESTATE_HEADER):
            text = _text(value)
            if text is not None:
                carrier[lowered[3:]] = text
        elif lowered in ("traceparent", "tracestate"):
            text = _text(value)
            if text is not None:
                bare[lowered] = text
    if "traceparent" not in carrier:
        carrier = bare
    if "traceparent" not in carrier:
        return None
    found = _PROPAGATOR.extract(carrier)
    if not trace.get_current_span(found).get_span_context().is_valid:
        return None
    return found


def inject(headers: RecordHeaders) -> RecordHeaders:
    """`headers` with the current span's context as `ce_traceparent` (and `ce_tracestate`),
    replacing any already there; unchanged when there is no valid current span."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if "traceparent" not in carrier:
        return headers
    kept = [(n, v) for n, v in headers if n.lower() not in (TRACEPARENT_HEADER, TRACESTATE_HEADER)]
    kept.append((TRACEPARENT_HEADER, carrier["traceparent"].encode()))
    if carrier.get("tracestate"):
        kept.append((TRACESTATE_HEADER, carrier["tracestate"].encode()))
    headers[:] = kept
    return headers


@contextmanager
def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    parent: otel_context.Context | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """A span made current for the block; `parent` (say, from `context_of`) instead of the
    current context when given. Attributes must be ids, never personal data."""
    if _off():
        with _passing(parent) as passed:
            yield passed
        return
    with _tracer().start_as_current_span(
        name,
        context=parent,
        kind=kind,
        attributes=dict(attributes) if attributes else None,
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            # The class only: an exception's text may quote a command's fields.
            current.set_status(StatusCode.ERROR, type(exc).__name__)
            raise


@contextmanager
def sending(
    topic: str,
    *,
    message_id: str | None = None,
    event_type: str | None = None,
) -> Iterator[Span]:
    """The PRODUCER span of one record: `inject` the headers inside it."""
    if _off():
        yield INVALID_SPAN
        return
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
    }
    if message_id is not None:
        attributes["messaging.message.id"] = message_id
    if event_type is not None:
        attributes["cloudevents.event_type"] = event_type
    with span(f"send {topic}", kind=SpanKind.PRODUCER, attributes=attributes) as current:
        yield current


@contextmanager
def processing(
    topic: str,
    partition: int,
    offset: int,
    headers: Iterable[tuple[str, bytes | str | None]] | None,
    *,
    message_id: str | None = None,
    attributes: Mapping[str, Any] | None = None,
) -> Iterator[Span]:
    """The CONSUMER span of processing one record, a child of the context its headers carry
    (a new trace when they carry none)."""
    parent = context_of(headers)
    if _off():
        with _passing(parent) as passed:
            yield passed
        return
    found: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
    }
    if message_id is not None:
        found["messaging.message.id"] = message_id
    if attributes:
        found.update(attributes)
    with span(
        f"process {topic}",
        kind=SpanKind.CONSUMER,
        parent=parent if parent is not None else otel_context.Context(),
        attributes=found,
    ) as current:
        yield current
