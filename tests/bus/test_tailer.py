"""bus.tailer on real brokers: every record applied once and in order, a consumer that stopped
fetching replaced where it was, and broker restarts on the data directory survived."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Literal

from confluent_kafka import Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bus.localkafka import LocalKafka
from bus.producer import AsyncProducer
from bus.settings import KafkaSettings
from bus.tailer import TopicTailer
from tests.kafka_helpers import delete_topics, unique, wait_for


class _Applied:
    """The offsets a tailer applied, per partition (from its thread)."""

    def __init__(self) -> None:
        self.offsets: dict[int, list[int]] = defaultdict(list)
        self._lock = threading.Lock()

    def __call__(self, message: Message) -> None:
        with self._lock:
            self.offsets[message.partition() or 0].append(message.offset() or 0)

    def snapshot(self) -> dict[int, list[int]]:
        with self._lock:
            return {p: list(o) for p, o in self.offsets.items()}


def _topic(kafka: KafkaSettings, partitions: int) -> str:
    name = kafka.topic(unique("tail"))
    admin = AdminClient(kafka.confluent_config())
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=30)
    return name


def _produce(kafka: KafkaSettings, topic: str, per_partition: int, partitions: int) -> None:
    producer = Producer(kafka.confluent_config(**{"enable.idempotence": True}))
    for partition in range(partitions):
        for i in range(per_partition):
            producer.produce(topic, value=f"{partition}-{i}".encode(), partition=partition)
    assert producer.flush(30) == 0


def _stalling_tailer(
    kafka: KafkaSettings, partitions: int, after: int, start: Literal["beginning", "end"]
) -> tuple[str, _Applied, TopicTailer]:
    """A new topic and a tailer of it (stall_s 1 s) whose consumer, once `after` records were
    applied, is paused from the tailer's own thread: a paused consumer fetches nothing, as a
    stuck one."""
    topic = _topic(kafka, partitions)
    applied = _Applied()
    paused: list[object] = []

    def apply(message: Message) -> None:
        applied(message)
        if not paused and sum(map(len, applied.snapshot().values())) >= after:
            consumer = tailer._live
            assert consumer is not None
            consumer.pause(consumer.assignment())
            paused.append(consumer)

    tailer = TopicTailer(kafka, topic, apply, start=start, name=unique("stall"), stall_s=1.0)
    return topic, applied, tailer


def test_a_consumer_that_stopped_fetching_is_replaced_where_it_was(
    kafka: KafkaSettings,
) -> None:
    """librdkafka #5153: after a broker restart an assigned consumer may fetch nothing more.
    Simulated by pausing the tailer's consumer: it is replaced at the tailer's own positions,
    and every record is applied once, in order."""
    topic, applied, tailer = _stalling_tailer(kafka, 2, after=10, start="beginning")
    try:
        _produce(kafka, topic, 5, 2)
        tailer.start(timeout=30)
        assert applied.snapshot() == {0: [0, 1, 2, 3, 4], 1: [0, 1, 2, 3, 4]}
        assert tailer.renewals == 0
        _produce(kafka, topic, 5, 2)
        wait_for(
            lambda: all(len(o) == 10 for o in applied.snapshot().values()),
            30,
            "every record written after the stall applied",
        )
        assert applied.snapshot() == {0: list(range(10)), 1: list(range(10))}
        assert tailer.renewals >= 1
    finally:
        tailer.stop()
        delete_topics(kafka, [topic])


def test_a_waiter_for_an_acknowledged_record_makes_a_stuck_consumer_replaced(
    kafka: KafkaSettings,
) -> None:
    """`reached()` for a record the broker acknowledged is answered although the consumer that
    should have read it stopped fetching (after the first record here)."""
    topic, applied, tailer = _stalling_tailer(kafka, 1, after=1, start="end")

    async def scenario() -> list[bool]:
        async with AsyncProducer(kafka, timeout_s=10) as producer:
            answers = []
            for _ in range(3):
                delivered = await producer.produce(topic, key=b"k", value=b"v")
                answers.append(await tailer.reached(delivered.partition, delivered.offset, 30))
            return answers

    try:
        tailer.start(timeout=30)
        assert asyncio.run(scenario()) == [True, True, True]
        assert applied.snapshot() == {0: [0, 1, 2]}
        assert tailer.renewals >= 1
    finally:
        tailer.stop()
        delete_topics(kafka, [topic])


def test_broker_restarts_lose_no_record_and_apply_none_twice(tmp_path: Path) -> None:
    """A tailer follows a topic while the broker restarts twice on its data directory and
    records keep being written: each acknowledged record is applied exactly once, in order,
    and `reached()` answers for every one of them."""
    with LocalKafka(data_dir=tmp_path / "kafka", quick_jit=True) as broker:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        topic = _topic(kafka, 3)
        applied = _Applied()
        tailer = TopicTailer(kafka, topic, applied, start="beginning", name="restarts")
        tailer.start(timeout=30)
        acknowledged: dict[int, list[int]] = defaultdict(list)
        unanswered: list[tuple[int, int]] = []

        async def traffic(stop: asyncio.Event) -> None:
            async with AsyncProducer(kafka, timeout_s=10) as producer:
                n = 0
                while not stop.is_set():
                    try:
                        delivered = await producer.produce(topic, key=str(n).encode(), value=b"v")
                    except Exception:  # the broker is away: the next one is tried
                        await asyncio.sleep(0.1)
                        continue
                    n += 1
                    acknowledged[delivered.partition].append(delivered.offset)
                    if not await tailer.reached(delivered.partition, delivered.offset, 60):
                        unanswered.append((delivered.partition, delivered.offset))

        async def scenario() -> None:
            stop = asyncio.Event()
            task = asyncio.create_task(traffic(stop))
            for _restart in range(2):
                await _until(lambda: sum(map(len, acknowledged.values())) >= 30, 60)
                before = sum(map(len, acknowledged.values()))
                await asyncio.to_thread(broker.stop)
                await asyncio.to_thread(broker.start)
                # Written and read back after the restart:
                await _until(lambda b=before: sum(map(len, acknowledged.values())) > b + 30, 90)
            stop.set()
            await task

        try:
            asyncio.run(scenario())
            wait_for(
                # Every acknowledged record read (one that timed out in the restart may have
                # been written too: read, never acknowledged).
                lambda: all(
                    set(offsets) <= set(applied.snapshot().get(partition, []))
                    for partition, offsets in acknowledged.items()
                ),
                60,
                "the tailer did not read every acknowledged record",
            )
            assert not unanswered
            for partition, offsets in applied.snapshot().items():
                # Once each, in order, none skipped (no transactions here: offsets are dense).
                assert offsets == list(range(len(offsets))), f"partition {partition}: {offsets}"
        finally:
            tailer.stop()


async def _until(condition: object, deadline_s: float) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)
