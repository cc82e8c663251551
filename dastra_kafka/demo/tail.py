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

import functools
import json
import threading

from confluent_kafka import Message

from bus.envelope import header_pairs
from bus.settings import KafkaSettings
from bus.tailer import TopicTailer
from bus.topics import COMMAND_RESULTS, DEAD_LETTER, RIGHTS_REQUESTS, TASKS
from dastra_kafka.demo.report import DemoReport, is_created, scan_for_personal_data

__all__ = ["Tail"]


class Tail:
    """Reads the event, result and dead-letter topics (read_committed) from where they were
    when the demo starts, into the report; in a privacy mode, scans them for personal data.

    One `TopicTailer` per topic (bus/tailer.py), as the services read their tables: under
    `--chaos` a consumer can stop fetching after the broker restarts, and the tailer replaces
    it where it was; the demo reports how often (`tail_renewals`)."""

    def __init__(self, kafka: KafkaSettings, report: DemoReport, lock: threading.Lock) -> None:
        self._report = report
        self._lock = lock
        kinds = {
            RIGHTS_REQUESTS: "rights",
            TASKS: "tasks",
            COMMAND_RESULTS: "results",
            DEAD_LETTER: "dlq",
        }
        self._tailers = [
            TopicTailer(
                kafka,
                kafka.topic(topic),
                functools.partial(self._take, kind),
                start="end",
                name=f"demo-{kind}",
            )
            for topic, kind in kinds.items()
        ]

    def start(self) -> None:
        for tailer in self._tailers:
            tailer.start(timeout=30)

    def stop(self) -> None:
        for tailer in self._tailers:
            tailer.stop()
        with self._lock:
            self._report.tail_renewals = sum(t.renewals for t in self._tailers)

    def _take(self, kind: str, message: Message) -> None:
        self._record(kind, dict(header_pairs(message.headers())), message.value())

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
