"""The agents' failure paths that need a worker of their own (its own topics and settings): retries
running out under a short WORKER_RETRY_DEADLINE_S, and a dead letter that cannot be written (the
worker must crash before writing the result, so that a restart, once the cause is fixed, writes
both). Real worker processes, the session broker, the sandbox over HTTP."""

from __future__ import annotations

import os
from pathlib import Path

from confluent_kafka.admin import (
    AdminClient,
    AlterConfigOpType,
    ConfigEntry,
    ConfigResource,
    ResourceType,
)

from bus.deadletter import read_dead_letter
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, DEAD_LETTER, TopicCatalogue, command_topic
from dastra.sandbox import SandboxServer
from tests.consumers.agents_support import (
    RecordProducer,
    Tail,
    WorkerProcess,
    command_record,
    results_of,
)
from tests.kafka_helpers import read_all, unique, wait_for

_ONLY_TASKS = {"WORKER_ACTIONS": '["create-task"]'}


def _set_max_message_bytes(kafka: KafkaSettings, topic: str, value: int) -> None:
    admin = AdminClient(kafka.confluent_config())
    entry = ConfigEntry(
        "max.message.bytes", str(value), incremental_operation=AlterConfigOpType.SET
    )
    resource = ConfigResource(ResourceType.TOPIC, kafka.topic(topic), incremental_configs=[entry])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=15)


def test_persistent_503_ends_in_retries_exhausted_with_a_dead_letter(
    kafka: KafkaSettings, topics: TopicCatalogue, sandbox: SandboxServer, tmp_path: Path
) -> None:
    sandbox.admin.configure(rate_limit=False)
    sandbox.admin.inject_fault("/v1/ws/*/Tasks", method="POST", status=503)
    label = f"Never {unique()}"
    command_id = unique("exhausted")
    headers, value = command_record({"label": label}, command_id=command_id, action="create-task")
    results, dlq = Tail(kafka, COMMAND_RESULTS), Tail(kafka, DEAD_LETTER)
    producer = RecordProducer(kafka)
    worker = WorkerProcess(kafka, sandbox, tmp_path, WORKER_RETRY_DEADLINE_S="3", **_ONLY_TASKS)
    try:
        worker.start()
        producer.send(command_topic("create-task"), [(command_id.encode(), headers, value)])
        [record] = results.wait_for_keys([command_id], timeout=30)[command_id]
        [result] = results_of([record])
        assert result["status"] == "failed", result
        error = result["error"]
        assert error["kind"] == "retries-exhausted" and error["status"] == 503, error
        assert result["attempts"] >= 2  # retried, then gave up
        assert "WORKER_RETRY_DEADLINE_S=3" in error["message"]
        dlq.wait(lambda t: bool(t.records), 15, "the dead letter")
        [letter] = dlq.records
        info = read_dead_letter(list(letter.headers.items()))
        assert info.kind == "retries-exhausted" and info.component == "agents"
        assert info.attempts == result["attempts"]
        assert letter.key == command_id.encode() and letter.value == value
        assert letter.timestamp_ms <= record.timestamp_ms  # the dead letter is written first
        assert not [t for t in sandbox.admin.objects("tasks") if t["label"] == label]
        assert (
            worker.metric(
                "dastra_agent_commands_failed_total", action="create-task", kind="retries-exhausted"
            )
            == 1
        )
        assert (
            worker.metric(
                "dastra_agent_commands_retried_total", action="create-task", kind="server_error"
            )
            == result["attempts"] - 1
        )
    finally:
        assert worker.stop() == 0, worker.log_tail()
        producer.close()
        results.close()
        dlq.close()


def test_a_dead_letter_that_cannot_be_written_leaves_no_result_and_is_written_after_a_fix(
    kafka: KafkaSettings, topics: TopicCatalogue, sandbox: SandboxServer, tmp_path: Path
) -> None:
    # The dead-letter topic refuses the record (its value is the original bytes, 3 000 of them);
    # the result, without those bytes, would fit.
    _set_max_message_bytes(kafka, DEAD_LETTER, 2048)
    # Random bytes: the batch is compressed (gzip), so a repeated byte would fit in 2 048.
    bad = b"{not json " + os.urandom(3000)
    topic = kafka.topic(command_topic("create-task"))
    command_id = f"{topic}/0/0"  # plain record: its id is its position on the fresh topic
    producer = RecordProducer(kafka)
    producer.send(command_topic("create-task"), [(b"too-big", [], bad)], partition=0)
    producer.close()

    worker = WorkerProcess(kafka, sandbox, tmp_path, name="first", **_ONLY_TASKS)
    try:
        worker.start(wait=False)  # it may crash before /ready is ever asked
        wait_for(lambda: worker.returncode() is not None, 60, "the worker to crash")
        assert worker.returncode() != 0, worker.log_tail()
    finally:
        worker.stop()
    assert read_all(kafka, kafka.topic(COMMAND_RESULTS)) == []  # no result without dead letter
    assert read_all(kafka, kafka.topic(DEAD_LETTER)) == []

    _set_max_message_bytes(kafka, DEAD_LETTER, 1_048_588)  # the cause is fixed
    results = Tail(kafka, COMMAND_RESULTS)
    restarted = WorkerProcess(kafka, sandbox, tmp_path, name="second", **_ONLY_TASKS)
    try:
        restarted.start()
        [record] = results.wait_for_keys([command_id], timeout=30)[command_id]
        assert results_of([record])[0]["error"]["kind"] == "not-json"
        [letter] = read_all(kafka, kafka.topic(DEAD_LETTER))
        assert letter.value == bad and letter.key == b"too-big"
        assert read_dead_letter(list(letter.headers.items())).kind == "not-json"
        results.poll(1.0)
        assert len(results.records) == 1
    finally:
        assert restarted.stop() == 0, restarted.log_tail()
        results.close()
