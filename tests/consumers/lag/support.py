"""Helpers for the lag monitor's tests: uuid topics on the session broker, records with known
timestamps, offsets committed for a group as a real consumer would, and a clock tests move."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, NewTopic

from bus.admin import apply, plan
from bus.settings import KafkaSettings
from bus.topics import LAG_WINDOW, TopicCatalogue
from consumers.lag.settings import LagSettings
from tests.kafka_helpers import delete_topics, unique, wait_for

__all__ = [
    "FakeClock",
    "commit",
    "committed_by_kafka",
    "fast_lag_settings",
    "live_member",
    "produce",
    "topic",
    "watermarks",
    "window_topic",
]


class FakeClock:
    """The monitor's clock, moved by the test: no waiting for windows to pass."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def fast_lag_settings(**overrides: object) -> LagSettings:
    """A 60 s window, a sample every 10 s, judged after 3 samples; no persistence unless asked."""
    values: dict[str, object] = {
        "window_s": 60.0,
        "sample_interval_s": 10.0,
        "min_samples": 3,
        "persist_window": False,
        "timeout_s": 10.0,
    }
    values.update(overrides)
    return LagSettings(**values)  # type: ignore[arg-type]


@contextmanager
def topic(kafka: KafkaSettings, partitions: int, name: str | None = None) -> Iterator[str]:
    """A fresh topic under the test's prefix, deleted afterwards."""
    physical = kafka.topic(name or unique("lagt"))
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(physical, partitions, 1)])[physical].result(timeout=30)
    wait_for(
        lambda: (
            physical in admin.list_topics(timeout=10).topics
            and len(admin.list_topics(timeout=10).topics[physical].partitions) == partitions
        ),
        10,
        f"topic {physical} visible",
    )
    try:
        yield physical
    finally:
        delete_topics(kafka, [physical])


@contextmanager
def window_topic(kafka: KafkaSettings, catalogue: TopicCatalogue) -> Iterator[str]:
    """`dastra.lag-window.v1` under the test's prefix, exactly as topics.yaml declares it."""
    only = catalogue.model_copy(update={"topics": (catalogue[LAG_WINDOW],)})
    admin = AdminClient(kafka.confluent_config())
    apply(admin, plan(admin, only, prefix=kafka.topic_prefix))
    try:
        yield kafka.topic(LAG_WINDOW)
    finally:
        delete_topics(kafka, [kafka.topic(LAG_WINDOW)])


def produce(
    kafka: KafkaSettings,
    topic_name: str,
    partition: int,
    count: int,
    timestamps_ms: Sequence[int] | None = None,
) -> None:
    """`count` records on one partition, with the given timestamps (CreateTime) if any."""
    producer = Producer(kafka.confluent_config(**{"linger.ms": 5}))
    for i in range(count):
        if timestamps_ms is not None:
            producer.produce(
                topic_name, value=b"{}", partition=partition, timestamp=timestamps_ms[i]
            )
        else:
            producer.produce(topic_name, value=b"{}", partition=partition)
    assert producer.flush(30) == 0


def commit(kafka: KafkaSettings, group: str, offsets: Mapping[tuple[str, int], int]) -> None:
    """Commit offsets for `group` as a consumer outside the group's membership does (the group
    must have no live members, as for an offset reset)."""
    consumer = Consumer(kafka.confluent_config(**{"group.id": group, "enable.auto.commit": False}))
    partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items()]

    def committed() -> bool:
        try:
            consumer.commit(offsets=partitions, asynchronous=False)
        except KafkaException as exc:
            # A fresh cluster's first group: the offsets topic's coordinator is still being
            # elected or loaded (NOT_COORDINATOR on Kafka 3.9), which librdkafka returns to a
            # synchronous commit instead of retrying it.
            if exc.args[0].code() in _COORDINATOR_MOVING:
                return False
            raise
        return True

    try:
        wait_for(committed, 30, f"the coordinator of group {group} to take a commit", every=0.2)
    finally:
        consumer.close()


_COORDINATOR_MOVING = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


@contextmanager
def live_member(kafka: KafkaSettings, group: str, topic_name: str) -> Iterator[Consumer]:
    """A real subscribed member of `group` that owns every partition of `topic_name` and does
    nothing until the test commits through it."""
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 10_000,
            }
        )
    )
    consumer.subscribe([topic_name])
    try:
        deadline = time.monotonic() + 30
        while not consumer.assignment():
            consumer.poll(0.1)
            assert time.monotonic() < deadline, f"{group} got no assignment"
        yield consumer
    finally:
        consumer.close()


def committed_by_kafka(kafka: KafkaSettings, group: str) -> dict[tuple[str, int], int]:
    """The committed offsets as Kafka's AdminClient reports them."""
    admin = AdminClient(kafka.confluent_config())
    result = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {
        (tp.topic, tp.partition): tp.offset
        for tp in result.result(timeout=10).topic_partitions
        if tp.offset >= 0
    }


def watermarks(kafka: KafkaSettings, topic_name: str, partition: int) -> tuple[int, int]:
    """(low, high) as a consumer's get_watermark_offsets reports them."""
    consumer = Consumer(kafka.confluent_config(**{"group.id": unique("wm")}))
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic_name, partition), timeout=10
        )
        return int(low), int(high)
    finally:
        consumer.close()
