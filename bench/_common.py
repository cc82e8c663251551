"""What every benchmark shares: a broker to run against, percentiles, paced calls, ratios."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bus.localkafka import LocalKafka
from bus.settings import KafkaSettings

__all__ = [
    "created_at",
    "in_seconds",
    "kafka",
    "latency_summary",
    "paced",
    "percentile",
    "ratio",
    "record_arrivals",
    "wait_for_arrivals",
]


@contextlib.contextmanager
def kafka() -> Iterator[KafkaSettings]:
    """KAFKA_BOOTSTRAP_SERVERS when set, else a local broker; topics under a fresh prefix."""
    prefix = f"bench-{uuid.uuid4().hex[:8]}."
    external = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if external:
        yield KafkaSettings(bootstrap_servers=external, topic_prefix=prefix)
        return
    with LocalKafka() as broker:
        yield KafkaSettings(bootstrap_servers=broker.bootstrap_servers, topic_prefix=prefix)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank `q` quantile (0..1) of `values`."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def latency_summary(seconds: list[float]) -> dict[str, float | int | None]:
    """Count, p50, p99 and max of latencies given in seconds, in milliseconds."""
    if not seconds:
        return {"count": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "count": len(seconds),
        "p50_ms": round(percentile(seconds, 0.50) * 1000, 2),
        "p99_ms": round(percentile(seconds, 0.99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def in_seconds(summary: dict[str, float | int | None]) -> dict[str, float | int | None]:
    """A `latency_summary`'s milliseconds as seconds."""
    return {
        key.replace("_ms", "_s"): (
            round(value / 1000, 3) if key.endswith("_ms") and value else value
        )
        for key, value in summary.items()
    }


def created_at(item: dict[str, Any]) -> float:
    """A Dastra object's `dateCreation` as a `time.time()` value."""
    return datetime.fromisoformat(item["dateCreation"].replace("Z", "+00:00")).timestamp()


def ratio(value: float | None, baseline: float | None) -> float | None:
    """value / baseline, rounded; None when either is missing or the baseline is 0."""
    if value is None or not baseline:
        return None
    return round(value / baseline, 3)


async def paced(
    call: Callable[[int], Awaitable[Any]], count: int, rate: float
) -> tuple[list[float | None], list[Any]]:
    """Start `call(n)` for n in 0..count-1 at `rate` per second (open loop: a slow answer does
    not delay the next start); returns each call's latency in seconds and its result, in order.
    A call that raises has its exception as its result and None as its latency."""
    began = time.perf_counter()
    latencies: list[float | None] = [None] * count
    results: list[Any] = [None] * count

    async def one(n: int) -> None:
        started = time.perf_counter()
        try:
            results[n] = await call(n)
        except Exception as exc:  # counted by the caller, never hidden
            results[n] = exc
            return
        latencies[n] = time.perf_counter() - started

    tasks = []
    for n in range(count):
        await asyncio.sleep(max(0.0, began + n / rate - time.perf_counter()))
        tasks.append(asyncio.create_task(one(n)))
    await asyncio.gather(*tasks)
    return latencies, results


def record_arrivals(
    kafka: KafkaSettings,
    topic: str,
    stop: threading.Event,
    out: dict[int, float],
    ready: threading.Event | None = None,
) -> None:
    """Until `stop` is set, read `topic` from its end (read_committed) and record in `out` when
    each object id (the event's `data.id`) first arrived, in `time.time()`; `ready` is set once
    it reads. Run it in a thread. A topic just created may not have its leaders yet: its ends
    are asked again for up to 60 s."""
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": f"bench-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
    )
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        deadline = time.monotonic() + 60
        while True:
            try:
                starts = [
                    TopicPartition(
                        topic, p, consumer.get_watermark_offsets(TopicPartition(topic, p), 10)[1]
                    )
                    for p in partitions
                ]
                break
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        consumer.assign(starts)
        if ready is not None:
            ready.set()
        while not stop.is_set():
            message = consumer.poll(0.05)
            if message is None or message.error() is not None:
                error = message.error() if message is not None else None
                if error is not None and error.code() != KafkaError._PARTITION_EOF:
                    raise RuntimeError(str(error))
                continue
            data = json.loads(message.value() or b"{}")
            out.setdefault(int(data["id"]), time.time())
    finally:
        consumer.close()


async def wait_for_arrivals(
    arrivals: dict[int, float], created: dict[int, float], within: float
) -> None:
    """Until every created id is in `arrivals` (see `record_arrivals`), or `within` seconds;
    the caller reports the missing."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(i in arrivals for i in created):
            return
        await asyncio.sleep(0.05)
