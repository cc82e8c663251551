"""Test helpers for a real broker: uuid names, topic set-up and clean-up, reads with a deadline."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition
from confluent_kafka.admin import AdminClient

from bus.admin import apply, plan
from bus.reading import read_to_end
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue

__all__ = [
    "Record",
    "consume",
    "create_catalogue_topics",
    "delete_topics",
    "read_all",
    "unique",
    "wait_for",
]


def unique(prefix: str = "t") -> str:
    """A name no other test uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.05) -> None:
    """Poll `condition` until true; fail with `what` when `timeout` seconds pass first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(every)
    if condition():
        return
    raise AssertionError(f"timed out after {timeout:.1f} s waiting for {what}")


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]
    timestamp_ms: int

    @classmethod
    def of(cls, message: Message) -> Record:
        return cls(
            topic=message.topic(),
            partition=message.partition(),
            offset=message.offset(),
            key=message.key(),
            value=message.value(),
            headers={k: v for k, v in (message.headers() or []) if v is not None},
            timestamp_ms=message.timestamp()[1],
        )


def consume(
    kafka: KafkaSettings,
    topic: str,
    *,
    expected: int,
    timeout: float = 30.0,
    read_committed: bool = True,
    to_end: bool = False,
) -> list[Record]:
    """Read `topic` from the beginning until `expected` records arrived (or fail at `timeout`).

    With `to_end`, keep reading after that up to the end offsets every partition had once
    `expected` arrived (under read_committed: once their open transactions ended), so an extra
    (duplicate) record already written is seen too: an exact condition, not a time window.
    """
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": unique("g"),
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
            }
        )
    )
    try:
        metadata = consumer.list_topics(topic, timeout=10)
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        records: list[Record] = []
        deadline = time.monotonic() + timeout
        ends: dict[int, int] | None = None
        reached: dict[int, int] = {}  # partition -> offset of its latest end-of-partition event
        while time.monotonic() < deadline:
            if len(records) >= expected:
                if not to_end:
                    break
                if ends is None:
                    ends = {
                        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                        for p in partitions
                    }
                if all(reached.get(p, -1) >= end for p, end in ends.items()):
                    break
            message = consumer.poll(0.2)
            if message is None:
                continue
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    reached[message.partition()] = message.offset()
                    continue
                raise AssertionError(f"consumer error: {message.error()}")
            records.append(Record.of(message))
        if len(records) < expected:
            raise AssertionError(
                f"expected {expected} records on {topic}, got {len(records)} within {timeout} s"
            )
        if to_end and (ends is None or any(reached.get(p, -1) < end for p, end in ends.items())):
            raise AssertionError(f"{topic} not read to its end offsets {ends} within {timeout} s")
        return records
    finally:
        consumer.close()


def read_all(
    kafka: KafkaSettings, topic: str, *, timeout: float = 30.0, read_committed: bool = True
) -> list[Record]:
    """Every record on `topic` right now (up to each partition's log end; under
    read_committed, waiting for transactions still open to end)."""
    return [
        Record(
            topic=topic,
            partition=r.partition,
            offset=r.offset,
            key=r.key,
            value=r.value,
            headers=dict(r.headers),
            timestamp_ms=r.timestamp_ms,
        )
        for r in read_to_end(kafka, topic, timeout=timeout, read_committed=read_committed)
    ]


def create_catalogue_topics(kafka: KafkaSettings, catalogue: TopicCatalogue) -> list[str]:
    """Create every catalogue topic under `kafka.topic_prefix`; return the physical names."""
    admin = AdminClient(kafka.confluent_config())
    apply(admin, plan(admin, catalogue, prefix=kafka.topic_prefix))
    return [kafka.topic(spec.name) for spec in catalogue]


def delete_topics(kafka: KafkaSettings, names: list[str]) -> None:
    admin = AdminClient(kafka.confluent_config())
    existing = set(admin.list_topics(timeout=10).topics)
    doomed = [name for name in names if name in existing]
    if doomed:
        for future in admin.delete_topics(doomed, request_timeout=30).values():
            future.result(timeout=30)
