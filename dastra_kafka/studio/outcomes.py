"""What a run's commands did, for the studio's history: each command's result and, for a failed
one, its dead letter.

Consumes dastra.command-results.v1 (key: command id) and, when a command failed,
dastra.dead-letter.v1, from a little before the run (or the first run it retries) started, with
`bus/reading.read_to_end` (by offsets, never in a group). Produces, per command id: its status,
attempts, the id(s) of the Dastra object(s) it made or found, its error (kind, message, HTTP
status, the names of the fields Dastra refused) and the `dlq.*` reason of its dead letter (kind,
message, component, attempts, time). Never the objects' content nor the dead letter's value:
ids, statuses and reasons as the records carry them.

    outcomes = command_outcomes(kafka, {"recipe:x:evt-1:task"}, since_ms=started_ms - 60_000)
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from pydantic import ValidationError

from bus.deadletter import read_dead_letter
from bus.reading import read_to_end
from bus.records.commands import CommandResult
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, DEAD_LETTER

__all__ = ["command_outcomes"]


def command_outcomes(
    kafka: KafkaSettings, command_ids: Collection[str], *, since_ms: int, timeout: float = 15.0
) -> dict[str, dict[str, Any]]:
    """The outcome of each command of `command_ids` that has a result on the topic (records
    from `since_ms` on; the latest result of a command counts). Blocking: run it in a thread."""
    wanted = {command_id.encode() for command_id in command_ids}
    results: dict[str, CommandResult] = {}
    for record in read_to_end(
        kafka,
        kafka.topic(COMMAND_RESULTS),
        timeout=timeout,
        keep=lambda key: key in wanted,
        since_ms=since_ms,
    ):
        if record.value is None:
            continue
        try:
            result = CommandResult.model_validate_json(record.value)
        except ValidationError:
            continue
        results[result.command_id] = result
    failed = {
        (result.source_partition, result.source_offset, result.source_topic): command_id
        for command_id, result in results.items()
        if result.status == "failed"
    }
    dead: dict[str, dict[str, Any]] = {}
    if failed:
        for record in read_to_end(
            kafka, kafka.topic(DEAD_LETTER), timeout=timeout, since_ms=since_ms
        ):
            try:
                info = read_dead_letter(record.headers)
            except ValueError:
                continue
            command_id = failed.get((info.partition, info.offset, info.topic))
            if command_id is not None:
                dead[command_id] = {
                    "kind": info.kind,
                    "message": info.message,
                    "component": info.component,
                    "attempts": info.attempts,
                    "failed_at": info.failed_at.isoformat(),
                }
    return {
        command_id: _outcome(result, dead.get(command_id)) for command_id, result in results.items()
    }


def _outcome(result: CommandResult, dead_letter: dict[str, Any] | None) -> dict[str, Any]:
    found = result.result
    objects = found if isinstance(found, list) else [found] if found is not None else []
    ids = [item.get("id") for item in objects if isinstance(item, dict) and "id" in item]
    error = result.error
    return {
        "command_id": result.command_id,
        "action": result.action,
        "status": result.status,
        "attempts": result.attempts,
        "completed_at": result.completed_at.isoformat(),
        "result_ids": ids,
        "error": (
            {
                "kind": error.kind,
                "message": error.message,
                "status": error.status,
                "fields": sorted(error.field_errors),
            }
            if error is not None
            else None
        ),
        "dead_letter": dead_letter,
    }
