"""Trace context in record headers (`bus/tracing.py`): the CloudEvents distributed tracing
extension in binary mode, what is injected with and without an SDK, and the spans' parents."""

from __future__ import annotations

import pytest
from opentelemetry import trace

from bus.envelope import RecordHeaders, decode, encode_binary, header_dict, new_event
from bus.tracing import (
    TRACEPARENT_HEADER,
    TRACESTATE_HEADER,
    context_of,
    inject,
    processing,
    sending,
)
from tests.tracing_support import in_memory_spans, views_of

PARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
OTHER = "00-11111111111111111111111111111111-2222222222222222-01"


def _event_headers() -> RecordHeaders:
    headers, _ = encode_binary(
        new_event(type="eu.dastra.command.create-task", source="s", id="c-1", data={"a": 1})
    )
    return headers


def test_without_an_sdk_or_a_context_nothing_is_added() -> None:
    headers = _event_headers()
    before = list(headers)
    with sending("t"):
        inject(headers)
    assert headers == before


def test_without_an_sdk_a_record_s_context_passes_through_unchanged() -> None:
    headers = [(TRACEPARENT_HEADER, PARENT.encode()), (TRACESTATE_HEADER, b"vendor=1")]
    out = _event_headers()
    with processing("commands", 0, 5, headers):
        inject(out)
    found = header_dict(out)
    assert found[TRACEPARENT_HEADER] == PARENT.encode()
    assert found[TRACESTATE_HEADER] == b"vendor=1"


def test_an_injected_context_is_the_cloudevent_s_traceparent_extension() -> None:
    with in_memory_spans() as spans:
        headers = _event_headers()
        with sending("commands", message_id="c-1") as span:
            inject(headers)
            inject(headers)  # replaced, never repeated
        context = span.get_span_context()
        [sent] = views_of(spans.get_finished_spans())
    names = [name for name, _ in headers]
    assert names.count(TRACEPARENT_HEADER) == 1 and TRACESTATE_HEADER not in names
    expected = f"00-{context.trace_id:032x}-{context.span_id:016x}-{context.trace_flags:02x}"
    assert header_dict(headers)[TRACEPARENT_HEADER] == expected.encode()
    # A CloudEvents SDK reads it as the event's `traceparent` extension attribute.
    envelope = decode(headers, b'{"a":1}', fallback_id="")
    assert envelope.attributes["traceparent"] == expected
    assert sent.kind == "PRODUCER" and sent.name == "send commands"
    assert sent.attributes["messaging.message.id"] == "c-1"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(TRACEPARENT_HEADER, PARENT.encode())], PARENT),
        ([("traceparent", PARENT)], PARENT),  # another OpenTelemetry client's bare header
        (
            [
                ("traceparent", "00-" + "1" * 32 + "-" + "2" * 16 + "-01"),
                ("ce_traceparent", PARENT),
            ],
            PARENT,
        ),
        ([(TRACEPARENT_HEADER, b"not-a-traceparent")], None),
        ([("ce_id", b"x")], None),
        (None, None),
    ],
)
def test_the_context_a_record_carries(
    headers: list[tuple[str, bytes | str | None]] | None, expected: str | None
) -> None:
    found = context_of(headers)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        context = trace.get_current_span(found).get_span_context()
        assert f"00-{context.trace_id:032x}-{context.span_id:016x}-01" == expected


def test_processing_is_a_child_of_the_record_s_context_or_a_new_trace() -> None:
    with in_memory_spans() as spans:
        with sending("elsewhere"):  # a current span the record's processing must not join
            with processing("commands", 3, 42, [(TRACEPARENT_HEADER, PARENT.encode())]):
                pass
            with processing("commands", 3, 43, []):
                pass
        carried, fresh, outer = views_of(spans.get_finished_spans())
    assert carried.trace_id == PARENT.split("-")[1] and carried.parent_id == PARENT.split("-")[2]
    assert carried.kind == "CONSUMER"
    assert carried.attributes["messaging.destination.partition.id"] == "3"
    assert carried.attributes["messaging.kafka.offset"] == 42
    assert fresh.parent_id is None and fresh.trace_id != outer.trace_id


def test_a_failure_is_recorded_by_its_class_only() -> None:
    with in_memory_spans() as spans:
        with pytest.raises(ValueError, match="jane@doe"), processing("commands", 0, 1, None):
            raise ValueError("jane@doe.example is not a valid thing")
        [span] = spans.get_finished_spans()
    assert span.status.description == "ValueError"
    assert not span.events
