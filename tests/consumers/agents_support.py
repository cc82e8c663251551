"""Helpers of the agents' tests: `dastra-kafka worker` processes, command records, a tail of the
results and dead-letter topics, consumer group offsets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Self

import httpx
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from bus.envelope import encode_binary, encode_structured, new_event
from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topics import ACTIONS, command_topic
from dastra.sandbox import SandboxServer
from dastra_kafka.settings import env_prefixes
from tests.kafka_helpers import Record, unique, wait_for

__all__ = [
    "SCRIPT",
    "RecordProducer",
    "Tail",
    "WorkerProcess",
    "command_record",
    "committed_offsets",
    "end_offsets",
    "group_caught_up",
    "produce",
    "results_of",
    "rewind_group",
]

SCRIPT = Path(sys.executable).with_name("dastra-kafka")
Headers = list[tuple[str, bytes | str | None]]


class WorkerProcess:
    """`dastra-kafka worker` as a subprocess on its own loopback web port; every stop has a
    SIGKILL deadline."""

    def __init__(
        self,
        kafka: KafkaSettings,
        sandbox: SandboxServer,
        log_dir: Path,
        name: str = "worker",
        **worker_env: str,
    ) -> None:
        self.kafka = kafka
        self.port = free_port()
        self.log_file = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        base = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
        self.env = {
            **base,
            **sandbox.env(),
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            # The sandbox's limit is switched off per test; the client's must not slow us either.
            "DASTRA_RATE_LIMIT_PER_MINUTE": "1000000",
            "DASTRA_RATE_LIMIT_PER_10_MINUTES": "10000000",
            "WORKER_WEB_PORT": str(self.port),
            "WORKER_SESSION_TIMEOUT_S": "6",
            "WORKER_HEARTBEAT_INTERVAL_S": "1",
            "WORKER_RETRY_BACKOFF_S": "0.2",
            "WORKER_RETRY_BACKOFF_MAX_S": "2",
            "WORKER_DATA_DIR": str(log_dir / "faust-data"),
            "SERVICE_LOG_LEVEL": "info",
            **worker_env,
        }
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, ready_within: float = 60.0, *, wait: bool = True) -> Self:
        """Start the process; unless `wait` is False, wait until it is ready."""
        with self.log_file.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SCRIPT), "--env-file", "/nonexistent", "worker"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if wait:
            self.wait_ready(ready_within)
        return self

    def _alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        if not self._alive():
            raise AssertionError(f"the worker exited ({self.returncode()}):\n{self.log_tail()}")
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def wait_ready(self, within: float = 60.0) -> None:
        wait_for(self.ready, within, f"worker on port {self.port} ready", every=0.2)

    def partitions(self) -> list[str]:
        """The command partitions the worker owns (as /ready reports them)."""
        try:
            body = httpx.get(f"http://127.0.0.1:{self.port}/ready", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return []
        return list(body.get("partitions", [])) if body.get("ready") else []

    def metrics(self) -> str:
        return httpx.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text

    def metric(self, name: str, **labels: str) -> float:
        """The value of one sample of /metrics (0 when absent)."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            if line.startswith("#"):
                continue
            sample, _, value = line.rpartition(" ")
            metric, _, rest = sample.partition("{")
            found = ",".join(sorted(rest.rstrip("}").split(","))) if rest else ""
            if metric == name and found == wanted:
                return float(value)
        return 0.0

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, within: float = 25.0) -> int | None:
        """SIGTERM, then SIGKILL after `within` seconds."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(within)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def command_record(
    data: Any, *, command_id: str | None = None, mode: str = "binary", action: str = "command"
) -> tuple[Headers, bytes]:
    """Headers and value of a command: CloudEvents binary or structured mode, or plain JSON."""
    if mode == "plain":
        return [], json.dumps(data).encode()
    event = new_event(
        type=f"eu.dastra.command.{action}",
        source="tests",
        id=command_id or unique("cmd"),
        data=data,
    )
    if mode == "structured":
        headers, value = encode_structured(event)
        return list(headers), value
    headers, value = encode_binary(event)
    assert value is not None
    return list(headers), value


class RecordProducer:
    """One idempotent producer for a whole test module (creating one costs ~0.5 s)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.kafka = kafka
        self._producer = Producer(
            kafka.confluent_config(**{"enable.idempotence": True, "linger.ms": 2})
        )

    def send(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, Headers, bytes | None]],
        *,
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> None:
        """Produce records (key, headers, value) to a catalogue topic; wait for every ack.

        `timestamp_ms` sets the record time (CreateTime) of every record, for tests that order
        records by time: two records produced in the same millisecond otherwise tie.
        """
        errors: list[str] = []

        def delivered(error: KafkaError | None, _message: Any) -> None:
            if error is not None:
                errors.append(error.str())

        for count, (key, headers, value) in enumerate(records, start=1):
            kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers}
            if partition is not None:
                kwargs["partition"] = partition
            if timestamp_ms is not None:
                kwargs["timestamp"] = timestamp_ms
            self._producer.produce(self.kafka.topic(topic), on_delivery=delivered, **kwargs)
            if count % 1000 == 0:
                self._producer.poll(0)
        assert self._producer.flush(30) == 0, "records not delivered"
        assert not errors, errors

    def close(self) -> None:
        self._producer.flush(10)
        self._producer.close()


def produce(
    kafka: KafkaSettings,
    topic: str,
    records: Iterable[tuple[bytes | None, Headers, bytes | None]],
    *,
    partition: int | None = None,
) -> None:
    """Produce records (key, headers, value) with a producer of their own."""
    producer = RecordProducer(kafka)
    producer.send(topic, records, partition=partition)
    producer.close()


class Tail:
    """Everything on a topic from the beginning, read incrementally (one consumer)."""

    def __init__(self, kafka: KafkaSettings, topic: str) -> None:
        self.topic = kafka.topic(topic)
        self.records: list[Record] = []
        self._consumer = Consumer(
            kafka.confluent_config(
                **{
                    "group.id": unique("tail"),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "enable.partition.eof": True,
                }
            )
        )
        partitions = self._consumer.list_topics(self.topic, timeout=10).topics[self.topic]
        self._partitions = list(partitions.partitions)
        self._consumer.assign([TopicPartition(self.topic, p, 0) for p in self._partitions])
        # partition -> the offset of its latest end-of-partition event
        self._reached: dict[int, int] = {}

    def poll(self, seconds: float = 0.2) -> None:
        deadline = time.monotonic() + seconds
        while True:
            messages = self._consumer.consume(1000, timeout=max(0.0, deadline - time.monotonic()))
            for message in messages:
                error = message.error()
                if error is None:
                    self.records.append(Record.of(message))
                elif error.code() == KafkaError._PARTITION_EOF:
                    self._reached[message.partition() or 0] = message.offset() or 0
            if time.monotonic() >= deadline or not messages:
                return

    def read_to_end(self, timeout: float = 30.0) -> None:
        """Read up to the end offsets every partition has now: once nothing writes to the topic
        any more, everything it holds (a late duplicate included) is then in `records`."""
        ends = {
            p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=10)[1]
            for p in self._partitions
        }
        self.wait(
            lambda t: all(t._reached.get(p, -1) >= end for p, end in ends.items()),
            timeout,
            f"{self.topic} read to its end offsets",
        )

    def by_key(self) -> dict[str, list[Record]]:
        found: dict[str, list[Record]] = defaultdict(list)
        for record in self.records:
            found[(record.key or b"").decode()].append(record)
        return found

    def wait(self, condition: Callable[[Tail], bool], timeout: float, what: str) -> None:
        def check() -> bool:
            self.poll(0.2)
            return condition(self)

        wait_for(check, timeout, what, every=0.0)

    def wait_for_keys(self, keys: Iterable[str], timeout: float = 30.0) -> dict[str, list[Record]]:
        wanted = set(keys)
        self.wait(
            lambda t: wanted <= set(t.by_key()), timeout, f"{len(wanted)} keys on {self.topic}"
        )
        found = self.by_key()
        return {key: found[key] for key in wanted}

    def close(self) -> None:
        self._consumer.close()


def results_of(records: list[Record]) -> list[dict[str, Any]]:
    return [json.loads(r.value or b"null") for r in records]


def end_offsets(kafka: KafkaSettings, topics: Iterable[str]) -> dict[tuple[str, int], int]:
    consumer = Consumer(kafka.confluent_config(**{"group.id": unique("ends")}))
    try:
        ends = {}
        for topic in topics:
            name = kafka.topic(topic)
            for p in consumer.list_topics(name, timeout=10).topics[name].partitions:
                ends[(name, p)] = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=10
                )[1]
        return ends
    finally:
        consumer.close()


def committed_offsets(kafka: KafkaSettings, group: str) -> dict[tuple[str, int], int]:
    admin = AdminClient(kafka.confluent_config())
    future = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)])[group]
    return {
        (tp.topic, tp.partition): tp.offset for tp in future.result(timeout=10).topic_partitions
    }


def group_caught_up(kafka: KafkaSettings, group: str, topics: Iterable[str]) -> bool:
    """The group committed the end offset of every non-empty partition of `topics`."""
    committed = committed_offsets(kafka, group)
    return all(
        committed.get(tp) == end for tp, end in end_offsets(kafka, topics).items() if end > 0
    )


def rewind_group(kafka: KafkaSettings, group: str, actions: Iterable[str] = ACTIONS) -> None:
    """Set the (inactive) group's offsets of the command topics back to 0."""
    admin = AdminClient(kafka.confluent_config())
    partitions = [
        TopicPartition(topic, partition, 0)
        for (topic, partition) in end_offsets(kafka, [command_topic(a) for a in actions])
    ]
    request = ConsumerGroupTopicPartitions(group, partitions)
    admin.alter_consumer_group_offsets([request])[group].result(timeout=10)
