"""The demo's reader of the topics.

Consumes the rights request, task, command result and dead-letter topics (read_committed), from
their log ends when the demo starts. Produces, in the `DemoReport` (under the demo's lock), the
times each event id was seen, the items of the created events, the results per command (those of
recipes apart), the dead letters and, in a privacy mode, the records with personal data in clear.

    tail = Tail(kafka, report, lock)
    tail.start()
    ...
    tail.stop()
"""

from __future__ import annotations

import json
import threading
import time
import uuid

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from bus.envelope import header_pairs
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, DEAD_LETTER, RIGHTS_REQUESTS, TASKS
from dastra_kafka.demo.report import DemoReport, is_created, scan_for_personal_data

__all__ = ["Tail"]


_TRANSIENT = frozenset(
    {KafkaError._PARTITION_EOF, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN}
)
_OUT_OF_RANGE = frozenset({KafkaError._AUTO_OFFSET_RESET, KafkaError.OFFSET_OUT_OF_RANGE})


# A tail that has read nothing for this long while a partition's log end is past its position is
# stalled: it closes its consumer and assigns a new one where it was.
_TAIL_STALL_S = 10.0


class Tail(threading.Thread):
    """Reads the event, result and dead-letter topics (read_committed) from where they were
    when the demo started, into the report; in a privacy mode, scans them for personal data.

    Under `--chaos`, records on the topics could miss the tail after the broker's second or
    third restart: a fetch answered "offset out of range" while the broker was starting made
    librdkafka jump to the log end. So the tail never resets by itself (`auto.offset.reset`
    error): it keeps its own positions, and on that error, or when it has read nothing for a
    while with a log end past its position, it replaces its consumer where it was."""

    def __init__(self, kafka: KafkaSettings, report: DemoReport, lock: threading.Lock) -> None:
        super().__init__(name="demo-tail", daemon=True)
        self._kafka = kafka
        self._report = report
        self._lock = lock
        self._halt = threading.Event()
        self._names = {
            kafka.topic(RIGHTS_REQUESTS): "rights",
            kafka.topic(TASKS): "tasks",
            kafka.topic(COMMAND_RESULTS): "results",
            kafka.topic(DEAD_LETTER): "dlq",
        }
        self._consumer = self._new_consumer()
        # The next offset to read, per partition: from the log ends when the demo starts.
        self._positions: dict[tuple[str, int], int] = {}
        for topic in self._names:
            partitions = self._consumer.list_topics(topic, timeout=15).topics[topic].partitions
            for partition in partitions:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), 15
                )
                self._positions[(topic, partition)] = high
        self._assign()

    def _new_consumer(self) -> Consumer:
        return Consumer(
            self._kafka.confluent_config(
                **{
                    "group.id": f"demo-tail-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    "auto.offset.reset": "error",
                }
            )
        )

    def _assign(self) -> None:
        self._consumer.assign([TopicPartition(t, p, o) for (t, p), o in self._positions.items()])

    def _stalled(self) -> bool:
        """Is a partition's log end past the tail's position? (Read_committed, so an open
        transaction looks the same for a while: then the tail is replaced for nothing.)"""
        for (topic, partition), position in self._positions.items():
            if self._halt.is_set():
                return False
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(topic, partition), 1.0, cached=False
                )
            except KafkaException:
                return False  # the broker is away: nothing to compare yet
            if high > position:
                return True
        return False

    def stop(self) -> None:
        self._halt.set()
        self.join(15)

    def _renew(self) -> None:
        """A new consumer, assigned at the tail's own positions."""
        self._consumer.close()
        self._consumer = self._new_consumer()
        self._assign()
        with self._lock:
            self._report.tail_renewals += 1

    def run(self) -> None:
        progress = time.monotonic()
        try:
            while not self._halt.is_set():
                message = self._consumer.poll(0.2)
                if message is None:
                    if time.monotonic() - progress > _TAIL_STALL_S:
                        progress = time.monotonic()
                        if self._stalled():
                            self._renew()
                    continue
                error = message.error()
                if error is not None:
                    if error.code() in _OUT_OF_RANGE:
                        # The broker is still loading its logs: ask again where we were.
                        self._halt.wait(0.5)
                        self._renew()
                    # Lost connections are reported, and recovered from, by librdkafka itself
                    # (the broker restarted under `--chaos`).
                    elif error.code() not in _TRANSIENT:
                        with self._lock:
                            self._report.errors.append(f"tail: {error.str()}")
                    continue
                topic = message.topic() or ""
                self._positions[(topic, message.partition() or 0)] = (message.offset() or 0) + 1
                progress = time.monotonic()
                self._record(
                    self._names[topic], dict(header_pairs(message.headers())), message.value()
                )
        finally:
            self._consumer.close()

    def _record(self, kind: str, found: dict[str, bytes], value: bytes | None) -> None:
        with self._lock:
            scan_for_personal_data(self._report, kind, found, value or b"")
            if kind in ("rights", "tasks"):
                ce_id = found.get("ce_id", b"").decode()
                self._report.events[ce_id] += 1
                if is_created(ce_id):
                    self._report.event_items[kind].add(int(json.loads(value or b"{}")["id"]))
            elif kind == "results":
                data = json.loads(value or b"{}")
                command_id = str(data.get("command_id"))
                if command_id.startswith("recipe:"):
                    self._report.recipe_results += 1
                    return
                self._report.results[command_id] += 1
                if data.get("status") == "failed":
                    self._report.results_failed += 1
            else:
                self._report.dead_letters += 1
