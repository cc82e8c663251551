"""REST hook dispatcher (`dastra-kafka hooks`): Dastra events POSTed to their subscribers.

Consumes `dastra.rights-requests.v1` and `dastra.tasks.v1` (consumer group `dastra-hooks`) and
the whole compacted `dastra.hook-subscriptions.v1` (every dispatcher reads every subscription).
Produces, for each event and each matching subscription, an HTTPS POST of
`{"id", "type", "timestamp", "workspace_id", "data"}` (data = the Dastra object in the payload
mode of its topic, plus `payload_mode` when that is not full; an `encrypted` payload is
decrypted when this process has PRIVACY_MASTER_KEY, erased subjects' fields as
`{"$erased": true}`, and delivered as it is otherwise) signed per
Standard Webhooks (`webhook-id` = the event's `ce_id`, stable across retries); tombstones on
`dastra.hook-subscriptions.v1` for subscribers that answer 410 Gone; and `dastra.dead-letter.v1`
records (the original event record plus `dlq.*` headers naming the subscription) when the retry
budget runs out, when the subscriber's queue is full, or when its URL is refused by the egress
guard.

Each subscription has its own queue, worker tasks (`HOOKS_CONCURRENCY`), rate limit
(`HOOKS_RATE_PER_S`) and backoff, so a slow or failing subscriber never delays another. An
event's offset is committed once every delivery of it ended (delivered, unsubscribed or
dead-lettered): at-least-once per subscriber; receivers drop repeats by `webhook-id`.

    async with HookDispatcher(settings.kafka, settings.hooks) as dispatcher:
        await dispatcher.run(stop=stop_event)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import httpx
import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from bus.deadletter import ErrorKind, OriginalRecord, dead_letter
from bus.envelope import Envelope, EnvelopeError, decode, dumps, record_headers
from bus.errors import KafkaAuthorizationError, KafkaUnavailableError
from bus.hooks.egress import EgressRefusedError, Target, client_for, post, resolve_target
from bus.hooks.events import EVENT_TOPICS, event_keys, hook_event_of, hook_payload, workspace_of
from bus.hooks.settings import HooksSettings
from bus.hooks.signatures import standard_webhook_headers
from bus.hooks.subscriptions import SubscriptionTable
from bus.privacy import PrivacyError
from bus.producer import AsyncProducer
from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings, PrivacySettings
from bus.topics import DEAD_LETTER
from dastra.retry import backoff_delay, parse_retry_after

__all__ = ["HookDispatcher"]

_log = structlog.get_logger(__name__)

_COMPONENT = "hooks"


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "dastra_hooks_deliveries",
            "Finished deliveries by outcome",
            ["event", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "dastra_hooks_attempts",
            "HTTP attempts by status class",
            ["status"],
            registry=registry,
        )
        self.latency = Histogram(
            "dastra_hooks_attempt_seconds",
            "Duration of one HTTP attempt",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=registry,
        )
        self.queued = Gauge(
            "dastra_hooks_queued", "Deliveries waiting or in flight", registry=registry
        )
        self.subscriptions = Gauge(
            "dastra_hooks_subscriptions", "Known subscriptions", registry=registry
        )


@dataclass
class _Event:
    """One consumed event record and the deliveries still open for it."""

    record: OriginalRecord
    envelope: Envelope
    event: str
    body: bytes
    pending: int = 0


@dataclass
class _Delivery:
    event: _Event
    subscription_id: str
    first_at: float = field(default_factory=time.monotonic)


class _OffsetTracker:
    """Per partition: the offsets still open; the commit point is the lowest open one."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, int], set[int]] = {}
        self.next: dict[tuple[str, int], int] = {}
        self._lock = threading.Lock()  # the rebalance callbacks run in the polling thread

    def add(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self.open.setdefault((topic, partition), set()).add(offset)
            self.next[(topic, partition)] = max(self.next.get((topic, partition), 0), offset + 1)

    def seen(self, topic: str, partition: int, offset: int) -> None:
        """A record that needs no delivery: the commit point may pass it."""
        with self._lock:
            self.next[(topic, partition)] = max(self.next.get((topic, partition), 0), offset + 1)

    def done(self, topic: str, partition: int, offset: int) -> None:
        with self._lock:
            self.open.get((topic, partition), set()).discard(offset)

    def commit_points(self) -> list[TopicPartition]:
        with self._lock:
            points = []
            for (topic, partition), following in self.next.items():
                still = self.open.get((topic, partition))
                offset = min(still) if still else following
                points.append(TopicPartition(topic, partition, offset))
            return points

    def forget(self, partitions: list[TopicPartition]) -> None:
        with self._lock:
            for tp in partitions:
                self.open.pop((tp.topic, tp.partition), None)
                self.next.pop((tp.topic, tp.partition), None)

    @property
    def in_flight(self) -> int:
        with self._lock:
            return sum(len(v) for v in self.open.values())


class _Bucket:
    """A token bucket: at most `rate` requests per second, bursts of `rate`."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._tokens = max(1.0, rate)
        self._at = time.monotonic()

    async def take(self) -> None:
        while True:
            now = time.monotonic()
            self._tokens = min(max(1.0, self._rate), self._tokens + (now - self._at) * self._rate)
            self._at = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


class _Subscriber:
    """One subscription's queue and workers."""

    def __init__(self, dispatcher: HookDispatcher, subscription: HookSubscription) -> None:
        self.subscription = subscription
        self._dispatcher = dispatcher
        self.queue: asyncio.Queue[_Delivery] = asyncio.Queue()
        self.bucket = _Bucket(dispatcher.settings.rate_per_s)
        self.gone = False
        self.tasks = [
            asyncio.create_task(self._work(), name=f"hook-{subscription.id}-{n}")
            for n in range(dispatcher.settings.concurrency)
        ]

    async def _work(self) -> None:
        while True:
            delivery = await self.queue.get()
            try:
                if self.gone:
                    self._dispatcher.finish(delivery, "unsubscribed")
                else:
                    await self._dispatcher.deliver(self, delivery)
            except asyncio.CancelledError:
                raise
            except Exception:
                _log.exception("hooks.delivery_crashed", hook=self.subscription.id)
                await self._dispatcher.dead_letter(delivery, "delivery crashed", attempts=0)
            finally:
                self.queue.task_done()

    def stop(self) -> None:
        for task in self.tasks:
            task.cancel()


class HookDispatcher:
    """Delivers events to subscribers until stopped. One owner opens and closes it."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: HooksSettings,
        *,
        registry: CollectorRegistry | None = None,
        host: str = "127.0.0.1",
        client: httpx.AsyncClient | None = None,
        privacy: PrivacySettings | None = None,
    ) -> None:
        self.kafka = kafka
        self.settings = settings
        self.keys = event_keys(kafka, privacy, "hooks")
        self._host = host
        self.registry = registry or CollectorRegistry()
        self._metrics = _Metrics(self.registry)
        self.table = SubscriptionTable(kafka)
        self._producer = AsyncProducer(kafka, timeout_s=30.0, linger_ms=5)
        self._client = client
        self._owns_client = client is None
        self._subscribers: dict[str, _Subscriber] = {}
        self._tracker = _OffsetTracker()
        self._consumer: Consumer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._revoked: list[TopicPartition] = []
        self.assigned = asyncio.Event()
        self._tasks: set[asyncio.Future[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._producer.open()
        if self._client is None:
            self._client = client_for(self.settings)
        if self.keys is not None:
            await asyncio.to_thread(self.keys.start)
        await asyncio.to_thread(self.table.start)
        self.table.listen(self._on_change)
        for subscription in self.table.all():
            self._ensure(subscription)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for subscriber in self._subscribers.values():
            subscriber.stop()
        self._subscribers.clear()
        self.table.stop()
        if self.keys is not None:
            await asyncio.to_thread(self.keys.stop)
        if self._owns_client and self._client is not None:
            await self._client.aclose()
        await asyncio.to_thread(self._producer.close)

    def _on_change(self, key: str, subscription: HookSubscription | None) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._changed, key, subscription)

    def _changed(self, key: str, subscription: HookSubscription | None) -> None:
        if subscription is None:
            gone = self._subscribers.pop(key, None)
            if gone is not None:
                gone.gone = True
                self._drain(gone)
        else:
            existing = self._subscribers.get(key)
            if existing is not None:
                existing.subscription = subscription
            else:
                self._ensure(subscription)
        self._metrics.subscriptions.set(len(self._subscribers))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _ensure(self, subscription: HookSubscription) -> _Subscriber:
        subscriber = self._subscribers.get(subscription.id)
        if subscriber is None:
            subscriber = _Subscriber(self, subscription)
            self._subscribers[subscription.id] = subscriber
            self._metrics.subscriptions.set(len(self._subscribers))
        return subscriber

    def _drain(self, subscriber: _Subscriber) -> None:
        """An unsubscribed subscriber's waiting deliveries end at once; then its workers."""
        while not subscriber.queue.empty():
            delivery = subscriber.queue.get_nowait()
            subscriber.queue.task_done()
            self.finish(delivery, "unsubscribed")

        async def _retire() -> None:
            await subscriber.queue.join()
            subscriber.stop()

        self._spawn(_retire())

    # --- consuming -----------------------------------------------------------------------------

    def _open_consumer(self) -> Consumer:
        consumer = Consumer(
            self.kafka.confluent_config(
                **{
                    "group.id": self.kafka.topic(self.settings.group),
                    "enable.auto.commit": False,
                    "auto.offset.reset": self.settings.start_from,
                    "isolation.level": "read_committed",
                    "fetch.wait.max.ms": 100,
                    "partition.assignment.strategy": "cooperative-sticky",
                }
            )
        )
        topics = [self.kafka.topic(t) for t in EVENT_TOPICS.values()]
        consumer.subscribe(topics, on_assign=self._on_assign, on_revoke=self._on_revoke)
        return consumer

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        chosen = partitions
        if self.settings.start_from == "latest":
            # Resolve "latest" now, not at the first fetch, so that an event produced after the
            # dispatcher reported itself ready is delivered.
            try:
                chosen = self._start_offsets(consumer, partitions)
            except KafkaException as exc:
                # Never raise from a rebalance callback: fall back to auto.offset.reset.
                _log.warning("hooks.start_offsets_unknown", error=str(exc)[:200])
        consumer.incremental_assign(chosen)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.assigned.set)

    @staticmethod
    def _start_offsets(
        consumer: Consumer, partitions: list[TopicPartition]
    ) -> list[TopicPartition]:
        deadline = time.monotonic() + 15
        while True:
            try:
                committed = consumer.committed(partitions, timeout=10)
                for tp in committed:
                    if tp.offset < 0:
                        _low, high = consumer.get_watermark_offsets(tp, timeout=5)
                        tp.offset = high
                return list(committed)
            except KafkaException as exc:
                error = exc.args[0]
                # A topic created a moment ago may have no leader yet.
                if not isinstance(error, KafkaError) or time.monotonic() > deadline:
                    raise
                if not (error.retriable() or error.code() == KafkaError.NOT_LEADER_FOR_PARTITION):
                    raise
                time.sleep(0.2)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        with contextlib.suppress(KafkaException):
            self._commit(consumer, partitions)
        self._tracker.forget(partitions)
        consumer.incremental_unassign(partitions)

    def _commit(self, consumer: Consumer, only: list[TopicPartition] | None = None) -> None:
        points = self._tracker.commit_points()
        if only is not None:
            wanted = {(tp.topic, tp.partition) for tp in only}
            points = [tp for tp in points if (tp.topic, tp.partition) in wanted]
        if points:
            consumer.commit(offsets=points, asynchronous=False)

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        ready: asyncio.Event | None = None,
        metrics: bool = True,
    ) -> None:
        """Consume and deliver until `stop` is set. `ready` is set once partitions are
        assigned (with their start offsets resolved)."""
        stop = stop or asyncio.Event()
        server = None
        if metrics and self.settings.metrics_port:
            server, _thread = start_http_server(
                self.settings.metrics_port, addr=self._host, registry=self.registry
            )
        consumer = await asyncio.to_thread(self._open_consumer)
        self._consumer = consumer
        last_commit = time.monotonic()
        try:
            while not stop.is_set():
                if self._tracker.in_flight >= 10 * self.settings.queue_max:
                    await asyncio.sleep(0.05)  # a global safety valve on memory
                    message = None
                else:
                    message = await asyncio.to_thread(consumer.poll, 0.1)
                if ready is not None and self.assigned.is_set() and not ready.is_set():
                    ready.set()
                if message is not None:
                    await self._await_keys(message)
                    self._take(message)
                if time.monotonic() - last_commit >= 0.5:
                    last_commit = time.monotonic()
                    try:
                        await asyncio.to_thread(self._commit, consumer)
                    except KafkaException as exc:
                        _log.warning("hooks.commit_failed", error=str(exc)[:200])
        finally:
            with contextlib.suppress(KafkaException):
                await asyncio.to_thread(self._commit, consumer)
            await asyncio.to_thread(consumer.close)
            self._consumer = None
            if server is not None:
                server.shutdown()

    async def _await_keys(self, message: Message) -> None:
        """An encrypted event whose key this process has not read yet: wait for it (the
        poller writes the key in the same transaction, just before the event)."""
        value = message.value()
        if self.keys is not None and value:
            await self.keys.await_keys(value)

    def _take(self, message: Message) -> None:
        error = message.error()
        if error is not None:
            denied = KafkaAuthorizationError.from_error(
                error,
                topic=message.topic(),
                group=self.kafka.topic(self.settings.group),
                group_operation="READ",
            )
            if denied is not None:
                raise denied  # permanent: waiting would hang with nothing delivered
            if error.code() != KafkaError._PARTITION_EOF:
                _log.warning("hooks.consume_error", code=error.code())
            return
        topic, partition, offset = message.topic() or "", message.partition() or 0, message.offset()
        assert offset is not None
        record = OriginalRecord(
            topic=topic,
            partition=partition,
            offset=offset,
            key=message.key(),
            value=message.value(),
            headers=record_headers(message),
        )
        try:
            envelope = decode(
                record.headers, record.value, fallback_id=f"{topic}/{partition}/{offset}"
            )
        except EnvelopeError as exc:
            _log.warning(
                "hooks.undecodable_event",
                topic=topic,
                partition=partition,
                offset=offset,
                kind=exc.kind,
            )
            self._tracker.seen(topic, partition, offset)
            return  # not an event of ours: nobody to deliver it to
        event = hook_event_of(envelope.type)
        subscriptions = (
            self.table.matching(event, workspace_of(envelope, record.key)) if event else []
        )
        if not subscriptions:
            self._tracker.seen(topic, partition, offset)
            return
        assert event is not None
        try:
            payload = hook_payload(envelope, record.key, self.keys)
        except PrivacyError:
            # Made with another master key: deliver it as it is on the topic.
            _log.warning(
                "hooks.undecryptable_event", topic=topic, partition=partition, offset=offset
            )
            payload = hook_payload(envelope, record.key)
        item = _Event(record, envelope, event, dumps(payload))
        self._tracker.add(topic, partition, offset)
        for subscription in subscriptions:
            subscriber = self._ensure(subscription)
            item.pending += 1
            delivery = _Delivery(item, subscription.id)
            self._metrics.queued.inc()
            if subscriber.queue.qsize() >= self.settings.queue_max:
                self._spawn(
                    self.dead_letter(delivery, "the subscriber's queue is full", attempts=0)
                )
            else:
                subscriber.queue.put_nowait(delivery)
        if item.pending == 0:
            self._tracker.done(topic, partition, offset)

    # --- delivering ----------------------------------------------------------------------------

    def finish(self, delivery: _Delivery, outcome: str) -> None:
        """One delivery ended; the event's offset may be committed once all of its did."""
        self._metrics.queued.dec()
        self._metrics.deliveries.labels(delivery.event.event, outcome).inc()
        item = delivery.event
        item.pending -= 1
        if item.pending <= 0:
            record = item.record
            self._tracker.done(record.topic, record.partition, record.offset)

    async def deliver(self, subscriber: _Subscriber, delivery: _Delivery) -> None:
        """Attempt until accepted, gone, or out of budget."""
        assert self._client is not None
        item = delivery.event
        attempt = 0
        last = ""
        deadline = delivery.first_at + self.settings.retry_deadline_s
        while True:
            if subscriber.gone:
                self.finish(delivery, "unsubscribed")
                return
            subscription = subscriber.subscription
            attempt += 1
            try:
                target: Target = await resolve_target(subscription.target_url, self.settings)
            except EgressRefusedError as exc:
                _log.warning("hooks.target_refused", hook=subscription.id, reason=str(exc))
                await self.dead_letter(delivery, f"target refused: {exc}", attempts=attempt)
                return
            await subscriber.bucket.take()
            headers = {
                "content-type": "application/json",
                "user-agent": "dastra-kafka-hooks",
                **standard_webhook_headers(
                    subscription.secret.get_secret_value(), item.envelope.id, item.body
                ),
            }
            retry_after: float | None = None
            started = time.monotonic()
            try:
                response = await post(self._client, target, item.body, headers, self.settings)
            except (httpx.HTTPError, EgressRefusedError) as exc:
                last = f"attempt {attempt}: {type(exc).__name__}"
                self._metrics.attempts.labels("error").inc()
            else:
                status = response.status_code
                self._metrics.attempts.labels(f"{status // 100}xx").inc()
                if 200 <= status < 300:
                    self._metrics.latency.observe(time.monotonic() - started)
                    self.finish(delivery, "delivered")
                    return
                if status == 410:
                    await self._unsubscribe(subscriber)
                    self.finish(delivery, "unsubscribed")
                    return
                last = f"attempt {attempt}: HTTP {status}"
                retry_after = parse_retry_after(response.headers.get("retry-after"))
            self._metrics.latency.observe(time.monotonic() - started)
            wait = backoff_delay(
                attempt,
                base=self.settings.backoff_s,
                cap=self.settings.backoff_max_s,
                retry_after=retry_after,
            )
            if attempt >= self.settings.max_attempts or time.monotonic() + wait > deadline:
                await self.dead_letter(
                    delivery, f"retry budget spent; last {last}", attempts=attempt
                )
                return
            _log.info("hooks.retry", hook=subscription.id, attempt=attempt, wait_s=round(wait, 2))
            await asyncio.sleep(wait)

    async def _unsubscribe(self, subscriber: _Subscriber) -> None:
        """410 Gone: the subscriber asked to be removed. Tombstone it for every replica."""
        if subscriber.gone:
            return
        subscription_id = subscriber.subscription.id
        subscriber.gone = True
        _log.info("hooks.gone", hook=subscription_id)
        try:
            await self._producer.produce(self.table.topic, key=subscription_id.encode(), value=None)
        except KafkaUnavailableError:
            _log.warning("hooks.tombstone_failed", hook=subscription_id)
        self.table.put(subscription_id, None)
        self._changed(subscription_id, None)

    async def dead_letter(self, delivery: _Delivery, reason: str, *, attempts: int) -> None:
        """The event could not be delivered to this subscriber: keep it on the DLQ."""
        message = f"subscription {delivery.subscription_id}: {reason}"
        key, value, headers = dead_letter(
            delivery.event.record,
            kind=ErrorKind.DELIVERY_FAILED,
            message=message,
            component=_COMPONENT,
            attempts=attempts,
        )
        headers.append(("dlq.hook.id", delivery.subscription_id.encode()))
        while True:
            try:
                await self._producer.produce(
                    self.kafka.topic(DEAD_LETTER), key=key, value=value, headers=list(headers)
                )
                break
            except KafkaUnavailableError:
                # Never commit past an event that is neither delivered nor dead-lettered.
                await asyncio.sleep(1.0)
        _log.warning(
            "hooks.dead_lettered",
            hook=delivery.subscription_id,
            topic=delivery.event.record.topic,
            partition=delivery.event.record.partition,
            offset=delivery.event.record.offset,
            attempts=attempts,
        )
        self.finish(delivery, "dead-lettered")
