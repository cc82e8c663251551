"""Produce and consume on the real broker with both client libraries, and transactions."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bus.settings import KafkaSettings
from tests.kafka_helpers import consume, delete_topics, unique


def _topic(kafka: KafkaSettings, partitions: int = 3) -> str:
    name = kafka.topic(unique("rt"))
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    return name


def test_confluent_idempotent_producer_round_trip(kafka: KafkaSettings) -> None:
    topic = _topic(kafka)
    producer = Producer(kafka.confluent_config(**{"enable.idempotence": True, "acks": "all"}))
    sent = {f"k{i}": f"value-{i}".encode() for i in range(200)}
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value, headers=[("ce_id", key.encode())])
    assert producer.flush(30) == 0

    records = consume(kafka, topic, expected=200, to_end=True)

    assert len(records) == 200
    assert {r.key.decode(): r.value for r in records if r.key} == sent
    assert all(r.headers["ce_id"] == r.key for r in records)
    delete_topics(kafka, [topic])


def test_aiokafka_round_trip(kafka: KafkaSettings) -> None:
    topic = _topic(kafka)

    async def scenario() -> list[bytes]:
        producer = AIOKafkaProducer(**kafka.aiokafka_config(), enable_idempotence=True)
        await producer.start()
        try:
            for i in range(50):
                await producer.send_and_wait(topic, f"a{i}".encode(), key=b"same-key")
        finally:
            await producer.stop()
        consumer = AIOKafkaConsumer(
            topic,
            **kafka.aiokafka_config(),
            group_id=kafka.topic(unique("g")),
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            got: list[bytes] = []
            async with asyncio.timeout(30):
                while len(got) < 50:
                    batch = await consumer.getmany(timeout_ms=500)
                    for messages in batch.values():
                        got.extend(m.value for m in messages if m.value is not None)
            await consumer.commit()
            return got
        finally:
            await consumer.stop()

    got = asyncio.run(scenario())
    assert got == [f"a{i}".encode() for i in range(50)]  # one key: one partition, in order
    delete_topics(kafka, [topic])


def test_read_committed_sees_committed_transactions_only(kafka: KafkaSettings) -> None:
    topic = _topic(kafka, partitions=1)
    producer = Producer(kafka.confluent_config(**{"transactional.id": unique("tx")}))
    producer.init_transactions(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=f"committed-{i}".encode())
    producer.commit_transaction(30)
    producer.begin_transaction()
    for i in range(5):
        producer.produce(topic, value=f"aborted-{i}".encode())
    producer.flush(30)
    producer.abort_transaction(30)
    producer.begin_transaction()
    producer.produce(topic, value=b"committed-last")
    producer.commit_transaction(30)

    committed = consume(kafka, topic, expected=6, to_end=True)
    everything = consume(kafka, topic, expected=11, read_committed=False, to_end=True)

    assert [r.value for r in committed] == [
        *(f"committed-{i}".encode() for i in range(5)),
        b"committed-last",
    ]
    assert sum(1 for r in everything if r.value and r.value.startswith(b"aborted")) == 5
    delete_topics(kafka, [topic])
