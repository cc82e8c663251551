"""One workspace's poll cycle: read Dastra's changes since the cursor, then publish the events
and the advanced cursor in one Kafka transaction (its transactional.id fences a second poller).

Consumes Dastra's rights requests and tasks, the cursor from dastra.poller-state.v1. Produces
events on dastra.rights-requests.v1 and dastra.tasks.v1 and cursors on dastra.poller-state.v1.
Each event is sent in its own `send <topic>` span (a new trace) and carries it as
`ce_traceparent`, so a hook delivery or a recipe run it triggers joins that trace.

    poller = WorkspacePoller(...); await poller.cycle()
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from confluent_kafka import KafkaError, KafkaException, Producer, murmur2
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ValidationError

from bus.envelope import deterministic_id, encode_binary, new_event
from bus.errors import KafkaAuthorizationError, KafkaUnavailableError, TopicMissingError
from bus.privacy import PAYLOAD_EXTENSION, dataref_of
from bus.privacy.keystore import key_record
from bus.reading import read_latest
from bus.records.poller import Cursor, Mark
from bus.records.privacy_audit import audit_record
from bus.settings import KafkaSettings
from bus.topics import POLLER_STATE, PRIVACY_AUDIT, PRIVACY_KEYS
from bus.tracing import inject, sending
from dastra.client import DastraClient
from dastra.errors import DastraConfigError
from dastra.filters import Filter, Rule, RuleGroup
from dastra.models import Page
from producers.poller.items import (
    KIND,
    RESOURCES,
    ChangedItem,
    PollerFencedError,
    Resource,
    StartFrom,
    Stream,
    stream_stamp,
)
from producers.poller.privacy import EventPrivacy
from producers.poller.settings import PollerSettings
from producers.poller.window import LateWindow

__all__ = [
    "FENCING",
    "TRANSACTIONAL_ID_PREFIX",
    "PollerMetrics",
    "WorkspacePoller",
    "load_cursors",
]

_log = structlog.get_logger(__name__)


# The transactional.id of a workspace is KAFKA_TOPIC_PREFIX + this + the workspace id.
TRANSACTIONAL_ID_PREFIX = "dastra-poller-"

FENCING = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


class PollerMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "dastra_poller_events_published",
            "Events published by the poller",
            ["workspace", "topic", "type"],
            registry=registry,
        )
        self.late = Counter(
            "dastra_poller_late_items",
            "Items found behind the cursor (visible late) and published",
            ["workspace", "topic"],
            registry=registry,
        )
        self.cycles = Counter(
            "dastra_poller_cycles", "Completed poll cycles", ["workspace"], registry=registry
        )
        self.errors = Counter(
            "dastra_poller_errors", "Failed poll cycles", ["workspace", "kind"], registry=registry
        )
        self.last_success = Gauge(
            "dastra_poller_last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            ["workspace"],
            registry=registry,
        )
        self.interval = Gauge(
            "dastra_poller_interval_seconds",
            "Current wait between cycles",
            ["workspace"],
            registry=registry,
        )
        self.idle_interval = Gauge(
            "dastra_poller_idle_interval_seconds",
            "Wait between idle cycles: POLLER_INTERVAL_MAX_S, or longer so that idle polling of "
            "every workspace plans at most POLLER_IDLE_BUDGET_SHARE of the Dastra rate limit",
            registry=registry,
        )
        self.detected = Gauge(
            "dastra_poller_dastra_profile",
            "What the poller detected of Dastra at start-up and adapts to (value 1)",
            ["filter_case", "task_params"],
            registry=registry,
        )
        self.filter_shift = Gauge(
            "dastra_poller_filter_shift_seconds",
            "Offset added to filter dates: Dastra reads them as local time this far ahead of UTC",
            registry=registry,
        )


class WorkspacePoller:
    """Polls one workspace; owns its transactional producer."""

    def __init__(
        self,
        workspace_id: int,
        kafka: KafkaSettings,
        settings: PollerSettings,
        dastra: DastraClient,
        metrics: PollerMetrics,
        start: StartFrom,
        privacy: EventPrivacy,
    ) -> None:
        self.workspace_id = workspace_id
        self._privacy = privacy
        self._kafka = kafka
        self._settings = settings
        self._dastra = dastra
        self._source = f"dastra://workspaces/{workspace_id}"
        self._metrics = metrics
        self._start = start
        self._late_window = timedelta(seconds=settings.late_window_s)
        self._late_due: dict[tuple[str, str], float] = {}  # (resource, stream) -> monotonic
        # Late passes running in the background, each on a copy of the committed mark, so that
        # re-reading a large window (after a burst) never holds back new items. Their findings
        # are published by the stream's next batch.
        self._scans: dict[tuple[str, str], asyncio.Task[list[ChangedItem]]] = {}
        self._cursors: dict[str, Cursor] = {}
        self._partitions: dict[str, int] = {}
        self._producer: Producer | None = None
        self.wake = asyncio.Event()
        # Extra query parameters per collection (explicit includeChildren/archived for Tasks),
        # set by the owner from what it detected at start-up.
        self.list_params: dict[str, dict[str, Any]] = {}

    # --- Kafka side (blocking; called through asyncio.to_thread) -----------------------------

    def open(self) -> None:
        """Init the transactional producer: aborts what an older poller of this workspace left
        open and fences it. Cursors are restored afterwards, by the owner, for all workspaces."""
        transactional_id = self._kafka.topic(f"{TRANSACTIONAL_ID_PREFIX}{self.workspace_id}")
        producer = Producer(
            self._kafka.producer_config(
                **{
                    "transactional.id": transactional_id,
                    "transaction.timeout.ms": int(self._settings.transaction_timeout_s * 1000),
                    "linger.ms": 5,
                }
            )
        )
        topics = [self._kafka.topic(resource.topic) for resource in RESOURCES]
        try:
            producer.init_transactions(self._settings.transaction_timeout_s)
            # One topic per request: a topic we may not describe is then an authorization
            # error, not missing from the list.
            metadata = {topic: producer.list_topics(topic, timeout=15) for topic in topics}
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in FENCING:
                raise PollerFencedError(f"workspace {self.workspace_id}: {error.str()}") from exc
            if error.code() == KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED:
                raise KafkaAuthorizationError(
                    "transactional id", transactional_id, "WRITE"
                ) from exc
            raise KafkaUnavailableError(
                f"workspace {self.workspace_id}: Kafka did not let the poller start: {error.str()}"
            ) from exc
        for resource, topic in zip(RESOURCES, topics, strict=True):
            info = metadata[topic].topics.get(topic)
            if (
                info is not None
                and info.error is not None
                and info.error.code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,)
            ):
                raise KafkaAuthorizationError("topic", topic, "WRITE")
            if info is None or info.error is not None:
                raise TopicMissingError(topic)
            count = len(info.partitions)
            self._partitions[resource.topic] = murmur2(str(self.workspace_id).encode(), count)
        self._producer = producer

    def restore(self, cursors: dict[str, Cursor]) -> None:
        self._cursors = dict(cursors)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # A fenced producer raises on flush; nothing of ours is pending then.
            with contextlib.suppress(KafkaException):
                producer.flush(10)

    def _publish(
        self, resource: Resource, events: Sequence[tuple[str, ChangedItem]], cursor: Cursor
    ) -> None:
        """One transaction: the events, then the cursor. Blocking; runs in a worker thread.

        On any failure the transaction is aborted (or, when its state is unknown, the producer
        is re-created, which aborts it): the caller's cursor is then still the committed one.
        """
        producer = self._producer
        if producer is None:
            raise RuntimeError("the poller is not open")
        topic = self._kafka.topic(resource.topic)
        partition = self._partitions[resource.topic]
        privacy = self._privacy
        batch = privacy.batch()
        erasures = privacy.erasures(resource, self.workspace_id, [i for _k, i in events], batch)
        shaped = [
            (kind, item, privacy.shape(resource, self.workspace_id, item.raw, batch))
            for kind, item in events
        ]
        began = False
        try:
            producer.begin_transaction()
            began = True
            keys_topic = self._kafka.topic(PRIVACY_KEYS)
            for record in batch.records if batch is not None else []:
                key, value = key_record(record)
                producer.produce(keys_topic, key=key, value=value)
            for kind, item, data in shaped:
                with sending(topic, event_type=f"eu.dastra.{resource.entity}.{kind}") as span:
                    span.set_attribute("dastra_kafka.workspace.id", self.workspace_id)
                    self._produce_event(producer, topic, partition, resource, kind, item, data)
            for plan, audit in erasures:
                for key, tomb in plan.key_topic_records(audit.audit_id, audit.at):
                    producer.produce(keys_topic, key=key, value=tomb)
                audit_key, audit_value, audit_headers = audit_record(audit)
                producer.produce(
                    self._kafka.topic(PRIVACY_AUDIT),
                    key=audit_key,
                    value=audit_value,
                    headers=audit_headers,
                )
            producer.produce(
                self._kafka.topic(POLLER_STATE),
                key=cursor.key.encode(),
                value=cursor.model_dump_json().encode(),
            )
            self._commit(producer)
        except (KafkaException, BufferError) as exc:
            self._recover(producer, exc, began)
            raise
        if batch is not None:
            batch.commit()
        for plan, audit in erasures:
            assert privacy.store is not None
            for key, tomb in plan.key_topic_records(audit.audit_id, audit.at):
                privacy.store.ring.apply(key, tomb)
            _log.info(
                "poller.auto_erased",
                workspace=self.workspace_id,
                rights_request=plan.request.rights_request_id,
                audit_id=audit.audit_id,
                keys=len(plan.key_ids),
            )

    def _produce_event(
        self,
        producer: Producer,
        topic: str,
        partition: int,
        resource: Resource,
        kind: str,
        item: ChangedItem,
        data: Any,
    ) -> None:
        extensions = self._privacy.extensions(resource)
        headers, value = encode_binary(self._event(resource, kind, item, data, extensions))
        inject(headers)
        key = f"{self.workspace_id}:{item.id}".encode()
        try:
            producer.produce(topic, key=key, value=value, headers=headers, partition=partition)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                raise
            # An object larger than a Kafka record may be: publish a claim check instead of
            # blocking the workspace; consumers fetch the object from `dataref`.
            _log.warning(
                "poller.oversized_object",
                workspace=self.workspace_id,
                resource=resource.name,
                id=item.id,
            )
            thin = {
                "id": item.id,
                "dateCreation": item.raw.get("dateCreation"),
                "dateUpdate": item.raw.get("dateUpdate"),
                "dataref": dataref_of(resource.entity, self.workspace_id, item.id),
                "truncated": True,
            }
            headers, value = encode_binary(
                self._event(resource, kind, item, thin, {PAYLOAD_EXTENSION: "thin"})
            )
            inject(headers)
            producer.produce(topic, key=key, value=value, headers=headers, partition=partition)
        producer.poll(0)

    def _commit(self, producer: Producer) -> None:
        deadline = time.monotonic() + self._settings.transaction_timeout_s
        while True:
            try:
                producer.commit_transaction(max(1.0, deadline - time.monotonic()))
                return
            except KafkaException as exc:
                error: KafkaError = exc.args[0]
                # librdkafka: a retriable commit error means "call commit again"; it may still
                # complete in the background, so giving up here would risk a double publish.
                if error.retriable() and time.monotonic() < deadline:
                    continue
                raise

    def _recover(self, producer: Producer, exc: BaseException, began: bool) -> None:
        error = exc.args[0] if isinstance(exc, KafkaException) else None
        if isinstance(error, KafkaError) and error.code() in FENCING:
            raise PollerFencedError(
                f"workspace {self.workspace_id}: another poller took over ({error.str()})"
            ) from exc
        if isinstance(error, KafkaError) and not error.fatal() and began:
            try:
                producer.abort_transaction(self._settings.transaction_timeout_s)
                return
            except KafkaException as abort_exc:
                if abort_exc.args[0].code() in FENCING:
                    raise PollerFencedError(
                        f"workspace {self.workspace_id}: another poller took over"
                    ) from abort_exc
        if not began and error is None:
            return
        # The transaction's state is unknown (fatal error, failed abort): a new producer with
        # the same transactional.id aborts whatever the old one left open.
        _log.warning(
            "poller.producer_reset",
            workspace=self.workspace_id,
            error=error.str() if isinstance(error, KafkaError) else type(exc).__name__,
        )
        self._producer = None
        with contextlib.suppress(KafkaException):
            producer.flush(1)
        self.open()
        # A commit that failed with an unknown outcome may still have landed: trust Kafka.
        self._cursors = load_cursors(self._kafka, [self.workspace_id])[self.workspace_id]

    def _event(
        self,
        resource: Resource,
        kind: str,
        item: ChangedItem,
        data: Any,
        extensions: dict[str, str] | None = None,
    ) -> Any:
        if kind == "created":
            when = stream_stamp(item, "dateCreation")
            event_id = deterministic_id(
                "dastra", self.workspace_id, f"{resource.entity}.created", item.id
            )
        else:
            when = stream_stamp(item, "dateUpdate")
            stamp = item.raw.get("dateUpdate") or (when.isoformat() if when else "")
            event_id = deterministic_id(
                "dastra", self.workspace_id, f"{resource.entity}.updated", item.id, stamp
            )
        return new_event(
            type=f"eu.dastra.{resource.entity}.{kind}",
            source=self._source,
            id=event_id,
            subject=str(item.id),
            time=when or datetime.now(UTC),
            data=data,
            extensions=extensions,
        )

    # --- Dastra side -------------------------------------------------------------------------

    async def _page(
        self,
        resource: Resource,
        *,
        page: int,
        stream: Stream,
        asc: bool,
        rule: Filter | None,
    ) -> Page[ChangedItem]:
        try:
            return await self._dastra.collection_page(
                self.workspace_id,
                resource.collection,
                ChangedItem,
                page=page,
                size=self._settings.page_size,
                sort_by=stream,
                asc=asc,
                filters=rule,
                **self.list_params.get(resource.collection, {}),
            )
        except (
            ValidationError
        ) as exc:  # pragma: no cover - ChangedItem accepts any object with an id
            raise DastraConfigError(f"unexpected {resource.collection} page: {exc.title}") from exc

    async def _latest(self, resource: Resource, stream: Stream) -> Mark:
        """The newest item of a stream, as a mark: used for `--from now`."""
        rule = Rule(stream, "isNotNull") if stream == "dateUpdate" else None
        page = await self._page(resource, page=1, stream=stream, asc=False, rule=rule)
        stamps: list[tuple[datetime, int]] = []
        for item in page.items:
            stamp = stream_stamp(item, stream)
            if stamp is not None:
                stamps.append((stamp, item.id))
        if not stamps:
            return Mark(after=None)
        newest = max(s for s, _ in stamps)
        # Older items existed before we started: they are old, not late.
        return Mark(
            after=newest, seen=sorted(i for s, i in stamps if s == newest), recent_since=newest
        )

    async def _initial(self, resource: Resource) -> Cursor:
        if self._start == "now":
            created = await self._latest(resource, "dateCreation")
        elif self._start == "beginning":
            created = Mark(after=None)
        else:
            created = Mark(after=self._start, recent_since=self._start)
        return Cursor(
            workspace_id=self.workspace_id,
            resource=resource.name,
            created=created,
            # Updates are never backfilled: they start at the newest update there is now.
            updated=await self._latest(resource, "dateUpdate"),
            written_at=datetime.now(UTC),
        )

    async def _late(
        self, resource: Resource, stream: Stream, window: LateWindow
    ) -> list[ChangedItem]:
        """Items inside the late window that were not published: visible only now."""
        if window.after is None or self._late_window <= timedelta(0):
            return []
        low = window.after - self._late_window
        if window.recent_since is not None:
            low = max(low, window.recent_since)
        if low >= window.after:
            return []
        rule = RuleGroup(
            "And",
            [Rule(stream, "greaterThanInclusive", low), Rule(stream, "lessThan", window.after)],
        )
        found: list[ChangedItem] = []
        pages = max(1, -(-self._settings.late_max_tracked // self._settings.page_size))
        for number in range(1, pages + 1):
            page = await self._page(resource, page=number, stream=stream, asc=True, rule=rule)
            for item in page.items:
                stamp = stream_stamp(item, stream)
                if stamp is not None and window.is_new(item.id, stamp):
                    found.append(item)
            if len(page.items) < self._settings.page_size:
                break
        found.sort(key=lambda item: (stream_stamp(item, stream), item.id))
        return found

    async def _forward(
        self, resource: Resource, stream: Stream, window: LateWindow, budget: int
    ) -> tuple[list[ChangedItem], bool]:
        """Items past the newest timestamp, whole pages until at least `budget` (or the end),
        and whether more may remain.

        Keyset paging: each request asks for `stream >= after` from page 1, so items deleted
        or added while we read cannot shift an unread item past us. While `after` does not
        move (a run of items sharing one timestamp), the next page number is read instead.
        """
        found: list[ChangedItem] = []
        page_number = 1
        while True:
            rule: Filter | None
            if window.after is None:
                rule = Rule(stream, "isNotNull") if stream == "dateUpdate" else None
            else:
                rule = Rule(stream, "greaterThanInclusive", window.after)
            before = window.after
            page = await self._page(resource, page=page_number, stream=stream, asc=True, rule=rule)
            stamped = [
                (stamp, item) for item in page.items if (stamp := stream_stamp(item, stream))
            ]
            stamped.sort(key=lambda pair: (pair[0], pair[1].id))
            for stamp, item in stamped:
                if window.after is not None and stamp < window.after:
                    continue  # behind the cursor: the late pass looks there
                if window.is_new(item.id, stamp):
                    window.take(item.id, stamp)
                    found.append(item)
            if len(page.items) < self._settings.page_size:
                return found, False
            if len(found) >= budget:
                return found, True
            page_number = 1 if window.after != before else page_number + 1

    # --- one cycle ---------------------------------------------------------------------------

    async def cycle(self, stop: asyncio.Event, *, wait_late: bool = False) -> int:
        """Publish everything new in this workspace; return the number of events. Stops
        between batches when `stop` is set (what is published stays published). With
        `wait_late` (the last cycle of a bounded run), late passes run in the cycle and what
        they find is published in it; otherwise they run in the background."""
        published = 0
        for resource in RESOURCES:
            if stop.is_set():
                break
            cursor = self._cursors.get(resource.name)
            if cursor is None:
                cursor = await self._initial(resource)
                await asyncio.to_thread(self._publish, resource, [], cursor)
                self._cursors[resource.name] = cursor
                _log.info(
                    "poller.cursor_initialised",
                    workspace=self.workspace_id,
                    resource=resource.name,
                    start=str(self._start),
                )
            for stream, kind in KIND.items():
                published += await self._stream(resource, stream, kind, stop, wait_late)
        return published

    def cancel_scans(self) -> None:
        """Drop the late passes in flight (nothing of theirs was published)."""
        scans, self._scans = self._scans, {}
        for scan in scans.values():
            if not scan.done():
                scan.cancel()
            elif not scan.cancelled():
                scan.exception()  # retrieved: a failed pass of a stopped poller is no news

    async def _late_items(
        self, resource: Resource, stream: Stream, window: LateWindow, wait: bool
    ) -> list[ChangedItem]:
        """What a late pass found, to publish in the stream's next batch: a background pass
        that has ended, or (`wait`) one run now. Starts a background pass when one is due."""
        key = (resource.name, stream)
        scan = self._scans.get(key)
        if scan is not None and (scan.done() or wait):
            del self._scans[key]
            found = await scan  # a failed pass fails the cycle, like a failed page
        elif scan is None and wait and self._late_due.get(key, 0.0) <= time.monotonic():
            self._late_due[key] = time.monotonic() + self._settings.late_every_s
            found = await self._late(resource, stream, window)
        else:
            return []
        late: list[ChangedItem] = []
        for item in found:
            stamp = stream_stamp(item, stream)
            # Only the stream's own batches publish, one at a time, and never behind the
            # cursor: what the pass found unpublished still is.
            if stamp is not None and (item.id, stamp) not in window.recent:
                window.take(item.id, stamp)
                late.append(item)
        return late

    def _start_scan(self, resource: Resource, stream: Stream, kind: str) -> None:
        key = (resource.name, stream)
        if key in self._scans or self._late_due.get(key, 0.0) > time.monotonic():
            return
        self._late_due[key] = time.monotonic() + self._settings.late_every_s
        cursor = self._cursors[resource.name]
        # The committed mark: a batch in flight that failed must not hide its items from it.
        window = LateWindow(
            cursor.created if kind == "created" else cursor.updated, self._late_window
        )
        self._scans[key] = asyncio.ensure_future(self._late(resource, stream, window))

    async def _stream(
        self, resource: Resource, stream: Stream, kind: str, stop: asyncio.Event, wait_late: bool
    ) -> int:
        """Publish a stream's new items, one transaction per batch. The next batch is read
        while the previous one is published (pipelined): its pages depend only on the window,
        which moves as soon as a batch is read. A batch is published only after the previous
        one committed, and its cursor is kept only once its own transaction committed."""
        published = 0
        cursor = self._cursors[resource.name]
        window = LateWindow(
            cursor.created if kind == "created" else cursor.updated, self._late_window
        )
        late = await self._late_items(resource, stream, window, wait_late)
        pending: _Batch | None = None
        more = True
        try:
            while more and not stop.is_set():
                items, more = await self._forward(
                    resource, stream, window, self._settings.batch_size
                )
                if pending is not None:
                    batch, pending = pending, None
                    published += await self._settle(batch)
                items = late + items
                if not items or stop.is_set():
                    break
                if kind == "updated":
                    # An object stamped updated when it was created has not changed.
                    items = [
                        i
                        for i in items
                        if stream_stamp(i, "dateUpdate") != stream_stamp(i, "dateCreation")
                    ]
                cursor = cursor.model_copy(
                    update={
                        kind: window.mark(self._settings.late_max_tracked),
                        "written_at": datetime.now(UTC),
                    }
                )
                events = [(kind, item) for item in items]
                task = asyncio.ensure_future(
                    asyncio.to_thread(self._publish, resource, events, cursor)
                )
                pending = _Batch(resource, kind, cursor, len(items), len(late), task)
                late = []
        finally:
            if pending is not None:
                # Whatever stopped the loop, the transaction in flight ends first and, when it
                # committed, its cursor is kept: the next cycle must not publish it again.
                published += await self._settle(pending)
        if not wait_late and not stop.is_set():
            self._start_scan(resource, stream, kind)
        return published

    async def _settle(self, batch: _Batch) -> int:
        """Wait for a batch's transaction; keep its cursor once committed. Raises its error."""
        await asyncio.shield(batch.task)
        resource, kind = batch.resource, batch.kind
        self._cursors[resource.name] = batch.cursor
        labels = (str(self.workspace_id), resource.topic)
        self._metrics.events.labels(*labels, f"eu.dastra.{resource.entity}.{kind}").inc(
            batch.events
        )
        if batch.late:
            self._metrics.late.labels(*labels).inc(batch.late)
        _log.info(
            "poller.published",
            workspace=self.workspace_id,
            resource=resource.name,
            kind=kind,
            events=batch.events,
            late=batch.late,
        )
        return batch.events


@dataclass(frozen=True)
class _Batch:
    """A batch whose transaction is in flight, and the cursor it commits."""

    resource: Resource
    kind: str
    cursor: Cursor
    events: int
    late: int
    task: asyncio.Future[None]


def load_cursors(kafka: KafkaSettings, workspaces: Sequence[int]) -> dict[int, dict[str, Cursor]]:
    """The latest committed cursor of each resource of the given workspaces."""
    wanted = {f"{ws}:{resource.name}".encode() for ws in workspaces for resource in RESOURCES}
    latest = read_latest(kafka, kafka.topic(POLLER_STATE), timeout=90, keep=wanted.__contains__)
    cursors: dict[int, dict[str, Cursor]] = {ws: {} for ws in workspaces}
    for value in latest.values():
        cursor = Cursor.model_validate_json(value)
        cursors[cursor.workspace_id][cursor.resource] = cursor
    return cursors
