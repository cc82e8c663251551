"""Consumer lag monitor. Reads, for each watched consumer group, the committed offsets
(AdminClient `list_consumer_group_offsets`), the group's state and members
(`describe_consumer_groups`) and the log start and end of each partition (`list_offsets`), then
the timestamp of the record at each committed offset that has lag (one reused `assign`+`seek`
consumer, cached by topic, partition and offset). Reads and writes `dastra.lag-window.v1`
(compacted): the evaluation window and each group's last status, so a restart keeps both.
Produces `LagSnapshot`s: per partition the committed offset, log start and end, lag, time lag
(age of the oldest unconsumed record; 0 when caught up), owner and status; per group its state,
members, totals, status (the worst of its partitions) and status changes since the last refresh.

    with LagMonitor(settings.kafka, settings.lag) as monitor:
        snapshot = monitor.refresh()

Watched groups (`GroupSelection`): the names given (`--group`, `LAG_GROUPS`), every group
(`--all`), or by default the project's groups: those whose name starts with
KAFKA_TOPIC_PREFIX + "dastra" (`project_group_prefix`).

Statuses, idle-aware (Burrow's names, not its blind spot for quiet topics). The window W of a
partition is its stored samples (committed offset, log end) of the last `window_s` seconds, at
most one per `sample_interval_s`, plus the current observation. The first matching rule wins:

1. OK      no committed offset yet (nothing to judge).
2. REWIND  the committed offset is below the highest one in W: it went back and has not caught
           up with where it was (an offset reset, a replay).
3. OK      lag is 0 now (caught up, however quiet the topic; never STOP).
4. OK      W holds fewer than `min_samples` samples (not enough history to judge yet).
5. OK      lag was 0 in some sample of W (caught up recently; Burrow's rule).
6. STOP    the committed offset is the same in all of W, lag > 0 throughout, no live member of
           the group owns the partition, and the log end grew during W: nobody consumes while
           records keep arriving.
7. STALL   the committed offset is the same in all of W and lag > 0 throughout, otherwise: a
           live member owns the partition but does not advance (stuck on a record, committing
           the same offset again and again: the Faust "commit offset not advancing" livelock),
           or nobody owns it and the backlog sits still while the log is quiet.
8. WARN    the committed offset advanced during W but the lag never decreased from one sample
           to the next and ended higher than it started: the consumer falls behind.
9. OK      otherwise (consuming; lag goes down or holds).

Severity, in `Status.code` order: OK 0 < WARN 1 < REWIND 2 < STALL 3 < STOP 4 < NOTFOUND 5
(a group asked for by name that does not exist). A group takes its worst partition's status.

Why ownership separates STALL from STOP: the admin API returns committed offsets but not when
they were committed (Burrow reads commit times from `__consumer_offsets`, which managed clusters
do not let clients read). "Committing the same offset" and "not committing" look the same in
the offsets; what differs is whether a live member holds the partition.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any, NamedTuple, Protocol

import structlog
from confluent_kafka import (
    OFFSET_INVALID,
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec
from pydantic import TypeAdapter

from bus.errors import KafkaUnavailableError, TopicMissingError
from bus.reading import read_to_end
from bus.records.lag import LagWindowKey, LagWindowRecord, Status, StatusRecord, WindowRecord
from bus.settings import KafkaSettings
from bus.topics import LAG_WINDOW
from consumers.lag.settings import LagSettings

__all__ = [
    "GroupLag",
    "GroupSelection",
    "KafkaWindowStore",
    "LagMonitor",
    "LagSnapshot",
    "LagUnavailableError",
    "LagWindow",
    "LagWindowKey",
    "LagWindowRecord",
    "Member",
    "PartitionLag",
    "Sample",
    "Status",
    "StatusChange",
    "StatusRecord",
    "WindowRecord",
    "WindowStore",
    "evaluate_partition",
    "project_group_prefix",
]

_log = structlog.get_logger(__name__)

Clock = Callable[[], float]
TP = tuple[str, int]
WindowKey = tuple[str, str, int]  # group, topic, partition


class LagUnavailableError(KafkaUnavailableError):
    """Kafka did not answer the monitor's admin requests in time (a `KafkaUnavailableError`
    of bus/errors.py, so a `BusError` and, as before, a RuntimeError)."""


class Sample(NamedTuple):
    """One observation of a partition: when (monitor clock, s), committed offset, log end."""

    at: float
    committed: int
    end: int

    @property
    def lag(self) -> int:
        return max(0, self.end - self.committed)


def project_group_prefix(kafka: KafkaSettings) -> str:
    """The prefix of the project's own consumer groups: KAFKA_TOPIC_PREFIX + "dastra"."""
    return kafka.topic("dastra")


@dataclass(frozen=True)
class GroupSelection:
    """Which groups to watch: `names` exactly, `all_groups`, else names starting with `prefix`."""

    names: tuple[str, ...] = ()
    all_groups: bool = False
    prefix: str = "dastra"

    @classmethod
    def of(
        cls,
        kafka: KafkaSettings,
        lag: LagSettings,
        names: Sequence[str] = (),
        all_groups: bool = False,
    ) -> GroupSelection:
        """The CLI's choice (`--group`, `--all`), else LAG_GROUPS, else the project's groups."""
        chosen = tuple(names) or (() if all_groups else tuple(lag.groups))
        return cls(names=chosen, all_groups=all_groups, prefix=project_group_prefix(kafka))

    def describe(self) -> str:
        if self.names:
            return "groups " + ", ".join(self.names)
        if self.all_groups:
            return "every consumer group"
        return f"groups whose name starts with {self.prefix!r}"


@dataclass(frozen=True)
class Member:
    """A live member of a group and the partitions it owns."""

    consumer_id: str
    client_id: str
    host: str
    partitions: tuple[TP, ...]


@dataclass(frozen=True)
class PartitionLag:
    """One partition of one group. `lag` and `time_lag_s` are None when unknown."""

    topic: str
    partition: int
    committed: int | None
    log_start: int | None
    log_end: int | None
    lag: int | None
    time_lag_s: float | None
    # The offset of the record whose timestamp gave the time lag: above `committed` when the
    # records at the committed offset were deleted (retention) or compacted away.
    oldest_offset: int | None
    status: Status
    reason: str
    consumer_id: str = ""
    client_id: str = ""
    host: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "committed": self.committed,
            "log_start": self.log_start,
            "log_end": self.log_end,
            "lag": self.lag,
            "time_lag_s": _round(self.time_lag_s),
            "oldest_offset": self.oldest_offset,
            "status": self.status.value,
            "status_code": self.status.code,
            "reason": self.reason,
            "consumer_id": self.consumer_id,
            "client_id": self.client_id,
            "host": self.host,
        }


@dataclass(frozen=True)
class StatusChange:
    """A group's status changed between two refreshes (or since the last run)."""

    group: str
    previous: Status | None
    status: Status
    reason: str
    at: float


@dataclass(frozen=True)
class GroupLag:
    """One consumer group: state, members, partitions, and its worst partition's status."""

    group: str
    state: str
    simple: bool
    members: tuple[Member, ...]
    partitions: tuple[PartitionLag, ...]
    status: Status
    reason: str
    status_since: float | None = None

    @property
    def lag(self) -> int:
        return sum(p.lag or 0 for p in self.partitions)

    @property
    def max_lag(self) -> int:
        return max((p.lag or 0 for p in self.partitions), default=0)

    @property
    def max_time_lag_s(self) -> float:
        return max((p.time_lag_s or 0.0 for p in self.partitions), default=0.0)

    @property
    def topics(self) -> dict[str, int]:
        """Lag summed per topic."""
        sums: dict[str, int] = {}
        for p in self.partitions:
            sums[p.topic] = sums.get(p.topic, 0) + (p.lag or 0)
        return sums

    def to_dict(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "state": self.state,
            "simple": self.simple,
            "status": self.status.value,
            "status_code": self.status.code,
            "reason": self.reason,
            "status_since": self.status_since,
            "lag": self.lag,
            "max_lag": self.max_lag,
            "max_time_lag_s": _round(self.max_time_lag_s),
            "topics": self.topics,
            "members": [
                {
                    "consumer_id": m.consumer_id,
                    "client_id": m.client_id,
                    "host": m.host,
                    "partitions": [{"topic": t, "partition": p} for t, p in m.partitions],
                }
                for m in self.members
            ],
            "partitions": [p.to_dict() for p in self.partitions],
        }


@dataclass(frozen=True)
class LagSnapshot:
    """Everything one refresh saw."""

    cluster: str
    taken_at: float
    poll_ms: float
    selection: str
    groups: tuple[GroupLag, ...]
    changes: tuple[StatusChange, ...] = ()

    def worst(self) -> Status:
        return max((g.status for g in self.groups), key=lambda s: s.code, default=Status.OK)

    def group(self, name: str) -> GroupLag:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "taken_at": self.taken_at,
            "poll_ms": round(self.poll_ms, 2),
            "selection": self.selection,
            "status": self.worst().value,
            "status_code": self.worst().code,
            "groups": [g.to_dict() for g in self.groups],
            "changes": [
                {
                    "group": c.group,
                    "previous": c.previous.value if c.previous else None,
                    "status": c.status.value,
                    "reason": c.reason,
                    "at": c.at,
                }
                for c in self.changes
            ],
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# --- evaluation -------------------------------------------------------------------------------


def evaluate_partition(
    history: Sequence[Sample], current: Sample | None, owned: bool, min_samples: int
) -> tuple[Status, str]:
    """The status of one partition (rules 1 to 9 of the module docstring) and why.

    `history`: stored samples inside the window, oldest first; `current`: this refresh's
    observation (None without a committed offset); `owned`: a live member holds the partition.

        evaluate_partition([Sample(0, 5, 9), Sample(15, 5, 12)], Sample(30, 5, 20), False, 3)
        # (Status.STOP, "...")
    """
    if current is None:
        return Status.OK, "no committed offset"
    window = [*history, current]
    highest = max(s.committed for s in window)
    if current.committed < highest:
        return Status.REWIND, f"committed offset went back from {highest} to {current.committed}"
    if current.lag == 0:
        return Status.OK, "caught up"
    if len(window) < min_samples:
        return Status.OK, f"lag {current.lag}; judged after {min_samples} samples"
    if any(s.lag == 0 for s in window):
        return Status.OK, f"lag {current.lag}; caught up within the window"
    span = current.at - window[0].at
    if all(s.committed == current.committed for s in window):
        grew = current.end - window[0].end
        if not owned and grew > 0:
            return Status.STOP, (
                f"no consumer: offset {current.committed} unchanged for {span:.0f} s while "
                f"{grew} records arrived (lag {current.lag})"
            )
        if owned:
            return Status.STALL, (
                f"owned but stuck at offset {current.committed} for {span:.0f} s "
                f"(lag {current.lag})"
            )
        return Status.STALL, (
            f"backlog of {current.lag} untouched for {span:.0f} s; no consumer, no new records"
        )
    lags = [s.lag for s in window]
    if all(b >= a for a, b in itertools.pairwise(lags)) and lags[-1] > lags[0]:
        return Status.WARN, f"consuming but falling behind: lag {lags[0]} -> {lags[-1]}"
    return Status.OK, f"consuming (lag {current.lag})"


# --- the window and where it is kept ----------------------------------------------------------


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
                record = _RECORD.validate_python(value)
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


_RECORD = TypeAdapter(LagWindowRecord)


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
                self._kafka.confluent_config(**{"linger.ms": 5, "acks": "all"})
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


# --- reading Kafka -----------------------------------------------------------------------------


@dataclass
class _Lookup:
    """The oldest unconsumed record of a partition: its offset and timestamp (ms)."""

    offset: int
    timestamp_ms: int | None


class _TimestampReader:
    """One consumer, assigned to exactly the partitions to look up, then unassigned."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self._kafka = kafka
        self._consumer: Consumer | None = None
        self._cache: dict[tuple[str, int, int], _Lookup] = {}
        self._topics: set[str] = set()  # topics whose metadata the consumer has

    def read(self, wanted: Mapping[TP, int], deadline: float) -> dict[TP, _Lookup | None]:
        """For each partition, the first record at or after the given offset. None: nothing
        readable there (only transaction markers left); missing: not read before `deadline`."""
        found: dict[TP, _Lookup | None] = {}
        pending: dict[TP, int] = {}
        for tp, offset in wanted.items():
            hit = self._cache.get((tp[0], tp[1], offset))
            if hit is not None:
                found[tp] = hit
            else:
                pending[tp] = offset
        if not pending:
            return found
        consumer = self._open()
        for topic in {t for t, _ in pending} - self._topics:
            # Metadata first: assigning a topic the consumer has not seen yet otherwise waits
            # about a second for librdkafka's own metadata refresh.
            with contextlib.suppress(KafkaException):
                consumer.list_topics(topic, timeout=max(0.1, deadline - time.monotonic()))
            self._topics.add(topic)
        consumer.assign([TopicPartition(t, p, o) for (t, p), o in pending.items()])
        try:
            while pending and (left := deadline - time.monotonic()) > 0:
                first = consumer.poll(min(0.1, left))  # returns as soon as one is there
                if first is None:
                    continue
                done: list[TopicPartition] = []
                for message in [first, *consumer.consume(len(pending) + 16, 0)]:
                    tp = (str(message.topic()), int(message.partition() or 0))
                    wanted_at = pending.get(tp)
                    if wanted_at is None:
                        continue
                    error = message.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            found[tp] = None
                            del pending[tp]
                            done.append(TopicPartition(*tp))
                        continue
                    at = int(message.offset() or 0)
                    if at < wanted_at:
                        continue
                    kind, stamp = message.timestamp()
                    lookup = _Lookup(at, stamp if kind != 0 else None)
                    found[tp] = lookup
                    self._cache[(tp[0], tp[1], wanted_at)] = lookup
                    del pending[tp]
                    done.append(TopicPartition(*tp))
                if done and pending:
                    # Drop the rest of their fetched batches inside librdkafka, before they
                    # become Python messages: only the first record of each is wanted.
                    consumer.incremental_unassign(done)
        finally:
            consumer.unassign()
        return found

    def retain(self, keys: set[tuple[str, int, int]]) -> None:
        """Forget cached lookups not in `keys`: a committed offset that moved on is not asked
        again (unless the group rewinds, and then it is read again)."""
        self._cache = {key: value for key, value in self._cache.items() if key in keys}

    def _open(self) -> Consumer:
        if self._consumer is None:
            self._consumer = Consumer(
                self._kafka.confluent_config(
                    **{
                        # Needed by librdkafka; assign() never joins the group nor commits.
                        # Under the prefix like every group of ours (outside "dastra*", so
                        # never one the monitor lists as the project's).
                        "group.id": self._kafka.topic("lag-monitor.timestamps"),
                        "enable.auto.commit": False,
                        "enable.partition.eof": True,
                        # Deleted by retention: go to the first record still there.
                        "auto.offset.reset": "earliest",
                        # One small fetch per partition, no read-ahead we would throw away.
                        "max.partition.fetch.bytes": 1024,
                        "queued.min.messages": 1,
                        # ...without librdkafka's 1 s pause before the next fetch of a
                        # partition whose queue is "full": the next refresh reads it again.
                        "fetch.queue.backoff.ms": 0,
                        "fetch.error.backoff.ms": 50,
                        "fetch.wait.max.ms": 10,
                        "isolation.level": "read_uncommitted",
                    }
                )
            )
        return self._consumer

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None


@dataclass
class _GroupRead:
    name: str
    state: str = "UNKNOWN"
    simple: bool = False
    members: tuple[Member, ...] = ()
    committed: dict[TP, int] = field(default_factory=dict)
    found: bool = True


_LATEST = OffsetSpec.latest()  # type: ignore[no-untyped-call]
_EARLIEST = OffsetSpec.earliest()  # type: ignore[no-untyped-call]
_LOG_START_TTL_S = 60.0


def _wait(future: Future[Any], deadline: float) -> Any:
    return future.result(timeout=max(0.01, deadline - time.monotonic()))


class LagMonitor:
    """Takes `LagSnapshot`s of the selected groups; owns its admin client, its timestamp
    consumer and its window store.

        with LagMonitor(settings.kafka, settings.lag) as monitor:
            print(monitor.refresh().worst())
    """

    def __init__(
        self,
        kafka: KafkaSettings,
        lag: LagSettings,
        selection: GroupSelection | None = None,
        *,
        clock: Clock = time.time,
        store: WindowStore | None = None,
    ) -> None:
        self._kafka = kafka
        self._lag = lag
        self.selection = selection or GroupSelection.of(kafka, lag)
        self._clock = clock
        self._store: WindowStore | None = store
        if store is None and lag.persist_window:
            self._store = KafkaWindowStore(kafka, timeout=lag.timeout_s)
        self.window = LagWindow(lag.window_s, lag.sample_interval_s)
        self._admin: AdminClient | None = None
        self._reader: _TimestampReader | None = None
        self._known: list[TP] = []  # the partitions of the last refresh
        self._starts: dict[TP, tuple[int, float]] = {}  # log start, when read (monotonic)

    def __enter__(self) -> LagMonitor:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        """Connect and load the persisted window; raises `LagUnavailableError`."""
        if self._store is not None:
            self.window.load(self._store.load())
        self._admin = AdminClient(self._kafka.confluent_config())
        self._reader = _TimestampReader(self._kafka)

    def close(self) -> None:
        """Write what is left of the window and close the clients (idempotent)."""
        if self._admin is None:
            return
        try:
            if self._store is not None:
                self._store.save(self.window.dirty_records())
                self._store.close()
        finally:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
            self._admin = None

    def refresh(self) -> LagSnapshot:
        """Read Kafka once, evaluate every partition, store the window; `LagUnavailableError`
        when Kafka does not answer within `LAG_TIMEOUT_S`."""
        if self._admin is None or self._reader is None:
            raise RuntimeError("LagMonitor is not open: use `with LagMonitor(...)` or open()")
        admin = self._admin
        started = time.perf_counter()
        deadline = time.monotonic() + self._lag.timeout_s
        names = self._group_names(admin, deadline)
        # Pipelined: log ends of the partitions seen last time are asked for together with the
        # groups' offsets; only partitions new since then cost a second round trip.
        pending = self._ask_groups(admin, names)
        known = self._known
        latest_asked = self._ask_offsets(admin, known, _LATEST)
        starts_asked = self._ask_offsets(admin, self._stale_starts(known), _EARLIEST)
        reads = self._collect_groups(names, pending, deadline)
        tps = sorted({tp for g in reads for tp in g.committed} | _owned(reads))
        known_set = set(known)
        new = [tp for tp in tps if tp not in known_set]
        latest_new = self._ask_offsets(admin, new, _LATEST)
        starts_new = self._ask_offsets(admin, self._stale_starts(new), _EARLIEST)
        latest = self._offsets(latest_asked, deadline) | self._offsets(latest_new, deadline)
        stamp = time.monotonic()
        for start_tp, start in (
            self._offsets(starts_asked, deadline) | self._offsets(starts_new, deadline)
        ).items():
            self._starts[start_tp] = (start, stamp)
        self._known = tps
        self._starts = {tp: v for tp, v in self._starts.items() if tp in latest}
        earliest = {tp: v[0] for tp, v in self._starts.items()}
        lookups = self._lookups(reads, latest, earliest)
        now = self._clock()
        evaluated = [self._evaluate(g, earliest, latest, lookups, now) for g in reads]
        groups, changes = self._track_changes(evaluated, now)
        self.window.expire(now)
        if self._store is not None:
            self._store.save(self.window.dirty_records())
        return LagSnapshot(
            cluster=self._lag.cluster_name,
            taken_at=now,
            poll_ms=(time.perf_counter() - started) * 1000,
            selection=self.selection.describe(),
            groups=groups,
            changes=changes,
        )

    # -- reading --

    def _group_names(self, admin: AdminClient, deadline: float) -> list[str]:
        if self.selection.names:
            return list(dict.fromkeys(self.selection.names))
        try:
            listing = _wait(
                admin.list_consumer_groups(request_timeout=self._lag.timeout_s), deadline
            )
        except (KafkaException, FutureTimeoutError) as exc:
            raise LagUnavailableError(f"listing consumer groups failed: {exc}") from exc
        names = [g.group_id for g in listing.valid]
        if not self.selection.all_groups:
            names = [n for n in names if n.startswith(self.selection.prefix)]
        return sorted(names)

    def _ask_groups(
        self, admin: AdminClient, names: Sequence[str]
    ) -> tuple[dict[str, Future[Any]], dict[str, Future[Any]]]:
        if not names:
            return {}, {}
        timeout = self._lag.timeout_s
        described = admin.describe_consumer_groups(list(names), request_timeout=timeout)
        # One group per request (the client's limit), all in flight at once.
        offsets = {
            name: admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(name)], request_timeout=timeout
            )[name]
            for name in names
        }
        return described, offsets

    def _collect_groups(
        self,
        names: Sequence[str],
        pending: tuple[dict[str, Future[Any]], dict[str, Future[Any]]],
        deadline: float,
    ) -> list[_GroupRead]:
        described, offsets = pending
        reads: list[_GroupRead] = []
        for name in names:
            read = _GroupRead(name)
            try:
                description = _wait(described[name], deadline)
                read.state = description.state.name if description.state else "UNKNOWN"
                read.simple = bool(description.is_simple_consumer_group)
                read.members = tuple(
                    Member(
                        consumer_id=m.member_id,
                        client_id=m.client_id,
                        host=m.host,
                        partitions=tuple(
                            sorted(
                                (tp.topic, tp.partition)
                                for tp in (m.assignment.topic_partitions if m.assignment else [])
                            )
                        ),
                    )
                    for m in description.members
                )
                result = _wait(offsets[name], deadline)
            except FutureTimeoutError as exc:
                raise LagUnavailableError(f"describing group {name} timed out") from exc
            except KafkaException as exc:
                if _is_transport(exc):
                    raise LagUnavailableError(f"describing group {name} failed: {exc}") from exc
                if _is_group_missing(exc):
                    read.found = False
                    reads.append(read)
                    continue
                raise
            read.committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in result.topic_partitions or []
                if tp.offset != OFFSET_INVALID and tp.offset >= 0 and tp.error is None
            }
            if read.state == "DEAD" and not read.committed:
                read.found = False
            reads.append(read)
        return reads

    def _stale_starts(self, tps: Sequence[TP]) -> list[TP]:
        """Partitions whose log start is unknown or older than `_LOG_START_TTL_S`: it moves
        only when retention deletes a segment, so it is not asked for on every refresh."""
        cutoff = time.monotonic() - _LOG_START_TTL_S
        return [tp for tp in tps if (seen := self._starts.get(tp)) is None or seen[1] < cutoff]

    def _ask_offsets(
        self, admin: AdminClient, tps: Sequence[TP], spec: OffsetSpec
    ) -> Mapping[TopicPartition, Future[Any]]:
        if not tps:
            return {}
        return admin.list_offsets(
            {TopicPartition(t, p): spec for t, p in tps}, request_timeout=self._lag.timeout_s
        )

    @staticmethod
    def _offsets(futures: Mapping[TopicPartition, Future[Any]], deadline: float) -> dict[TP, int]:
        out: dict[TP, int] = {}
        for tp, future in futures.items():
            try:
                out[(tp.topic, tp.partition)] = int(_wait(future, deadline).offset)
            except FutureTimeoutError as exc:
                raise LagUnavailableError("listing partition offsets timed out") from exc
            except KafkaException as exc:
                if _is_transport(exc):
                    raise LagUnavailableError(f"listing offsets failed: {exc}") from exc
                # A deleted topic that a group still has offsets for: no log end to compare to.
                _log.debug("no offsets for partition", topic=tp.topic, partition=tp.partition)
        return out

    def _lookups(
        self, reads: Sequence[_GroupRead], latest: Mapping[TP, int], earliest: Mapping[TP, int]
    ) -> dict[tuple[str, int, int], _Lookup | None]:
        assert self._reader is not None
        deadline = time.monotonic() + self._lag.lookup_timeout_s
        # Distinct offsets per partition; rounds of one offset per partition per assignment.
        wanted: dict[TP, set[int]] = {}
        for g in reads:
            for tp, committed in g.committed.items():
                end = latest.get(tp)
                if end is not None and committed < end:
                    wanted.setdefault(tp, set()).add(max(committed, earliest.get(tp, 0)))
        self._reader.retain({(t, p, o) for (t, p), offsets in wanted.items() for o in offsets})
        # Groups sharing a partition may wait at different offsets: one round per offset rank.
        ordered = {tp: sorted(offsets) for tp, offsets in wanted.items()}
        results: dict[tuple[str, int, int], _Lookup | None] = {}
        for rank in range(max((len(o) for o in ordered.values()), default=0)):
            batch = {tp: offsets[rank] for tp, offsets in ordered.items() if len(offsets) > rank}
            for tp, lookup in self._reader.read(batch, deadline).items():
                results[(tp[0], tp[1], batch[tp])] = lookup
        return results

    # -- evaluating --

    def _evaluate(
        self,
        read: _GroupRead,
        earliest: Mapping[TP, int],
        latest: Mapping[TP, int],
        lookups: Mapping[tuple[str, int, int], _Lookup | None],
        now: float,
    ) -> GroupLag:
        if not read.found:
            return GroupLag(
                group=read.name,
                state=read.state,
                simple=read.simple,
                members=(),
                partitions=(),
                status=Status.NOTFOUND,
                reason="no such consumer group",
            )
        owners = {tp: m for m in read.members for tp in m.partitions}
        partitions: list[PartitionLag] = []
        for tp in sorted(set(read.committed) | set(owners)):
            committed = read.committed.get(tp)
            start, end = earliest.get(tp), latest.get(tp)
            owner = owners.get(tp)
            lag: int | None = None
            time_lag: float | None = None
            oldest: int | None = None
            current: Sample | None = None
            if committed is not None and end is not None:
                lag = max(0, end - committed)
                current = Sample(now, committed, end)
                if lag == 0:
                    time_lag = 0.0
                else:
                    key = (tp[0], tp[1], max(committed, start if start is not None else 0))
                    if key in lookups:
                        hit = lookups[key]
                        if hit is None:
                            time_lag = 0.0  # only transaction markers left: nothing to consume
                        else:
                            oldest = hit.offset
                            if hit.timestamp_ms is not None:
                                time_lag = max(0.0, now - hit.timestamp_ms / 1000)
            wkey = (read.name, tp[0], tp[1])
            history = self.window.history(wkey, now)
            if current is None:
                status, reason = (
                    Status.OK,
                    ("no committed offset" if committed is None else "topic has no log end"),
                )
            else:
                status, reason = evaluate_partition(
                    history,
                    current,
                    owner is not None,
                    self._lag.min_samples,
                )
                self.window.record(wkey, current)
            partitions.append(
                PartitionLag(
                    topic=tp[0],
                    partition=tp[1],
                    committed=committed,
                    log_start=start,
                    log_end=end,
                    lag=lag,
                    time_lag_s=time_lag,
                    oldest_offset=oldest,
                    status=status,
                    reason=reason,
                    consumer_id=owner.consumer_id if owner else "",
                    client_id=owner.client_id if owner else "",
                    host=owner.host if owner else "",
                )
            )
        status, reason = _worst(partitions)
        return GroupLag(
            group=read.name,
            state=read.state,
            simple=read.simple,
            members=read.members,
            partitions=tuple(partitions),
            status=status,
            reason=reason,
        )

    def _track_changes(
        self, groups: Sequence[GroupLag], now: float
    ) -> tuple[tuple[GroupLag, ...], tuple[StatusChange, ...]]:
        """Compare with the last known status of each group (persisted with the window)."""
        changes: list[StatusChange] = []
        out: list[GroupLag] = []
        for g in groups:
            previous = self.window.statuses.get(g.group)
            since = previous[1] if previous is not None else now
            if previous is None or previous[0] != g.status:
                # A first sighting is news only when something is wrong.
                if previous is not None or g.status != Status.OK:
                    changes.append(
                        StatusChange(
                            group=g.group,
                            previous=previous[0] if previous else None,
                            status=g.status,
                            reason=g.reason,
                            at=now,
                        )
                    )
                self.window.set_status(g.group, g.status, now)
                since = now
            out.append(replace(g, status_since=since))
        return tuple(out), tuple(changes)


def _owned(reads: Iterable[_GroupRead]) -> set[TP]:
    return {tp for g in reads for m in g.members for tp in m.partitions}


def _worst(partitions: Sequence[PartitionLag]) -> tuple[Status, str]:
    if not partitions:
        return Status.OK, "no partitions"
    worst = max(partitions, key=lambda p: p.status.code)
    if worst.status == Status.OK:
        lagging = sum(1 for p in partitions if p.lag)
        if lagging == 0:
            return Status.OK, f"caught up on {len(partitions)} partition(s)"
        return Status.OK, f"{lagging} of {len(partitions)} partition(s) lagging, none in trouble"
    same = sum(1 for p in partitions if p.status == worst.status)
    return worst.status, (
        f"{worst.status.value} on {same} of {len(partitions)} partition(s); "
        f"{worst.topic}[{worst.partition}]: {worst.reason}"
    )


def _is_transport(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    if not isinstance(error, KafkaError):
        return False
    return error.code() in (
        KafkaError._TRANSPORT,
        KafkaError._TIMED_OUT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    )


def _is_group_missing(exc: KafkaException) -> bool:
    error = exc.args[0] if exc.args else None
    return isinstance(error, KafkaError) and error.code() == KafkaError.GROUP_ID_NOT_FOUND
