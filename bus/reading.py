"""Read a slice of a topic up to its current end: the one way state topics are loaded, and the
one way any role reads "the records since T" or "the last N records of each partition".

Consumes a topic (every partition, from the first offset, from a timestamp, or its last N
records; or the one record at a partition and offset) with a throw-away consumer that never
joins a group nor commits. Produces its records in order, or, for compacted state topics, the
latest value per key. Under `read_committed` the end is the log end as it was when the read
began, not the last stable offset: a transaction some other process still has open (it may be
hiding our own, later, committed records) is waited for until it commits or aborts, up to the
deadline, instead of silently reading a stale state.

    latest = read_latest(kafka, kafka.topic(POLLER_STATE), timeout=90)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import TopicMetadata

from bus.envelope import header_pairs
from bus.errors import KafkaAuthorizationError, TopicMissingError
from bus.settings import KafkaSettings

__all__ = [
    "READER_GROUP_PREFIX",
    "StateRecord",
    "end_offsets",
    "read_latest",
    "read_record",
    "read_to_end",
    "reader_group_id",
]

# Every consumer of ours that only assigns partitions (never joins its group, never commits)
# takes a group id under KAFKA_TOPIC_PREFIX + this: librdkafka still asks for the group's
# coordinator, so on a cluster with ACLs one PREFIXED group rule (DESCRIBE) covers them all
# (dastra_kafka/acls.py).
READER_GROUP_PREFIX = "dastra-reader-"


def reader_group_id(kafka: KafkaSettings, purpose: str) -> str:
    """A fresh group id for an assign-only consumer: `<prefix>dastra-reader-<purpose>-<uuid>`."""
    return kafka.topic(f"{READER_GROUP_PREFIX}{purpose}-{uuid.uuid4().hex}")


_TRANSIENT = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
    }
)


@dataclass(frozen=True)
class StateRecord:
    """One record as read from the topic."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    timestamp_ms: int


def _reader(kafka: KafkaSettings, group: str, *, read_committed: bool) -> Consumer:
    """A consumer that reads by assignment: `group` is never joined, nothing is committed."""
    return Consumer(
        kafka.confluent_config(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed" if read_committed else "read_uncommitted",
                "fetch.wait.max.ms": 10,
            }
        )
    )


def _topic_info(consumer: Consumer, topic: str, timeout: float) -> TopicMetadata:
    """The topic's metadata. Raises `KafkaAuthorizationError` or `TopicMissingError`."""
    info: TopicMetadata | None = consumer.list_topics(topic, timeout=min(timeout, 15)).topics.get(
        topic
    )
    if info is not None and (denied := KafkaAuthorizationError.from_error(info.error, topic=topic)):
        raise denied
    if info is None or info.error is not None:
        raise TopicMissingError(topic)
    return info


def read_to_end(
    kafka: KafkaSettings,
    topic: str,
    *,
    timeout: float = 60.0,
    read_committed: bool = True,
    keep: Callable[[bytes | None], bool] | None = None,
    since_ms: int | None = None,
    last: int | None = None,
) -> Iterator[StateRecord]:
    """Every record of `topic` up to the log end of each partition when the call began: from
    the first offset, or from the first record stamped at or after `since_ms`, or the `last`
    records of each partition.

    `keep(key)` filters records before they are decoded further. Raises `TopicMissingError`,
    or `KafkaException` (`_TIMED_OUT`) when the end is not reached within `timeout` seconds.
    Stop iterating at any time: the consumer is closed.
    """
    group = reader_group_id(kafka, "read")
    consumer = _reader(kafka, group, read_committed=read_committed)
    try:
        info = _topic_info(consumer, topic, timeout)
        deadline = time.monotonic() + timeout
        ends = end_offsets(kafka, topic, list(info.partitions), min(timeout, 15))
        starts = {p: OFFSET_BEGINNING for p in ends}
        if last is not None:
            # Below the log start, auto.offset.reset (earliest) moves to it.
            starts = {p: max(0, end - last) for p, end in ends.items()}
        if since_ms is not None and ends:
            found = consumer.offsets_for_times(
                [TopicPartition(topic, p, since_ms) for p in ends], timeout=min(timeout, 15)
            )
            starts = {tp.partition: tp.offset for tp in found if tp.offset >= 0}
            ends = {p: end for p, end in ends.items() if p in starts}
        consumer.assign([TopicPartition(topic, p, starts[p]) for p in ends])
        while ends:
            if time.monotonic() > deadline:
                raise KafkaException(
                    KafkaError(
                        KafkaError._TIMED_OUT,
                        f"{topic}: partitions {sorted(ends)} not read to their end within "
                        f"{timeout:.0f} s (an open transaction?)",
                    )
                )
            for message in consumer.consume(500, 0.1):
                error = message.error()
                if error is not None:
                    if denied := KafkaAuthorizationError.from_error(
                        error, topic=topic, group=group
                    ):
                        raise denied
                    if error.code() != KafkaError._PARTITION_EOF:
                        raise KafkaException(error)
                    continue
                partition = int(message.partition() or 0)
                key = message.key()
                if keep is None or keep(key):
                    yield StateRecord(
                        partition=partition,
                        offset=int(message.offset() or 0),
                        key=key,
                        value=message.value(),
                        headers=header_pairs(message.headers()),
                        timestamp_ms=message.timestamp()[1],
                    )
            # Under read_committed, transaction markers and aborted records are skipped without
            # being returned: the position, not the last record seen, says how far we are.
            for position in consumer.position([TopicPartition(topic, p) for p in list(ends)]):
                if position.offset >= ends[position.partition]:
                    ends.pop(position.partition, None)
    finally:
        consumer.close()


def end_offsets(
    kafka: KafkaSettings, topic: str, partitions: list[int], timeout: float
) -> dict[int, int]:
    """The log end of each non-empty partition of `topic`, asked by a read_uncommitted
    consumer: under read_committed the broker answers the last stable offset, which stops
    short of records an open transaction holds back."""
    probe = Consumer(
        kafka.confluent_config(
            **{
                "group.id": reader_group_id(kafka, "ends"),
                "enable.auto.commit": False,
                "isolation.level": "read_uncommitted",  # librdkafka's default is read_committed
            }
        )
    )
    deadline = time.monotonic() + timeout
    try:
        ends = {}
        for partition in partitions:
            while True:
                try:
                    low, high = probe.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=timeout, cached=False
                    )
                    break
                except KafkaException as exc:
                    # Right after a topic is created, or while leadership moves, the broker
                    # answers "not leader" for a moment.
                    error = exc.args[0]
                    if denied := KafkaAuthorizationError.from_error(error, topic=topic):
                        raise denied from exc
                    transient = error.retriable() or error.code() in _TRANSIENT
                    if not transient or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            if high > low:
                ends[partition] = high
        return ends
    finally:
        probe.close()


def read_latest(
    kafka: KafkaSettings,
    topic: str,
    *,
    timeout: float = 60.0,
    keep: Callable[[bytes | None], bool] | None = None,
) -> dict[bytes, bytes]:
    """The latest committed value per key of a compacted topic (tombstones remove keys)."""
    latest: dict[bytes, bytes] = {}
    for record in read_to_end(kafka, topic, timeout=timeout, keep=keep):
        if record.key is None:
            continue
        if record.value is None:
            latest.pop(record.key, None)
        else:
            latest[record.key] = record.value
    return latest


def read_record(
    kafka: KafkaSettings, topic: str, partition: int, offset: int, *, timeout: float = 15.0
) -> StateRecord | None:
    """The record at `offset` of `partition` (read_uncommitted), or None when it is no longer
    (or not yet) on the topic. Raises `TopicMissingError`, or `KafkaException` when the broker
    does not answer within `timeout` seconds."""
    consumer = _reader(kafka, reader_group_id(kafka, "record"), read_committed=False)
    try:
        info = _topic_info(consumer, topic, timeout)
        if partition not in info.partitions:
            return None
        low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, partition), timeout=min(timeout, 15), cached=False
        )
        if not low <= offset < high:
            return None
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    return None
                raise KafkaException(error)
            if message.offset() != offset:  # compacted away, or below the log start by now
                return None
            return StateRecord(
                partition=partition,
                offset=offset,
                key=message.key(),
                value=message.value(),
                headers=header_pairs(message.headers()),
                timestamp_ms=message.timestamp()[1],
            )
        raise KafkaException(
            KafkaError(KafkaError._TIMED_OUT, f"{topic}/{partition}@{offset} not read in time")
        )
    finally:
        consumer.close()
