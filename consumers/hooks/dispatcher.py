"""The hook dispatcher: one `SubscriptionReader` per subscription, kept in step with the
compacted `dastra.hook-subscriptions.v1` (every dispatcher reads every subscription).

Consumes the subscription table; each reader consumes the event topics in its own consumer
group. Produces, through the readers, the deliveries and dead letters; tombstones on
`dastra.hook-subscriptions.v1` for subscribers that answer 410 Gone; the metrics on
HOOKS_METRICS_PORT. A gone subscription's reader stops and its consumer group is deleted.

    async with HookDispatcher(settings.kafka, settings.hooks) as dispatcher:
        await dispatcher.run(stop=stop_event)
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType
from typing import Self

import httpx
import structlog
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from prometheus_client import CollectorRegistry, start_http_server

from bus.errors import KafkaAuthorizationError, KafkaUnavailableError
from bus.groups import delete_group
from bus.hooks.egress import client_for
from bus.hooks.events import EVENT_TOPICS, event_keys
from bus.hooks.settings import HooksSettings
from bus.hooks.subscriptions import SubscriptionTable
from bus.metrics import role_registry
from bus.producer import AsyncProducer
from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings, PrivacySettings
from consumers.hooks.delivery import Deliverer, Recipient
from consumers.hooks.metrics import HookMetrics
from consumers.hooks.subscriber import ReaderContext, SubscriptionReader, group_of

__all__ = ["HookDispatcher"]

_log = structlog.get_logger(__name__)

_RESTART_AFTER_S = 5.0


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
        self.registry = registry or role_registry()
        self._metrics = HookMetrics(self.registry)
        self.table = SubscriptionTable(kafka)
        self._producer = AsyncProducer(kafka, timeout_s=30.0, linger_ms=5)
        self._client = client
        self._owns_client = client is None
        self._context: ReaderContext | None = None
        self.readers: dict[str, SubscriptionReader] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        # A refusal no retry can cure (a missing ACL): `run` raises it.
        self._fatal: KafkaAuthorizationError | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._chores: set[asyncio.Task[None]] = set()

    # --- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._loop = asyncio.get_running_loop()
        self._producer.open()
        if self._client is None:
            self._client = client_for(self.settings)
        if self.keys is not None:
            await asyncio.to_thread(self.keys.start)
        deliverer = Deliverer(
            self.kafka,
            self.settings,
            self._client,
            self._producer,
            self._metrics,
            self._unsubscribe,
        )
        self._context = ReaderContext(
            self.kafka, self.settings, deliverer, self._metrics, self.keys
        )
        await asyncio.to_thread(self.table.start)
        self.table.listen(self._on_change)
        for subscription in self.table.all():
            self._changed(subscription.id, subscription)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # From here no change of subscription starts or retires a reader, and the table's reader
        # stops while the subscription readers commit and leave their groups: two bounded waits
        # side by side, not one after the other.
        self._loop = None
        table_stopped = asyncio.create_task(asyncio.to_thread(self.table.stop))
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for chore in list(self._chores):
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await chore
        await table_stopped
        if self.keys is not None:
            await asyncio.to_thread(self.keys.stop)
        if self._owns_client and self._client is not None:
            await self._client.aclose()
        await asyncio.to_thread(self._producer.close)

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        ready: asyncio.Event | None = None,
        metrics: bool = True,
    ) -> None:
        """Serve the metrics until `stop` is set (the readers run from `__aenter__` to
        `__aexit__`). `ready` is set once every known subscription has its partitions and
        their start positions."""
        stop = stop or asyncio.Event()
        server = None
        if metrics and self.settings.metrics_port:
            server, _thread = start_http_server(
                self.settings.metrics_port, addr=self._host, registry=self.registry
            )
        try:
            while not stop.is_set():
                if self._fatal is not None:
                    raise self._fatal
                readers = self.readers.values()
                if ready is not None and all(r.assigned.is_set() for r in readers):
                    ready.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.1):
                        await stop.wait()
        finally:
            if server is not None:
                server.shutdown()

    # --- subscriptions -------------------------------------------------------------------------

    def _on_change(self, key: str, subscription: HookSubscription | None) -> None:
        loop = self._loop
        if loop is not None:
            loop.call_soon_threadsafe(self._changed, key, subscription)

    def _changed(self, key: str, subscription: HookSubscription | None) -> None:
        if self._loop is None:  # closing
            return
        if subscription is None:
            self._retire(key)
        elif key in self._tasks:
            reader = self.readers.get(key)
            if reader is not None:
                reader.update(subscription)
        else:
            self._tasks[key] = asyncio.create_task(self._supervise(key), name=f"hook-{key}")
        self._metrics.subscriptions.set(len(self._tasks))

    async def _supervise(self, key: str) -> None:
        """Run the subscription's reader; restart it if it fails (Kafka away, say)."""
        assert self._context is not None
        while True:
            subscription = self.table.get(key)
            if subscription is None:
                return
            reader = SubscriptionReader(self._context, subscription)
            self.readers[key] = reader
            try:
                await reader.run()
            except (GroupAuthorizationFailedError, TopicAuthorizationFailedError) as exc:
                # Permanent until an operator grants the ACL: retrying would deliver nothing.
                denied = isinstance(exc, GroupAuthorizationFailedError)
                self._fatal = (
                    KafkaAuthorizationError("group", reader.group, "READ")
                    if denied
                    else KafkaAuthorizationError(
                        "topic",
                        " or ".join(self.kafka.topic(t) for t in EVENT_TOPICS.values()),
                        "READ",
                    )
                )
                return
            except Exception:
                _log.exception("hooks.reader_crashed", hook=key)
            await asyncio.sleep(_RESTART_AFTER_S)

    def _retire(self, key: str) -> None:
        """A subscription that is gone: its deliveries end, its reader stops, its consumer
        group (the position) is deleted once no reader of it is left."""
        reader = self.readers.pop(key, None)
        if reader is not None:
            reader.gone = True
        task = self._tasks.pop(key, None)
        if task is None:
            return
        task.cancel()
        self._metrics.forget(key)
        group = group_of(self.kafka, self.settings, key)

        async def _delete_group() -> None:
            await asyncio.gather(task, return_exceptions=True)
            await asyncio.to_thread(self._delete_group, group, key)

        chore = asyncio.create_task(_delete_group())
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    def _delete_group(self, group: str, key: str) -> None:
        try:
            deleted = delete_group(self.kafka, group)
        except (KafkaUnavailableError, KafkaAuthorizationError) as exc:
            deleted = False
            _log.info("hooks.group_not_deleted", hook=key, error=str(exc)[:200])
        if not deleted:
            # Another dispatcher still in the group deletes it when it leaves; otherwise the
            # broker expires its offsets (offsets.retention.minutes).
            _log.info("hooks.group_kept", hook=key)

    async def _unsubscribe(self, recipient: Recipient) -> None:
        """410 Gone: the subscriber asked to be removed. Tombstone it for every replica."""
        if recipient.gone:
            return
        subscription_id = recipient.subscription.id
        recipient.gone = True
        _log.info("hooks.gone", hook=subscription_id)
        try:
            await self._producer.produce(self.table.topic, key=subscription_id.encode(), value=None)
        except KafkaUnavailableError:
            _log.warning("hooks.tombstone_failed", hook=subscription_id)
        self.table.put(subscription_id, None)
        # Let the worker that got the 410 finish its own bookkeeping before the reader stops.
        asyncio.get_running_loop().call_soon(self._changed, subscription_id, None)
