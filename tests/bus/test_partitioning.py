"""Every producer of the project places a key where Kafka's own partitioner (murmur2) does, and
writes batches every client reads: keyed records from the webhook's librdkafka producer and
from the agents' and recipes' aiokafka producer land on one partition per key."""

from __future__ import annotations

import asyncio
import hashlib

from aiokafka import AIOKafkaProducer
from confluent_kafka import murmur2
from confluent_kafka.admin import AdminClient, NewTopic

from bus.producer import AsyncProducer
from bus.settings import KafkaSettings
from tests.kafka_helpers import consume, delete_topics, unique

PARTITIONS = 6


def _actor_keys(count: int) -> list[bytes]:
    return [
        f"actor:{hashlib.sha256(f'email:person{i}@example.org'.encode()).hexdigest()}".encode()
        for i in range(count)
    ]


def test_both_client_stacks_place_each_key_on_its_murmur2_partition(kafka: KafkaSettings) -> None:
    topic = kafka.topic(unique("part"))
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(topic, PARTITIONS, 1)])[topic].result(timeout=30)
    keys = _actor_keys(200)

    async def produce_both() -> None:
        async with AsyncProducer(kafka, timeout_s=30) as librdkafka:
            for key in keys:
                await librdkafka.produce(topic, key=key, value=b"librdkafka")
        aiokafka = AIOKafkaProducer(**kafka.aiokafka_producer_config(), acks="all")
        await aiokafka.start()
        try:
            for key in keys:
                await aiokafka.send_and_wait(topic, b"aiokafka", key=key)
        finally:
            await aiokafka.stop()

    asyncio.run(produce_both())
    records = consume(kafka, topic, expected=2 * len(keys), to_end=True)

    placed: dict[bytes, set[int]] = {}
    for record in records:
        assert record.key is not None
        placed.setdefault(record.key, set()).add(record.partition)
    assert len(records) == 2 * len(keys)
    # Java's DefaultPartitioner: toPositive(murmur2(key)) % partitions.
    assert placed == {key: {murmur2(key, PARTITIONS)} for key in keys}
    assert len({partition for (partition,) in placed.values()}) == PARTITIONS
    delete_topics(kafka, [topic])


def test_the_project_writes_gzip_by_default_and_any_configured_codec(kafka: KafkaSettings) -> None:
    assert kafka.compression_type == "gzip"
    assert kafka.producer_config()["compression.type"] == "gzip"
    assert kafka.producer_config()["partitioner"] == "murmur2_random"
    assert kafka.aiokafka_producer_config()["compression_type"] == "gzip"
    plain = kafka.model_copy(update={"compression_type": "none"})
    assert plain.aiokafka_producer_config()["compression_type"] is None
    assert plain.producer_config()["compression.type"] == "none"
