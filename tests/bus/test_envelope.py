"""The CloudEvents envelope: binary out; binary, structured and plain JSON in; strict JSON."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.envelope import (
    EnvelopeError,
    decode,
    deterministic_id,
    encode_binary,
    encode_structured,
    new_event,
)

WHEN = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def _event() -> object:
    return new_event(
        type="eu.dastra.task.created",
        source="dastra://workspaces/12",
        id=deterministic_id("dastra", 12, "task.created", 345),
        subject="12:345",
        time=WHEN,
        data={"id": 345, "label": "Réviser le registre", "unknownField": [1, 2]},
    )


def test_binary_mode_headers_and_value() -> None:
    headers, value = encode_binary(_event())  # type: ignore[arg-type]
    assert dict(headers) == {
        "ce_specversion": b"1.0",
        "ce_id": b"dastra:12:task.created:345",
        "ce_source": b"dastra://workspaces/12",
        "ce_type": b"eu.dastra.task.created",
        "ce_subject": b"12:345",
        "ce_time": b"2026-11-28T12:00:00Z",
        "content-type": b"application/json",
    }
    assert value == '{"id":345,"label":"Réviser le registre","unknownField":[1,2]}'.encode()


def test_binary_and_structured_decode_to_the_same_envelope() -> None:
    event = _event()
    binary = decode(*encode_binary(event), fallback_id="unused")  # type: ignore[arg-type]
    structured = decode(*encode_structured(event), fallback_id="unused")  # type: ignore[arg-type]
    for envelope in (binary, structured):
        assert envelope.id == "dastra:12:task.created:345"
        assert envelope.type == "eu.dastra.task.created"
        assert envelope.subject == "12:345"
        assert envelope.time == WHEN
        assert envelope.data["label"] == "Réviser le registre"
    assert (binary.mode, structured.mode) == ("binary", "structured")


def test_plain_json_takes_the_fallback_id() -> None:
    envelope = decode(None, b'{"label": "x"}', fallback_id="topic/2/41")
    assert (envelope.mode, envelope.id, envelope.data) == ("plain", "topic/2/41", {"label": "x"})


def test_an_event_without_data_is_a_tombstone() -> None:
    event = new_event(type="t", source="s", id="i", data=None)
    assert encode_binary(event)[1] is None


@pytest.mark.parametrize(
    ("headers", "value", "kind"),
    [
        (None, b"not json", "not-json"),
        (None, b"\xff\xfe", "not-json"),
        (None, b"", "empty"),
        (None, None, "empty"),
        ([("ce_id", b"1"), ("ce_specversion", b"1.0")], b"{}", "bad-envelope"),
        (
            [("ce_id", b"1"), ("ce_source", b"s"), ("ce_type", b"t"), ("ce_specversion", b"1.0")],
            b"{broken",
            "not-json",
        ),
        ([("content-type", b"application/cloudevents+json")], b"[1, 2]", "bad-envelope"),
        ([("content-type", b"application/cloudevents+json")], b'{"id": "x"}', "bad-envelope"),
    ],
)
def test_bad_records_are_classified(
    headers: list[tuple[str, bytes]] | None, value: bytes | None, kind: str
) -> None:
    with pytest.raises(EnvelopeError) as caught:
        decode(headers, value, fallback_id="f")
    assert caught.value.kind == kind
