"""Dead-letter records: the original record untouched, plus why it could not be processed.

Consumes a failed record (key, value bytes, headers, topic, partition, offset) and a reason.
Produces the record for `dastra.dead-letter.v1`: the original key, value bytes and headers
unchanged, plus the `dlq.*` headers of design §3. `dlq replay` reads them back.

    key, value, headers = dead_letter(original, kind=ErrorKind.NOT_JSON, message="...")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from bus.envelope import Headers, header_pairs

__all__ = [
    "DLQ_ATTEMPTS",
    "DLQ_COMPONENT",
    "DLQ_ERROR_KIND",
    "DLQ_ERROR_MESSAGE",
    "DLQ_FAILED_AT",
    "DLQ_ORIGINAL_OFFSET",
    "DLQ_ORIGINAL_PARTITION",
    "DLQ_ORIGINAL_TOPIC",
    "DLQ_VALUE_ENCRYPTED",
    "DeadLetterInfo",
    "ErrorKind",
    "OriginalRecord",
    "dead_letter",
    "read_dead_letter",
]

DLQ_ERROR_KIND = "dlq.error.kind"
DLQ_ERROR_MESSAGE = "dlq.error.message"
DLQ_ORIGINAL_TOPIC = "dlq.original.topic"
DLQ_ORIGINAL_PARTITION = "dlq.original.partition"
DLQ_ORIGINAL_OFFSET = "dlq.original.offset"
DLQ_FAILED_AT = "dlq.failed.at"
DLQ_COMPONENT = "dlq.component"
DLQ_ATTEMPTS = "dlq.attempts"
# The value is the original value sealed whole with its data subject's key (bus/privacy/).
DLQ_VALUE_ENCRYPTED = "dlq.value.encrypted"
_DLQ_HEADERS = {
    DLQ_ERROR_KIND,
    DLQ_ERROR_MESSAGE,
    DLQ_ORIGINAL_TOPIC,
    DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_OFFSET,
    DLQ_FAILED_AT,
    DLQ_COMPONENT,
    DLQ_ATTEMPTS,
    DLQ_VALUE_ENCRYPTED,
}
_MAX_MESSAGE = 1000


class ErrorKind(StrEnum):
    """Why a record failed; the value of `dlq.error.kind` and of a failed result's error kind."""

    EMPTY = "empty"
    NOT_JSON = "not-json"
    BAD_ENVELOPE = "bad-envelope"
    INVALID_COMMAND = "invalid-command"
    UNKNOWN_ACTION = "unknown-action"
    OVERSIZED = "oversized"
    DASTRA_REJECTED = "dastra-rejected"
    DASTRA_NOT_FOUND = "dastra-not-found"
    DASTRA_AUTH = "dastra-auth"
    RETRIES_EXHAUSTED = "retries-exhausted"
    DELIVERY_FAILED = "delivery-failed"


@dataclass(frozen=True)
class OriginalRecord:
    """A record as it was consumed."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers


def dead_letter(
    original: OriginalRecord,
    *,
    kind: ErrorKind | str,
    message: str,
    component: str,
    attempts: int = 1,
    failed_at: datetime | None = None,
) -> tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]:
    """Key, value and headers of the dead-letter record for `original`.

    `message` must not contain personal data or secrets: say what was wrong, not what was sent.
    """
    headers = [
        (name, value) for name, value in header_pairs(original.headers) if name not in _DLQ_HEADERS
    ]
    when = (failed_at or datetime.now(UTC)).isoformat().replace("+00:00", "Z")
    headers += [
        (DLQ_ERROR_KIND, str(kind).encode()),
        (DLQ_ERROR_MESSAGE, message[:_MAX_MESSAGE].encode()),
        (DLQ_ORIGINAL_TOPIC, original.topic.encode()),
        (DLQ_ORIGINAL_PARTITION, str(original.partition).encode()),
        (DLQ_ORIGINAL_OFFSET, str(original.offset).encode()),
        (DLQ_FAILED_AT, when.encode()),
        (DLQ_COMPONENT, component.encode()),
        (DLQ_ATTEMPTS, str(attempts).encode()),
    ]
    return original.key, original.value, headers


@dataclass(frozen=True)
class DeadLetterInfo:
    """What a dead-letter record says about its original."""

    kind: str
    message: str
    topic: str
    partition: int
    offset: int
    failed_at: datetime
    component: str
    attempts: int
    original_headers: list[tuple[str, bytes]]
    encrypted: bool = False


def read_dead_letter(headers: Headers) -> DeadLetterInfo:
    """Parse the `dlq.*` headers; raise `ValueError` when a record is not a dead letter."""
    found: dict[str, bytes] = {}
    original: list[tuple[str, bytes]] = []
    for name, raw in header_pairs(headers):
        if name in _DLQ_HEADERS:
            found[name] = raw
        else:
            original.append((name, raw))
    try:
        return DeadLetterInfo(
            kind=found[DLQ_ERROR_KIND].decode(),
            message=found[DLQ_ERROR_MESSAGE].decode(),
            topic=found[DLQ_ORIGINAL_TOPIC].decode(),
            partition=int(found[DLQ_ORIGINAL_PARTITION]),
            offset=int(found[DLQ_ORIGINAL_OFFSET]),
            failed_at=datetime.fromisoformat(found[DLQ_FAILED_AT].decode().replace("Z", "+00:00")),
            component=found.get(DLQ_COMPONENT, b"").decode(),
            attempts=int(found.get(DLQ_ATTEMPTS, b"1")),
            original_headers=original,
            encrypted=DLQ_VALUE_ENCRYPTED in found,
        )
    except (KeyError, ValueError) as exc:
        raise ValueError(f"not a dead-letter record: missing or bad header {exc}") from exc
