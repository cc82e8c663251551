"""Dead-letter records keep the original untouched and say why, in the dlq.* headers."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bus.deadletter import ErrorKind, OriginalRecord, dead_letter, read_dead_letter


def test_original_bytes_and_headers_are_kept_and_the_reason_added() -> None:
    original = OriginalRecord(
        topic="dastra.commands.create-task.v1",
        partition=2,
        offset=41,
        key=b"k",
        value=b"\xffnot json",
        headers=[("ce_id", b"c-1"), ("trace", "abc")],
    )
    when = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    key, value, headers = dead_letter(
        original,
        kind=ErrorKind.NOT_JSON,
        message="the record value is not JSON",
        component="agents",
        failed_at=when,
    )
    assert (key, value) == (b"k", b"\xffnot json")
    assert headers[:2] == [("ce_id", b"c-1"), ("trace", b"abc")]
    info = read_dead_letter(headers)
    assert (info.kind, info.topic, info.partition, info.offset) == (
        "not-json",
        original.topic,
        2,
        41,
    )
    assert info.failed_at == when
    assert info.component == "agents"
    assert info.original_headers == [("ce_id", b"c-1"), ("trace", b"abc")]


def test_a_dead_letter_of_a_dead_letter_does_not_stack_headers() -> None:
    first = dead_letter(
        OriginalRecord("t", 0, 1, None, b"{}", None),
        kind="invalid-command",
        message="m",
        component="agents",
    )
    again = dead_letter(
        OriginalRecord("t", 0, 2, None, b"{}", first[2]),
        kind="dastra-rejected",
        message="n",
        component="agents",
    )
    names = [name for name, _ in again[2]]
    assert names.count("dlq.error.kind") == 1
    assert read_dead_letter(again[2]).kind == "dastra-rejected"


def test_records_without_dlq_headers_are_refused() -> None:
    with pytest.raises(ValueError, match="not a dead-letter record"):
        read_dead_letter([("ce_id", b"1")])
