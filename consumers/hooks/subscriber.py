"""One subscription's reader: its own consumer group on the event topics, a bounded read-ahead
buffer, its delivery workers and its committed position.

Consumes `dastra.rights-requests.v1` and `dastra.tasks.v1` in the consumer group
`<HOOKS_GROUP>.<subscription id>` (read_committed), so the subscription's position is stored in
Kafka and any dispatcher process resumes it; several processes share its partitions. Produces
deliveries through the `Deliverer`. At most `HOOKS_BUFFER_MAX` events are read ahead (waiting
or in flight); when they are all taken the partitions are paused and the subscription falls
behind on the topics instead of dropping anything. The committed offset of a partition is its
lowest event not yet done (delivered, dead-lettered, unsubscribed or not for this subscriber):
at-least-once per subscription, receivers drop repeats by `webhook-id`.

    reader = SubscriptionReader(context, subscription)
    task = asyncio.create_task(reader.run())  # until cancelled; reader.close() commits and leaves
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError as AIOKafkaError
from aiokafka.structs import ConsumerRecord

from bus.deadletter import OriginalRecord
from bus.envelope import EnvelopeError, decode, dumps
from bus.hooks.events import EVENT_TOPICS, hook_event_of, hook_payload, workspace_of
from bus.hooks.settings import HooksSettings
from bus.privacy import PrivacyError
from bus.privacy.keystore import KeyStore
from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings
from consumers.hooks.delivery import Bucket, Deliverer, Prepared
from consumers.hooks.metrics import HookMetrics
from consumers.hooks.positions import Positions

__all__ = ["HookReaderError", "ReaderContext", "SubscriptionReader", "group_of"]

_log = structlog.get_logger(__name__)

_COMMIT_EVERY_S = 0.5
_END_OFFSETS_EVERY_S = 2.0
_CLOSE_WITHIN_S = 5.0


class HookReaderError(Exception):
    """A subscription reader cannot run (its dispatcher restarts it a little later)."""


def group_of(kafka: KafkaSettings, settings: HooksSettings, subscription_id: str) -> str:
    """The consumer group that holds one subscription's position."""
    return kafka.topic(f"{settings.group}.{subscription_id}")


@dataclass(frozen=True)
class ReaderContext:
    """What every subscription reader of one dispatcher shares."""

    kafka: KafkaSettings
    settings: HooksSettings
    deliverer: Deliverer
    metrics: HookMetrics
    keys: KeyStore | None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, reader: SubscriptionReader) -> None:
        self._reader = reader

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        _log.info("hooks.revoked", hook=self._reader.subscription.id, partitions=len(revoked))
        await self._reader.commit(only=revoked)
        self._reader.forget(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        _log.info("hooks.assigned", hook=self._reader.subscription.id, partitions=len(assigned))
        await self._reader.placed(assigned)
        self._reader.assigned.set()


class SubscriptionReader:
    """Reads and delivers one subscription at its own pace; see the module docstring."""

    def __init__(self, context: ReaderContext, subscription: HookSubscription) -> None:
        self._context = context
        self.subscription = subscription
        self.gone = False
        self.bucket = Bucket(subscription.rate_per_s or context.settings.rate_per_s)
        self.positions = Positions()
        self.assigned = asyncio.Event()
        self.group = group_of(context.kafka, context.settings, subscription.id)
        self._queue: asyncio.Queue[Prepared] = asyncio.Queue()
        self._room = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._committed: dict[TopicPartition, int] = {}
        self._ends: dict[TopicPartition, int] = {}

    # --- lifecycle -----------------------------------------------------------------------------

    def update(self, subscription: HookSubscription) -> None:
        """A changed subscription (URL, secret, rate): used from the next attempt on."""
        self.subscription = subscription
        self.bucket.rate = subscription.rate_per_s or self._context.settings.rate_per_s

    async def run(self) -> None:
        """Read, deliver and commit until cancelled; then commit and leave the group."""
        settings = self._context.settings
        topics = [self._context.kafka.topic(t) for t in EVENT_TOPICS.values()]
        await self._initialise(topics)
        consumer = AIOKafkaConsumer(
            **self._context.kafka.aiokafka_config(),
            group_id=self.group,
            enable_auto_commit=False,
            # A position past the retention restarts at the oldest event kept (a new
            # subscription's start is stored before joining: see _initialise()).
            auto_offset_reset="earliest",
            isolation_level="read_committed",
            max_partition_fetch_bytes=settings.fetch_partition_bytes,
            fetch_max_bytes=max(settings.fetch_partition_bytes * 4, 1 << 20),
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            heartbeat_interval_ms=int(settings.session_timeout_s * 1000 / 4),
        )
        # Subscribed before start(), which then waits for both topics' metadata: joining with
        # one topic known and rejoining when the other shows up would re-deliver what was in
        # flight in between.
        consumer.subscribe(topics, listener=_Listener(self))
        self._consumer = consumer
        try:
            await consumer.start()
            async with asyncio.TaskGroup() as group:
                group.create_task(self._read(consumer))
                group.create_task(self._keep(consumer))
                for _ in range(settings.concurrency):
                    group.create_task(self._work())
        finally:
            # Bounded: with the group coordinator away a commit would wait for its return; the
            # next owner then starts from the previous commit (at-least-once).
            with contextlib.suppress(AIOKafkaError, TimeoutError):
                async with asyncio.timeout(_CLOSE_WITHIN_S):
                    await self.commit()
            with contextlib.suppress(AIOKafkaError, TimeoutError):
                async with asyncio.timeout(_CLOSE_WITHIN_S):
                    await consumer.stop()
            self._consumer = None

    # --- positions -----------------------------------------------------------------------------

    async def _initialise(self, topics: list[str]) -> None:
        """Store a start position for every partition that has none yet (a new subscription),
        before joining the group: nothing is then read from a guessed position, and every
        dispatcher that resumes the subscription agrees where it starts."""
        config = self._context.kafka.aiokafka_config()
        # No group: only to learn the partitions (start() waits for the topics' metadata) and
        # the offsets to start from.
        probe = AIOKafkaConsumer(*topics, **config, group_id=None)
        # The group, assigned by hand: it never joins, its commits only succeed while the group
        # has no member.
        keeper = AIOKafkaConsumer(**config, group_id=self.group, enable_auto_commit=False)
        try:
            # Inside the try: a reader cancelled while starting still closes both.
            await probe.start()
            await keeper.start()
            partitions: list[TopicPartition] = []
            for topic in topics:
                numbers = probe.partitions_for_topic(topic)
                if not numbers:
                    raise HookReaderError(f"topic {topic} is missing")
                partitions += [TopicPartition(topic, n) for n in sorted(numbers)]
            keeper.assign(partitions)
            fresh = [tp for tp in partitions if await keeper.committed(tp) is None]
            if not fresh:
                return
            start = self._context.settings.start_from
            if start == "earliest":
                chosen = dict(await probe.beginning_offsets(fresh))
            else:
                chosen = dict(await probe.end_offsets(fresh))
            if start == "created":
                since = int(self.subscription.created_at.timestamp() * 1000)
                found = await probe.offsets_for_times(dict.fromkeys(fresh, since))
                chosen.update({tp: hit.offset for tp, hit in found.items() if hit is not None})
            try:
                await keeper.commit(chosen)
            except AIOKafkaError as exc:
                # Another dispatcher is in the group already: it stored the start.
                _log.info("hooks.start_not_stored", hook=self.subscription.id, error=str(exc))
        finally:
            await keeper.stop()
            await probe.stop()

    async def placed(self, assigned: set[TopicPartition]) -> None:
        """Note where the newly assigned partitions stand (for commits and lag)."""
        consumer = self._consumer
        if consumer is None:
            return
        for tp in assigned:
            try:
                committed = await consumer.committed(tp)
            except AIOKafkaError:
                continue
            if committed is not None:
                self._committed[tp] = committed
                self.positions.started(tp, committed)

    def forget(self, revoked: set[TopicPartition]) -> None:
        """Partitions another process reads now."""
        self.positions.forget(revoked)
        for tp in revoked:
            self._committed.pop(tp, None)

    async def commit(self, only: set[TopicPartition] | None = None) -> None:
        """Commit, per partition read here (or only those of `only`, being revoked), the
        lowest event not yet done."""
        consumer = self._consumer
        if consumer is None:
            return
        assignment = consumer.assignment()
        points: dict[TopicPartition, int] = {}
        for tp in self.positions.partitions:
            if only is not None and tp not in only:
                continue
            if only is None and tp not in assignment:
                continue
            if only is None and self.positions.lowest_open(tp) is None:
                # Nothing open: the consumer's position, past any transaction marker.
                with contextlib.suppress(AIOKafkaError, TimeoutError):
                    async with asyncio.timeout(1.0):
                        at = await consumer.position(tp)
                    self.positions.started(tp, at)
            point = self.positions.commit_point(tp)
            if point is not None and self._committed.get(tp) != point:
                points[tp] = point
        if not points:
            return
        try:
            await consumer.commit(points)
        except AIOKafkaError as exc:
            # A rebalance under way: the next owner starts from the last commit (at-least-once).
            _log.info("hooks.commit_failed", hook=self.subscription.id, error=str(exc)[:200])
            return
        self._committed.update(points)

    # --- reading -------------------------------------------------------------------------------

    async def _read(self, consumer: AIOKafkaConsumer) -> None:
        limit = self._context.settings.buffer_max
        resume_at = max(0, limit // 2)
        paused = False
        while True:
            taken = self.positions.open_count
            if taken >= limit or (paused and taken > resume_at):
                # Full: stop fetching (fetched records are dropped, the position stays), and
                # still poll now and then, or the group would think this member is stuck.
                consumer.pause(*consumer.assignment())
                paused = True
                self._room.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._room.wait()
                batches = await consumer.getmany(timeout_ms=0, max_records=1)
            else:
                if paused:
                    consumer.resume(*consumer.assignment())
                    paused = False
                batches = await consumer.getmany(timeout_ms=500, max_records=limit - taken)
            for tp, records in batches.items():
                self.positions.read(tp, [(r.offset, r.timestamp) for r in records])
            for tp, records in batches.items():
                for record in records:
                    item = await self._prepare(tp, record)
                    if item is None:
                        self.positions.done(tp, record.offset)
                    else:
                        self._queue.put_nowait(item)

    async def _prepare(
        self, tp: TopicPartition, message: ConsumerRecord[bytes, bytes]
    ) -> Prepared | None:
        """The delivery of one record to this subscriber, or None when it is not for it."""
        keys = self._context.keys
        if keys is not None and message.value:
            # Encrypted by a poller whose key this process has not read yet: wait for it.
            await keys.await_keys(message.value)
        record = OriginalRecord(
            topic=tp.topic,
            partition=tp.partition,
            offset=message.offset,
            key=message.key,
            value=message.value,
            headers=[(k, v) for k, v in message.headers],
        )
        try:
            envelope = decode(
                record.headers,
                record.value,
                fallback_id=f"{tp.topic}/{tp.partition}/{message.offset}",
            )
        except EnvelopeError as exc:
            _log.warning(
                "hooks.undecodable_event",
                topic=tp.topic,
                partition=tp.partition,
                offset=message.offset,
                kind=exc.kind,
            )
            return None  # not an event of ours: nothing to deliver
        subscription = self.subscription
        event = hook_event_of(envelope.type)
        if event != subscription.event:
            return None
        if subscription.workspace_id is not None and (
            workspace_of(envelope, record.key) != subscription.workspace_id
        ):
            return None
        try:
            payload = hook_payload(envelope, record.key, keys)
        except PrivacyError:
            # Made with another master key: deliver it as it is on the topic.
            _log.warning(
                "hooks.undecryptable_event",
                topic=tp.topic,
                partition=tp.partition,
                offset=message.offset,
            )
            payload = hook_payload(envelope, record.key)
        return Prepared(tp, record, message.timestamp, envelope, event, dumps(payload))

    # --- delivering ----------------------------------------------------------------------------

    async def _work(self) -> None:
        deliverer = self._context.deliverer
        limit = self._context.settings.buffer_max
        while True:
            item = await self._queue.get()
            try:
                await deliverer.deliver(self, item)
            except Exception:
                _log.exception("hooks.delivery_crashed", hook=self.subscription.id)
                await deliverer.dead_letter(
                    self.subscription.id, item, "delivery crashed", attempts=0
                )
            self.positions.done(item.tp, item.record.offset)
            if self.positions.open_count <= limit // 2:
                self._room.set()

    # --- upkeep: commits and lag ---------------------------------------------------------------

    async def _keep(self, consumer: AIOKafkaConsumer) -> None:
        metrics = self._context.metrics
        hook = self.subscription.id
        ends_at = 0.0
        while True:
            await asyncio.sleep(_COMMIT_EVERY_S)
            await self.commit()
            assignment = consumer.assignment()
            if time.monotonic() >= ends_at and assignment:
                ends_at = time.monotonic() + _END_OFFSETS_EVERY_S
                try:
                    async with asyncio.timeout(5.0):
                        ends = await consumer.end_offsets(list(assignment))
                except (AIOKafkaError, TimeoutError) as exc:
                    _log.info("hooks.end_offsets_unknown", hook=hook, error=str(exc)[:200])
                else:
                    self._ends = dict(ends)
            behind = 0
            for tp in assignment:
                end = self._ends.get(tp)
                done_up_to = self.positions.commit_point(tp)
                if done_up_to is None:
                    done_up_to = self._committed.get(tp)
                if end is not None and done_up_to is not None:
                    behind += max(0, end - done_up_to)
            oldest = self.positions.oldest_timestamp_ms()
            age = max(0.0, time.time() - oldest / 1000) if oldest is not None else 0.0
            metrics.lag_events.labels(hook).set(behind)
            metrics.lag_seconds.labels(hook).set(round(age, 3))
            metrics.buffered.labels(hook).set(self.positions.open_count)
