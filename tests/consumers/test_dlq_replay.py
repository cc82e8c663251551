"""`dastra-kafka dlq replay` choosing what to replay: by default only dead letters of commands,
never the events the hook dispatcher (or a recipe) could not use, which would go back to every
consumer of their event topic; `--include-events` and `--component` opt in. Dead letters are
written as their components write them, on the session broker; the CLI runs in process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from bus.deadletter import ErrorKind, OriginalRecord, dead_letter
from bus.envelope import encode_binary, new_event
from bus.settings import KafkaSettings
from bus.topics import DEAD_LETTER, RIGHTS_REQUESTS, TASKS, TopicCatalogue, command_topic
from dastra_kafka.cli import app as cli
from tests.consumers.agents_support import produce
from tests.kafka_helpers import read_all, unique


def _event(kind: str) -> tuple[list[Any], bytes]:
    event = new_event(type=f"eu.dastra.{kind}.created", source="dastra://workspaces/1",
                      id=unique(kind), data={"id": 7})  # fmt: skip
    headers, value = encode_binary(event)
    assert value is not None
    return list(headers), value


def _letter(
    kafka: KafkaSettings, topic: str, key: bytes, headers: list[Any], value: bytes, **why: Any
) -> tuple[bytes | None, list[Any], bytes | None]:
    original = OriginalRecord(topic=kafka.topic(topic), partition=0, offset=3, key=key,
                              value=value, headers=headers)  # fmt: skip
    dlq_key, dlq_value, dlq_headers = dead_letter(original, **why)
    return dlq_key, list(dlq_headers), dlq_value


def test_replay_takes_commands_only_unless_events_are_included(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    command = json.dumps({"label": "Call back"}).encode()
    task_headers, task_event = _event("task")
    request_headers, request_event = _event("rights_request")
    hook = _letter(kafka, TASKS, b"task-7", task_headers, task_event,
                   kind=ErrorKind.DELIVERY_FAILED, message="subscription h1: 500",
                   component="hooks", attempts=5)  # fmt: skip
    hook[1].append(("dlq.hook.id", b"h1"))
    letters = [
        _letter(kafka, command_topic("create-task"), b"crm-1", [], command,
                kind=ErrorKind.DASTRA_REJECTED, message="400", component="agents"),
        hook,
        _letter(kafka, RIGHTS_REQUESTS, b"rr-7", request_headers, request_event,
                kind="recipe-expression", message="bad expression", component="recipes"),
    ]  # fmt: skip
    produce(kafka, DEAD_LETTER, letters, partition=0)

    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", kafka.bootstrap_servers)
    monkeypatch.setenv("KAFKA_TOPIC_PREFIX", kafka.topic_prefix)

    def replay(*options: str) -> dict[str, Any]:
        args = ["--env-file", str(tmp_path / "none.env"), "dlq", "replay", "--json", *options]
        run = CliRunner().invoke(cli, args)
        assert run.exit_code == 0, run.output
        summary: dict[str, Any] = json.loads(run.stdout)
        return summary

    # By default: the command only; the hooks' and the recipe's events stay where they are.
    summary = replay()
    assert summary["scanned"] == 3 and summary["eventsSkipped"] == 2
    assert [r["original"]["topic"] for r in summary["records"]] == [
        kafka.topic(command_topic("create-task"))
    ]
    [replayed] = read_all(kafka, kafka.topic(command_topic("create-task")))
    assert replayed.key == b"crm-1" and replayed.value == command
    assert read_all(kafka, kafka.topic(TASKS)) == []
    assert read_all(kafka, kafka.topic(RIGHTS_REQUESTS)) == []

    # Opting in, for one component: the hooks' undelivered event goes back onto its topic.
    summary = replay("--include-events", "--component", "hooks")
    assert summary["replayed"] == 1 and summary["eventsSkipped"] == 0
    [event] = read_all(kafka, kafka.topic(TASKS))
    assert event.key == b"task-7" and event.value == task_event
    assert {k: v for k, v in event.headers.items() if not k.startswith("dastra.replay.")} == {
        name: value.encode() if isinstance(value, str) else value for name, value in task_headers
    }  # the original headers, without any dlq.* one
    assert read_all(kafka, kafka.topic(RIGHTS_REQUESTS)) == []
    assert len(read_all(kafka, kafka.topic(command_topic("create-task")))) == 1
