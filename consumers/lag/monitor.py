"""The lag monitor: reads committed offsets, group members and partition offsets with the
admin API, the timestamps at committed offsets with one consumer, and judges each partition
against its window; see the package docstring for the statuses.

    with LagMonitor(settings.kafka, settings.lag) as monitor:
        snapshot = monitor.refresh()
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from bus.errors import BusError, KafkaAuthorizationError
from bus.groups import GroupRead, read_groups
from bus.records.lag import Status
from bus.settings import KafkaSettings
from consumers.lag.evaluation import evaluate_partition
from consumers.lag.model import (
    TP,
    Clock,
    GroupLag,
    GroupSelection,
    LagSnapshot,
    LagUnavailableError,
    PartitionLag,
    Sample,
    StatusChange,
)
from consumers.lag.settings import LagSettings
from consumers.lag.window import KafkaWindowStore, LagWindow, WindowStore

__all__ = ["TIMESTAMPS_GROUP", "LagMonitor"]

_log = structlog.get_logger(__name__)

# The group id of the timestamp reader (under KAFKA_TOPIC_PREFIX, outside "dastra*", so never
# one the monitor lists as the project's); it assigns partitions and never commits.
TIMESTAMPS_GROUP = "lag-monitor.timestamps"


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
                        "group.id": self._kafka.topic(TIMESTAMPS_GROUP),
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
        self._pool: ThreadPoolExecutor | None = None  # runs the groups' offsets requests
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
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lag-offsets")

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
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
                self._pool = None
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
        pending = self._ask_groups(names)
        known = self._known
        latest_asked = self._ask_offsets(admin, known, _LATEST)
        starts_asked = self._ask_offsets(admin, self._stale_starts(known), _EARLIEST)
        reads = self._collect_groups(names, pending, deadline)
        tps = sorted({tp for g in reads.values() for tp in g.committed} | _owned(reads.values()))
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
        lookups = self._lookups(list(reads.values()), latest, earliest)
        now = self._clock()
        evaluated = [
            self._evaluate(name, g, earliest, latest, lookups, now) for name, g in reads.items()
        ]
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

    def _ask_groups(self, names: Sequence[str]) -> Future[dict[str, GroupRead | BusError]] | None:
        """Every group's description and committed offsets, in flight while the log ends are
        asked. Over aiokafka (bus/groups.py): librdkafka's coordinator admin calls can crash
        the process while a coordinator loads or a broker restarts."""
        if not names:
            return None
        assert self._pool is not None
        return self._pool.submit(read_groups, self._kafka, list(names), self._lag.timeout_s)

    def _collect_groups(
        self,
        names: Sequence[str],
        pending: Future[dict[str, GroupRead | BusError]] | None,
        deadline: float,
    ) -> dict[str, GroupRead]:
        try:
            answers = _wait(pending, deadline) if pending is not None else {}
        except FutureTimeoutError as exc:
            raise LagUnavailableError("describing the groups timed out") from exc
        except KafkaAuthorizationError:
            raise
        except BusError as exc:  # no admin connection at all (the broker restarting)
            raise LagUnavailableError(f"describing the groups failed: {exc}") from exc
        reads: dict[str, GroupRead] = {}
        for name in names:
            answer = answers[name]
            if isinstance(answer, KafkaAuthorizationError):
                raise answer
            if isinstance(answer, BusError):
                raise LagUnavailableError(f"describing group {name} failed: {answer}")
            reads[name] = answer
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
        self, reads: Sequence[GroupRead], latest: Mapping[TP, int], earliest: Mapping[TP, int]
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
        name: str,
        read: GroupRead,
        earliest: Mapping[TP, int],
        latest: Mapping[TP, int],
        lookups: Mapping[tuple[str, int, int], _Lookup | None],
        now: float,
    ) -> GroupLag:
        if not read.found:
            return GroupLag(
                group=name,
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
            wkey = (name, tp[0], tp[1])
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
                    consumer_id=owner.member_id if owner else "",
                    client_id=owner.client_id if owner else "",
                    host=owner.host if owner else "",
                )
            )
        status, reason = _worst(partitions)
        return GroupLag(
            group=name,
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


def _owned(reads: Iterable[GroupRead]) -> set[TP]:
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
