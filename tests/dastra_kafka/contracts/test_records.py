"""Records really on the topics conform to the committed contracts: keys, values and headers.

The poller runs a real cycle against the sandbox. Results and dead letters go through the same
encoding functions the agents use (`CommandResult`, `new_event`/`encode_binary`,
`dead_letter`); hook subscriptions through `HookSubscription`; the lag window through
`KafkaWindowStore`. Each record is produced to the broker and read back before it is checked.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from confluent_kafka import Producer

from bus.deadletter import ErrorKind, OriginalRecord, dead_letter
from bus.envelope import dumps, encode_binary, new_event
from bus.records.commands import RESULT_FAILED, CommandError, CommandResult
from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings
from bus.topics import (
    COMMAND_RESULTS,
    DEAD_LETTER,
    HOOK_SUBSCRIPTIONS,
    LAG_WINDOW,
    POLLER_STATE,
    POLLER_TRIGGERS,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
    command_topic,
)
from consumers.lag import KafkaWindowStore, LagWindow, Sample, Status
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.settings import DastraSettings
from dastra_kafka.contracts.registry import validate_record
from producers.poller import Poller, trigger_record
from producers.poller.settings import PollerSettings
from tests.kafka_helpers import Record, consume, read_all


def _check(catalogue: TopicCatalogue, topic: str, records: list[Record]) -> None:
    assert records, f"no records on {topic}"
    for record in records:
        problems = validate_record(catalogue, topic, record.key, record.value, record.headers)
        assert problems == [], (topic, record.offset, problems)


def test_records_the_poller_produced_conform(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    request = admin.create_rights_request(
        title="Access request", email="jeanne@example.org", purposes=["Access", "Erasure"]
    )
    admin.create_task(label="Send the report", priority="High", deadline="2026-03-20T17:00:00Z")
    task = admin.create_task(label="Call back")

    async def one_cycle() -> None:
        settings = PollerSettings(interval_min_s=0.05, interval_max_s=0.2)
        async with DastraClient(dastra_settings) as client:
            poller = Poller(kafka, settings, topics, client, workspaces=[ws], start="beginning")
            await poller.run(max_cycles=1)

    asyncio.run(one_cycle())  # creations
    admin.update_rights_request(request["id"], state="Processing")
    admin.update_task(task["id"], state="Active")
    asyncio.run(one_cycle())  # updates, from the restored cursor

    events = read_all(kafka, kafka.topic(RIGHTS_REQUESTS)) + read_all(kafka, kafka.topic(TASKS))
    types = {record.headers["ce_type"].decode() for record in events}
    assert {"eu.dastra.rights_request.created", "eu.dastra.task.updated"} <= types
    _check(topics, RIGHTS_REQUESTS, read_all(kafka, kafka.topic(RIGHTS_REQUESTS)))
    _check(topics, TASKS, read_all(kafka, kafka.topic(TASKS)))
    _check(topics, POLLER_STATE, read_all(kafka, kafka.topic(POLLER_STATE)))

    producer = Producer(kafka.confluent_config())
    key, value = trigger_record(ws, "DataSubjectCreation")
    producer.produce(kafka.topic(POLLER_TRIGGERS), key=key, value=value)
    assert producer.flush(10) == 0
    _check(topics, POLLER_TRIGGERS, consume(kafka, kafka.topic(POLLER_TRIGGERS), expected=1))


def test_results_dead_letters_subscriptions_and_lag_window_conform(
    kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    producer = Producer(kafka.confluent_config(**{"enable.idempotence": True}))

    # A command that is not valid: dead-lettered with its bytes and headers, and a failed result.
    headers, value = encode_binary(
        new_event(
            type="eu.dastra.command.create-task",
            source="urn:acme:crm",
            id="cmd-1",
            data={"priority": "High"},
        )
    )
    original = OriginalRecord(
        topic=command_topic("create-task"),
        partition=0,
        offset=42,
        key=b"crm-1",
        value=value,
        headers=headers,
    )
    dlq_key, dlq_value, dlq_headers = dead_letter(
        original,
        kind=ErrorKind.INVALID_COMMAND,
        message="label: Field required",
        component="agents",
    )
    producer.produce(kafka.topic(DEAD_LETTER), key=dlq_key, value=dlq_value, headers=dlq_headers)
    not_json = OriginalRecord(original.topic, 1, 7, None, b"\xff\xfe", [])
    dlq_key, dlq_value, dlq_headers = dead_letter(
        not_json, kind=ErrorKind.NOT_JSON, message="not UTF-8", component="agents"
    )
    producer.produce(kafka.topic(DEAD_LETTER), key=dlq_key, value=dlq_value, headers=dlq_headers)

    now = datetime.now(UTC)
    result = CommandResult(
        command_id="cmd-1",
        action="create-task",
        status="failed",
        workspace_id=101,
        error=CommandError(kind=ErrorKind.INVALID_COMMAND, message="label: Field required"),
        attempts=1,
        received_at=now,
        completed_at=now,
        source_topic=original.topic,
        source_partition=0,
        source_offset=42,
    )
    result_headers, result_value = encode_binary(
        new_event(
            type=RESULT_FAILED,
            source="dastra-kafka/agents",
            id="result:cmd-1",
            subject="cmd-1",
            data=result.model_dump(mode="json"),
        )
    )
    producer.produce(
        kafka.topic(COMMAND_RESULTS), key=b"cmd-1", value=result_value, headers=result_headers
    )

    subscription = HookSubscription.new(
        event="rights_request.created", target_url="https://hooks.example.org/1", workspace_id=101
    )
    producer.produce(
        kafka.topic(HOOK_SUBSCRIPTIONS),
        key=subscription.id.encode(),
        value=subscription.model_dump_json().encode(),
    )
    producer.produce(kafka.topic(HOOK_SUBSCRIPTIONS), key=subscription.id.encode(), value=None)
    assert producer.flush(10) == 0

    window = LagWindow(window_s=600, sample_interval_s=1)
    window.record(("dastra-agents", "dastra.commands.create-task.v1", 0), Sample(1000.0, 5, 9))
    window.record(("dastra-agents", "dastra.commands.create-task.v1", 1), Sample(1000.0, 2, 2))
    window.set_status("dastra-agents", Status.STALL, 1000.0)
    store = KafkaWindowStore(kafka)
    store.save(window.dirty_records())
    store.close()

    _check(topics, DEAD_LETTER, consume(kafka, kafka.topic(DEAD_LETTER), expected=2))
    _check(topics, COMMAND_RESULTS, consume(kafka, kafka.topic(COMMAND_RESULTS), expected=1))
    subscriptions = consume(kafka, kafka.topic(HOOK_SUBSCRIPTIONS), expected=2)
    assert subscriptions[1].value is None  # the tombstone
    _check(topics, HOOK_SUBSCRIPTIONS, subscriptions)
    _check(topics, LAG_WINDOW, consume(kafka, kafka.topic(LAG_WINDOW), expected=2))

    # And what does not conform is caught: a result without its CloudEvents headers.
    producer.produce(kafka.topic(COMMAND_RESULTS), key=b"cmd-2", value=dumps({"x": 1}))
    assert producer.flush(10) == 0
    results = consume(kafka, kafka.topic(COMMAND_RESULTS), expected=2)
    last = next(r for r in results if r.key == b"cmd-2")  # partitions interleave in any order
    problems = validate_record(topics, COMMAND_RESULTS, last.key, last.value, last.headers)
    assert "headers: 'ce_id' is a required property" in problems
    assert "value: 'command_id' is a required property" in problems
