"""The evaluation window (samples per group, topic and partition, and each group's last
status) and where it is kept between runs: the compacted dastra.lag-window.v1.

    window = LagWindow(window_s=300, sample_interval_s=15); window.load(store)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Protocol

import structlog
from confluent_kafka import KafkaException, Producer
from pydantic import TypeAdapter

from bus.errors import TopicMissingError
from bus.reading import read_to_end
from bus.records.lag import LagWindowRecord, Status, StatusRecord, WindowRecord
from bus.settings import KafkaSettings
from bus.topics import LAG_WINDOW
from consumers.lag.model import LagUnavailableError, Sample, WindowKey

__all__ = ["WINDOW_RECORD", "KafkaWindowStore", "LagWindow", "WindowStore"]

_log = structlog.get_logger(__name__)


class LagWindow:
    """Recent samples per (group, topic, partition), at most one per `sample_interval_s`."""

    def __init__(self, window_s: float, sample_interval_s: float) -> None:
        self.window_s = window_s
        self.sample_interval_s = sample_interval_s
        self._samples: dict[WindowKey, list[Sample]] = {}
        self.statuses: dict[str, tuple[Status, float]] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._dirty_status: set[str] = set()

    def history(self, key: WindowKey, now: float) -> list[Sample]:
        """The stored samples of `key` inside the window ending at `now`, oldest first."""
        samples = self._samples.get(key)
        if not samples:
            return []
        cutoff = now - self.window_s
        if cutoff <= samples[0].at and samples[-1].at < now:
            return samples  # the usual case: `record` keeps the list inside the window
        return [s for s in samples if cutoff <= s.at < now]

    def record(self, key: WindowKey, sample: Sample) -> bool:
        """Store `sample` if the last stored one is at least `sample_interval_s` older."""
        samples = self._samples.setdefault(key, [])
        if samples and sample.at < samples[-1].at:
            samples.clear()  # the clock went back: start over rather than mix time lines
        elif samples and sample.at - samples[-1].at < self.sample_interval_s:
            return False
        samples.append(sample)
        cutoff = sample.at - self.window_s
        while samples and samples[0].at < cutoff:
            samples.pop(0)
        self._dirty.add((key[0], key[1]))
        return True

    def set_status(self, group: str, status: Status, since: float) -> None:
        self.statuses[group] = (status, since)
        self._dirty_status.add(group)

    def expire(self, now: float) -> None:
        """Forget samples older than the window (and so, in time, deleted groups)."""
        cutoff = now - self.window_s
        for key in list(self._samples):
            kept = [s for s in self._samples[key] if s.at >= cutoff]
            if len(kept) != len(self._samples[key]):
                self._dirty.add((key[0], key[1]))
            if kept:
                self._samples[key] = kept
            else:
                del self._samples[key]

    def load(self, records: Mapping[str, Mapping[str, Any]]) -> None:
        """Fill from `records` (as `dirty_records` writes them), replacing what is held."""
        self._samples.clear()
        self.statuses.clear()
        for key, value in records.items():
            try:
                record = WINDOW_RECORD.validate_python(value)
            except ValueError:  # pydantic's ValidationError
                _log.warning("unreadable lag window record skipped", key=key)
                continue
            if isinstance(record, WindowRecord):
                for partition, rows in record.samples.items():
                    self._samples[(record.group, record.topic, int(partition))] = [
                        Sample(at_ms / 1000, committed, end) for at_ms, committed, end in rows
                    ]
            else:
                self.statuses[record.group] = (record.status, record.since)

    def dirty_records(self) -> dict[str, dict[str, Any] | None]:
        """Records for what changed since the last call: key -> value (None: a tombstone)."""
        out: dict[str, dict[str, Any] | None] = {}
        by_group_topic: dict[tuple[str, str], dict[str, list[list[int]]]] = {}
        for (group, topic, partition), samples in self._samples.items():
            if (group, topic) in self._dirty and samples:
                by_group_topic.setdefault((group, topic), {})[str(partition)] = [
                    [int(s.at * 1000), s.committed, s.end] for s in samples
                ]
        for group, topic in self._dirty:
            key = json.dumps(["window", group, topic])
            rows = by_group_topic.get((group, topic))
            out[key] = (
                WindowRecord(v=1, kind="window", group=group, topic=topic, samples=rows).model_dump(
                    mode="json"
                )
                if rows
                else None
            )
        for group in self._dirty_status:
            status, since = self.statuses[group]
            out[json.dumps(["status", group])] = StatusRecord(
                v=1, kind="status", group=group, status=status, since=since
            ).model_dump(mode="json")
        self._dirty.clear()
        self._dirty_status.clear()
        return out


WINDOW_RECORD = TypeAdapter(LagWindowRecord)


class WindowStore(Protocol):
    """Where the window lives between runs."""

    def load(self) -> dict[str, dict[str, Any]]: ...

    def save(self, records: Mapping[str, dict[str, Any] | None]) -> None: ...

    def close(self) -> None: ...


class KafkaWindowStore:
    """The window in a compacted topic (`dastra.lag-window.v1`): one record per (group, topic)
    and one per group status, each the whole current state of its key, so compaction keeps
    exactly what a restart needs. Keys and values are JSON (`LagWindowKey`, `LagWindowRecord`):

        ["window", group, topic] -> {"v": 1, "kind": "window", "group": ..., "topic": ...,
                                     "samples": {"<partition>": [[at_ms, committed, log_end]]}}
        ["status", group]        -> {"v": 1, "kind": "status", "group": ..., "status": "STOP",
                                     "since": <unix seconds>}

    A window whose samples all aged out is tombstoned. Topic absent: the window stays in memory
    (a warning says to run `dastra-kafka topics apply`)."""

    def __init__(self, kafka: KafkaSettings, topic: str | None = None, timeout: float = 10.0):
        self._kafka = kafka
        self.topic = topic or kafka.topic(LAG_WINDOW)
        self._timeout = timeout
        self._producer: Producer | None = None
        self.available = True

    def load(self) -> dict[str, dict[str, Any]]:
        """Every live record of the topic (the last value per key); {} if the topic is absent."""
        records: dict[str, dict[str, Any]] = {}
        try:
            for record in read_to_end(
                self._kafka, self.topic, timeout=self._timeout, read_committed=False
            ):
                if record.key is None:
                    continue
                key = record.key.decode()
                if record.value is None:
                    records.pop(key, None)
                    continue
                try:
                    records[key] = json.loads(record.value)
                except ValueError:
                    _log.warning(
                        "unreadable lag window record skipped",
                        topic=self.topic,
                        partition=record.partition,
                        offset=record.offset,
                    )
        except TopicMissingError:
            self.available = False
            _log.warning(
                "lag window topic missing (run `dastra-kafka topics apply`); "
                "the window is kept in memory only",
                topic=self.topic,
            )
            return {}
        except KafkaException as exc:
            raise LagUnavailableError(f"cannot read {self.topic}: {exc}") from exc
        return records

    def save(self, records: Mapping[str, dict[str, Any] | None]) -> None:
        if not records or not self.available:
            return
        if self._producer is None:
            self._producer = Producer(
                # No idempotence needed: every record is a whole snapshot of its key.
                self._kafka.producer_config(**{"linger.ms": 5, "acks": "all"})
            )
        for key, value in records.items():
            payload = None if value is None else json.dumps(value, separators=(",", ":"))
            self._producer.produce(self.topic, key=key.encode(), value=payload)
        self._producer.poll(0)

    def close(self) -> None:
        if self._producer is not None:
            left = self._producer.flush(self._timeout)
            if left:
                _log.warning("lag window records not confirmed", topic=self.topic, left=left)
            self._producer = None
