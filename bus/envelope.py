"""CloudEvents 1.0 over Kafka (the Kafka protocol binding), on the CloudEvents SDK.

Consumes Kafka record headers and values. Produces binary-mode records (`ce_*` headers plus
`content-type: application/json`, the JSON data as value) and decodes binary mode, structured mode
(`application/cloudevents+json`) and plain JSON alike into one `Envelope`. JSON is parsed
strictly: a value that is not JSON raises `EnvelopeError`, never a silent string.

    headers, value = encode_binary(new_event(type=..., source=..., id=..., data={...}))
    envelope = decode(record.headers(), record.value(), fallback_id="topic/0/42")
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from cloudevents.core.bindings.kafka import KafkaMessage, from_binary, to_binary
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent
from confluent_kafka import Message

__all__ = [
    "CONTENT_TYPE_JSON",
    "CONTENT_TYPE_STRUCTURED",
    "Envelope",
    "EnvelopeError",
    "Headers",
    "RecordHeaders",
    "decode",
    "deterministic_id",
    "dumps",
    "encode_binary",
    "encode_structured",
    "header_dict",
    "header_pairs",
    "new_event",
    "record_headers",
]

CONTENT_TYPE_JSON = "application/json"
CONTENT_TYPE_STRUCTURED = "application/cloudevents+json; charset=UTF-8"

# Kafka headers as the clients give them: a list of (name, value) pairs, or None.
Headers = Sequence[tuple[str, bytes | str | None]] | None
# Kafka headers as we hand them to confluent-kafka's produce().
RecordHeaders = list[tuple[str, str | bytes | None]]
# Anything `header_pairs` and `header_dict` normalise: pairs (any iterable), a dict, or None.
AnyHeaders = Iterable[tuple[str, bytes | str | None]] | Mapping[str, bytes | str | None] | None


class EnvelopeError(ValueError):
    """A record is not a valid CloudEvent or JSON document; `kind` classifies it for the DLQ."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


def dumps(data: Any) -> bytes:
    """Compact, UTF-8 JSON as our records carry it."""
    return json.dumps(
        data, ensure_ascii=False, separators=(",", ":"), default=_json_default
    ).encode("utf-8")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def deterministic_id(*parts: str | int) -> str:
    """An event id built from the parts that identify a change, so the same change always gets
    the same id and any consumer can drop duplicates.

        deterministic_id("dastra", 12, "task.created", 345)  # 'dastra:12:task.created:345'
    """
    if not parts:
        raise ValueError("deterministic_id needs at least one part")
    return ":".join(str(part) for part in parts)


def new_event(
    *,
    type: str,
    source: str,
    id: str,
    data: Any,
    subject: str | None = None,
    time: datetime | None = None,
    extensions: Mapping[str, str] | None = None,
) -> CloudEvent:
    """A CloudEvent whose data is JSON (serialised here, so lists and scalars work too)."""
    attributes: dict[str, Any] = {
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": type,
        "time": time or datetime.now(UTC),
        "datacontenttype": CONTENT_TYPE_JSON,
    }
    if subject is not None:
        attributes["subject"] = subject
    if extensions:
        attributes.update(extensions)
    try:
        return CloudEvent(attributes, None if data is None else dumps(data))
    except BaseCloudEventException as exc:
        raise EnvelopeError("bad-envelope", f"invalid CloudEvent attributes: {exc}") from exc


def encode_binary(event: CloudEvent) -> tuple[RecordHeaders, bytes | None]:
    """Binary content mode: `ce_*` headers and `content-type`; the data bytes as value.

    An event without data yields a None value: a tombstone on a compacted topic.
    """
    message = to_binary(event, JSONFormat(), key_mapper=lambda _event: None)
    raw = event.get_data()
    value = raw if isinstance(raw, bytes) else (None if raw is None else message.value)
    headers: RecordHeaders = [(name, message.headers[name]) for name in sorted(message.headers)]
    return headers, value


def encode_structured(event: CloudEvent) -> tuple[RecordHeaders, bytes]:
    """Structured content mode: the whole event as one JSON document."""
    attributes = dict(event.get_attributes())
    raw = event.get_data()
    document: dict[str, Any] = {
        key: (value.isoformat() if isinstance(value, datetime) else value)
        for key, value in attributes.items()
    }
    if raw is not None:
        document["data"] = json.loads(raw) if isinstance(raw, bytes) else raw
    return [("content-type", CONTENT_TYPE_STRUCTURED.encode())], dumps(document)


@dataclass(frozen=True)
class Envelope:
    """A decoded record: CloudEvent attributes (absent for plain JSON) and the parsed data."""

    mode: Literal["binary", "structured", "plain"]
    id: str
    data: Any
    type: str | None = None
    source: str | None = None
    subject: str | None = None
    time: datetime | None = None
    attributes: Mapping[str, Any] = field(default_factory=dict)


def header_pairs(headers: AnyHeaders) -> list[tuple[str, bytes]]:
    """Headers as a list of (name, bytes) pairs: names, order and repeats kept, str values
    encoded as UTF-8, None values (a header without a value) dropped."""
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    return [
        (name, value.encode() if isinstance(value, str) else value)
        for name, value in pairs
        if value is not None
    ]


def header_dict(headers: AnyHeaders) -> dict[str, bytes]:
    """Headers as a dict with lower-case names (the last value of a repeated name wins; None
    values dropped, str values encoded as UTF-8). Lookups decode with, say,
    `.decode("utf-8", "replace")`."""
    return {name.lower(): value for name, value in header_pairs(headers)}


def _parse_json(value: bytes | None, what: str) -> Any:
    if value is None or value == b"":
        raise EnvelopeError("empty", f"{what} is empty")
    try:
        return json.loads(value)
    except UnicodeDecodeError as exc:
        raise EnvelopeError("not-json", f"{what} is not UTF-8: {exc.reason}") from exc
    except json.JSONDecodeError as exc:
        raise EnvelopeError(
            "not-json", f"{what} is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
        ) from exc


class _StrictJSON(JSONFormat):
    def read_data(self, body: bytes, datacontenttype: str | None) -> Any:
        return _parse_json(body, "the CloudEvent data")


def decode(headers: Headers, value: bytes | None, *, fallback_id: str) -> Envelope:
    """Decode binary mode, structured mode or plain JSON.

    `fallback_id` (e.g. `topic/partition/offset`) is the id of a plain-JSON record without one.
    Raises `EnvelopeError` with kind `empty`, `not-json` or `bad-envelope`.
    """
    found = header_dict(headers)
    content_type = found.get("content-type", b"").decode("utf-8", "replace").strip().lower()
    if content_type.startswith("application/cloudevents"):
        document = _parse_json(value, "the structured CloudEvent")
        if not isinstance(document, dict):
            raise EnvelopeError("bad-envelope", "a structured CloudEvent must be a JSON object")
        return _from_attributes("structured", document, document.get("data"))
    if any(name.startswith("ce_") for name in found):
        message = KafkaMessage(headers=found, key=None, value=value or b"")
        try:
            event = from_binary(message, _StrictJSON(), CloudEvent)
        except EnvelopeError:
            raise
        except (BaseCloudEventException, ValueError) as exc:
            raise EnvelopeError("bad-envelope", f"invalid CloudEvent headers: {exc}") from exc
        attributes = dict(event.get_attributes())
        return _from_attributes("binary", attributes, event.get_data(), validated=True)
    data = _parse_json(value, "the record value")
    return Envelope(mode="plain", id=fallback_id, data=data)


def _from_attributes(
    mode: Literal["binary", "structured"],
    attributes: Mapping[str, Any],
    data: Any,
    validated: bool = False,
) -> Envelope:
    if not validated:
        candidate = {k: v for k, v in attributes.items() if k not in ("data", "data_base64")}
        try:
            if isinstance(candidate.get("time"), str):
                candidate["time"] = datetime.fromisoformat(candidate["time"].replace("Z", "+00:00"))
            CloudEvent(candidate, None)
        except (BaseCloudEventException, ValueError) as exc:
            raise EnvelopeError("bad-envelope", f"invalid CloudEvent: {exc}") from exc
        attributes = candidate
    for required in ("id", "source", "type"):
        if not attributes.get(required):
            raise EnvelopeError("bad-envelope", f"the CloudEvent has no {required!r}")
    time = attributes.get("time")
    return Envelope(
        mode=mode,
        id=str(attributes["id"]),
        data=data,
        type=str(attributes["type"]),
        source=str(attributes["source"]),
        subject=attributes.get("subject"),
        time=time if isinstance(time, datetime) else None,
        attributes=attributes,
    )


def record_headers(message: Message) -> list[tuple[str, bytes | str | None]]:
    """A consumed record's headers as a list of pairs."""
    headers = message.headers()
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers or [])
