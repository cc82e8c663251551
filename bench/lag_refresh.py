"""Lag refresh time over 500 partitions: 20 consumer groups, each on its own 25-partition topic
with committed offsets and some lag (4 partitions in 5 lagging). Prints one JSON document:
p50/p95 of `LagMonitor.refresh()` (window persisted to dastra.lag-window.v1, a sample stored on
every refresh: the worst case) when offsets stand still (timestamps cached) and when every
lagging offset moves between refreshes (every timestamp read again), the first refresh, and
the same with the default sampling (a window write every 15 s), and
the ratio to the bare AdminClient calls that fetch the same offsets (20 committed-offset
requests and one log-end request), measured in the same run, interleaved.

    .venv/bin/python -m bench.lag_refresh            # a local broker, or KAFKA_BOOTSTRAP_SERVERS
        [--groups 20] [--partitions 25] [--rounds 30] [--smoke]   # smoke: 2 x 5, 3 rounds
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic, OffsetSpec

from bench import _common
from bus.admin import apply, plan
from bus.settings import KafkaSettings
from bus.topics import LAG_WINDOW, default_topics_file, load_catalogue
from consumers.lag import LagMonitor
from consumers.lag.settings import LagSettings

__all__ = ["main"]

RECORDS = 40  # per partition


def _summary(values_ms: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values_ms), 2),
        "p95_ms": round(_common.percentile(values_ms, 0.95), 2),
        "max_ms": round(max(values_ms), 2),
    }


def _setup(kafka: KafkaSettings, count: int, partitions: int) -> tuple[list[str], list[str]]:
    admin = AdminClient(kafka.confluent_config())
    topics = [kafka.topic(f"bench.t{i:02d}") for i in range(count)]
    groups = [kafka.topic(f"dastra.bench.g{i:02d}") for i in range(count)]
    futures = admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
    for future in futures.values():
        future.result(timeout=60)
    catalogue = load_catalogue(default_topics_file())
    only = catalogue.model_copy(update={"topics": (catalogue[LAG_WINDOW],)})
    apply(admin, plan(admin, only, prefix=kafka.topic_prefix))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        listed = admin.list_topics(timeout=10).topics
        if all(t in listed and len(listed[t].partitions) == partitions for t in topics):
            break
        time.sleep(0.1)
    producer = Producer(kafka.confluent_config(**{"linger.ms": 20}))
    now_ms = int(time.time() * 1000)
    for t in topics:
        for p in range(partitions):
            for i in range(RECORDS):
                producer.produce(t, value=b"{}", partition=p, timestamp=now_ms - 600_000 + i)
    assert producer.flush(60) == 0
    return topics, groups


def _commit(kafka: KafkaSettings, group: str, topic: str, step: int, partitions: int) -> None:
    """Every fifth partition caught up; the others lagging, moving on by `step`."""
    offsets = [
        TopicPartition(topic, p, RECORDS if p % 5 == 0 else 5 + step + p % 7)
        for p in range(partitions)
    ]
    consumer = Consumer(kafka.confluent_config(**{"group.id": group, "enable.auto.commit": False}))
    try:
        consumer.commit(offsets=offsets, asynchronous=False)
    finally:
        consumer.close()


def _bare(admin: AdminClient, groups: list[str], topics: list[str]) -> float:
    """The same offsets through the AdminClient alone: committed offsets, then log ends."""
    started = time.perf_counter()
    futures = [
        admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(g)])[g] for g in groups
    ]
    committed = [f.result(timeout=30) for f in futures]
    specs = {
        TopicPartition(tp.topic, tp.partition): OffsetSpec.latest()  # type: ignore[no-untyped-call]
        for result in committed
        for tp in result.topic_partitions
    }
    for future in admin.list_offsets(specs).values():
        future.result(timeout=30)
    return (time.perf_counter() - started) * 1000


def _cleanup(kafka: KafkaSettings, topics: list[str]) -> None:
    admin = AdminClient(kafka.confluent_config())
    doomed = [*topics, kafka.topic(LAG_WINDOW)]
    for future in admin.delete_topics(doomed, request_timeout=30).values():
        with contextlib.suppress(Exception):
            future.result(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=25)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--smoke", action="store_true", help="2 groups x 5 partitions, 3 rounds")
    args = parser.parse_args()
    if args.smoke:
        args.groups, args.partitions, args.rounds = 2, 5, 3
    with _common.kafka() as kafka:
        topics, groups = _setup(kafka, args.groups, args.partitions)
        try:
            result = _measure(kafka, topics, groups, args.partitions, args.rounds)
        finally:
            _cleanup(kafka, topics)
    print(json.dumps(result, indent=2))


def _measure(
    kafka: KafkaSettings, topics: list[str], groups: list[str], partitions: int, rounds: int
) -> dict[str, Any]:
    for group, topic in zip(groups, topics, strict=True):
        _commit(kafka, group, topic, 0, partitions)
    lag = LagSettings(sample_interval_s=0, window_s=300, persist_window=True)
    admin = AdminClient(kafka.confluent_config())
    steady: list[float] = []
    moving: list[float] = []
    bare: list[float] = []
    with LagMonitor(kafka, lag) as monitor:
        first = monitor.refresh()
        snapshot = first
        for _ in range(rounds):
            bare.append(_bare(admin, groups, topics))
            snapshot = monitor.refresh()
            steady.append(snapshot.poll_ms)
        for step in range(1, max(1, rounds // 3) + 1):
            for group, topic in zip(groups, topics, strict=True):
                _commit(kafka, group, topic, step, partitions)
            bare.append(_bare(admin, groups, topics))
            snapshot = monitor.refresh()
            moving.append(snapshot.poll_ms)
    # The same, with the default sampling (a stored sample, so a window write, every 15 s).
    default_sampling: list[float] = []
    with LagMonitor(kafka, LagSettings(persist_window=True)) as monitor:
        monitor.refresh()
        for _ in range(rounds):
            bare.append(_bare(admin, groups, topics))
            default_sampling.append(monitor.refresh().poll_ms)
    total = sum(len(g.partitions) for g in snapshot.groups)
    lagging = sum(1 for g in snapshot.groups for p in g.partitions if p.lag)
    assert total == len(groups) * partitions, total
    assert all(p.time_lag_s is not None for g in snapshot.groups for p in g.partitions)
    bare_p50 = statistics.median(bare)
    return {
        "benchmark": "lag_refresh",
        "groups": len(groups),
        "partitions": total,
        "lagging_partitions": lagging,
        "rounds": {
            "steady": len(steady),
            "moving": len(moving),
            "default_sampling": len(default_sampling),
            "bare": len(bare),
        },
        "first_refresh_ms": round(first.poll_ms, 2),
        "refresh_steady": _summary(steady),
        "refresh_offsets_moving": _summary(moving),
        "refresh_steady_default_sampling": _summary(default_sampling),
        "bare_admin_calls": _summary(bare),
        "ratio_steady_to_bare_p50": round(statistics.median(steady) / bare_p50, 2),
        "ratio_moving_to_bare_p50": round(statistics.median(moving) / bare_p50, 2),
        "ratio_default_sampling_to_bare_p50": round(
            statistics.median(default_sampling) / bare_p50, 2
        ),
        "note": (
            "refresh = list groups + describe + committed offsets + log start and end + "
            "timestamps of the records at lagging committed offsets + evaluation + window "
            "written to Kafka; bare = committed offsets + log ends only"
        ),
    }


if __name__ == "__main__":
    main()
