"""bus.reading on the real broker: the one topic-slice reader, from the beginning, from a
timestamp, the last N records of each partition, and an early stop."""

from __future__ import annotations

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bus.errors import TopicMissingError
from bus.reading import read_to_end
from bus.settings import KafkaSettings
from tests.kafka_helpers import delete_topics, unique


def _topic_with_records(kafka: KafkaSettings) -> str:
    """Two partitions; partition p holds records p-0 .. p-9 stamped 1000 + 10*i ms."""
    name = kafka.topic(unique("read"))
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(name, 2, 1)])[name].result(timeout=30)
    producer = Producer(kafka.confluent_config(**{"enable.idempotence": True}))
    for partition in (0, 1):
        for i in range(10):
            producer.produce(
                name,
                key=f"{partition}-{i}".encode(),
                value=b"v",
                partition=partition,
                timestamp=1000 + 10 * i,
            )
    assert producer.flush(30) == 0
    return name


def _keys(records: object) -> list[str]:
    return sorted(r.key.decode() for r in records)  # type: ignore[attr-defined]


def test_slices_of_a_topic(kafka: KafkaSettings) -> None:
    topic = _topic_with_records(kafka)
    try:
        everything = list(read_to_end(kafka, topic, timeout=30))
        assert _keys(everything) == sorted(f"{p}-{i}" for p in (0, 1) for i in range(10))
        # From a timestamp: the records stamped at or after it, in every partition.
        since = list(read_to_end(kafka, topic, timeout=30, since_ms=1070))
        assert _keys(since) == sorted(f"{p}-{i}" for p in (0, 1) for i in (7, 8, 9))
        # After the newest record: nothing, and no wait.
        assert list(read_to_end(kafka, topic, timeout=30, since_ms=5000)) == []
        # The last N of each partition; more than a partition holds is all of it.
        assert _keys(read_to_end(kafka, topic, timeout=30, last=2)) == ["0-8", "0-9", "1-8", "1-9"]
        assert len(list(read_to_end(kafka, topic, timeout=30, last=50))) == 20
        # `keep` filters by key; stopping early closes the reader.
        kept = read_to_end(kafka, topic, timeout=30, keep=lambda key: key == b"1-3")
        assert [r.key for r in kept] == [b"1-3"]
        for _record in read_to_end(kafka, topic, timeout=30):
            break
    finally:
        delete_topics(kafka, [topic])


def test_a_missing_topic_is_said_so(kafka: KafkaSettings) -> None:
    with pytest.raises(TopicMissingError):
        list(read_to_end(kafka, kafka.topic(unique("absent")), timeout=10))
