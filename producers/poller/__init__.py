"""Change poller: Dastra changes become Kafka events, exactly once.

Consumes Dastra's API per workspace (`GET /v1/ws/{ws}/DataSubjectRequests` and `.../Tasks`, in
`dateCreation` and `dateUpdate` order) and `dastra.poller-triggers.v1` (poll a workspace now).
Produces `eu.dastra.rights_request.created|updated` on `dastra.rights-requests.v1` and
`eu.dastra.task.created|updated` on `dastra.tasks.v1` (CloudEvents binary mode, key
`<workspaceId>:<id>`, data = the Dastra object in the topic's payload mode, PRIVACY_MODE_*: full
= unchanged; redacted, thin and encrypted minimise personal data, see `bus/privacy.py`; the
mode travels in the `ce_dastrapayload` header when not full), and its cursor on the compacted
`dastra.poller-state.v1`, in one Kafka transaction per batch. In the same transaction: the data
keys and aliases on `dastra.privacy-keys.v1` that encrypted events need, and, with
PRIVACY_AUTO_ERASE, the erasure of a subject whose Erasure rights request is closed (key
tombstones, markers, an event on `dastra.privacy-audit.v1`). A fixed `transactional.id` per
workspace fences a second poller of the same workspace.

All events of a workspace go to one partition of their topic (chosen from the workspace id), so a
consumer sees them in creation order per workspace, as design §4 promises.

The cursor of each stream (creations, updates) is a keyset position: the newest timestamp
published, the ids published at exactly that timestamp, and the (id, timestamp) pairs published
within `late_window_s` before it. Each cycle first re-reads that window and publishes what it had
not seen (items that became visible late), then reads forward from the newest timestamp.

    async with DastraClient(settings.dastra) as dastra:
        poller = Poller(settings.kafka, settings.poller, catalogue, dastra, workspaces=[12])
        summary = await poller.run(stop=stop_event, max_cycles=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition, murmur2
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import ValidationError

from bus.envelope import deterministic_id, encode_binary, new_event
from bus.erasure import ErasureAudit, ErasurePlan, ErasureRequest, audit_record, plan_erasure
from bus.errors import KafkaUnavailableError, TailerError, TopicMissingError
from bus.keystore import KeyStore, key_record, master_key_of
from bus.privacy import PAYLOAD_EXTENSION, Batch, PrivacyError, dataref_of, shape
from bus.reading import end_offsets, read_latest
from bus.records.poller import Cursor, Mark, PollTrigger, Recent, trigger_record
from bus.settings import KafkaSettings, PayloadMode, PrivacySettings
from bus.topics import (
    POLLER_STATE,
    POLLER_TRIGGERS,
    PRIVACY_AUDIT,
    PRIVACY_KEYS,
    RIGHTS_REQUESTS,
    TASKS,
    TopicCatalogue,
)
from dastra.client import DastraClient
from dastra.errors import (
    DastraConfigError,
    DastraError,
    DastraRateLimited,
    DastraRejected,
    DastraRetryable,
)
from dastra.filters import Filter, Rule, RuleGroup
from dastra.models import DastraModel, Page
from producers.poller.settings import PollerSettings

__all__ = [
    "RESOURCES",
    "ChangedItem",
    "Cursor",
    "Mark",
    "PollSummary",
    "PollTrigger",
    "Poller",
    "PollerFencedError",
    "Recent",
    "Resource",
    "StartFrom",
    "parse_start",
    "trigger_record",
]

_log = structlog.get_logger(__name__)

StartFrom = Literal["now", "beginning"] | datetime
_FENCING = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)


def parse_start(text: str) -> StartFrom:
    """`now`, `beginning` or an ISO 8601 date/time (UTC when no zone is given)."""
    if text in ("now", "beginning"):
        return text  # type: ignore[return-value]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--from takes now, beginning or an ISO date, not {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class ChangedItem(DastraModel):
    """What the poller needs of a Dastra object; every other member is kept, unvalidated, in
    `.raw`, so one odd value elsewhere in an object cannot block a workspace."""

    id: int
    date_creation: datetime | None = None
    date_update: datetime | None = None


@dataclass(frozen=True)
class Resource:
    """One kind of Dastra object the poller watches."""

    name: str  # part of the cursor key: "<workspaceId>:<name>"
    topic: str  # catalogue name of the event topic
    entity: str  # in event types: eu.dastra.<entity>.created; the kind in bus/privacy.py
    collection: str  # Dastra's collection: /v1/ws/{ws}/<collection>


RESOURCES: tuple[Resource, ...] = (
    Resource("rights-requests", RIGHTS_REQUESTS, "rights_request", "DataSubjectRequests"),
    Resource("tasks", TASKS, "task", "Tasks"),
)

_Stream = Literal["dateCreation", "dateUpdate"]
_KIND: dict[_Stream, Literal["created", "updated"]] = {
    "dateCreation": "created",
    "dateUpdate": "updated",
}


class PollerFencedError(RuntimeError):
    """Another poller took over this workspace (same transactional.id); this one must stop."""


@dataclass
class PollSummary:
    """What a run did, per workspace: events published, cycles, errors, and why it stopped."""

    events: dict[int, int] = field(default_factory=dict)
    cycles: dict[int, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    fenced: list[int] = field(default_factory=list)
    # Workspaces stopped by an error that waiting cannot fix (credentials, unknown workspace).
    failed: dict[int, str] = field(default_factory=dict)
    # The kind of the last error of each workspace whose last cycle failed.
    last_error: dict[int, str] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "events": {str(k): v for k, v in self.events.items()},
            "cycles": {str(k): v for k, v in self.cycles.items()},
            "errors": {str(k): v for k, v in self.errors.items()},
            "fenced": self.fenced,
            "failed": {str(k): v for k, v in self.failed.items()},
            "last_error": {str(k): v for k, v in self.last_error.items()},
        }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _stamp(item: ChangedItem, stream: _Stream) -> datetime | None:
    return _utc(item.date_creation if stream == "dateCreation" else item.date_update)


class _Metrics:
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


class _Window:
    """Working copy of a `Mark` while a stream is scanned."""

    def __init__(self, mark: Mark, late_window: timedelta) -> None:
        self.after = mark.after
        self.seen = set(mark.seen)
        self.recent = {(r.id, r.at) for r in mark.recent}
        if mark.after is not None:
            # The ids at `after` were published (or, for `--from now`, are old): never late.
            self.recent |= {(item_id, mark.after) for item_id in mark.seen}
        self.recent_since = mark.recent_since
        self._late_window = late_window

    def is_new(self, item_id: int, stamp: datetime) -> bool:
        if self.after is None or stamp > self.after:
            return True
        if stamp == self.after:
            return item_id not in self.seen
        return self.covers(stamp) and (item_id, stamp) not in self.recent

    def covers(self, stamp: datetime) -> bool:
        """Is `stamp` inside the late window, where `recent` says what was published?"""
        if self.after is None:
            return False
        low = self.after - self._late_window
        if self.recent_since is not None:
            low = max(low, self.recent_since)
        return stamp >= low

    def take(self, item_id: int, stamp: datetime) -> None:
        if self.after is None or stamp > self.after:
            self.after, self.seen = stamp, {item_id}
        elif stamp == self.after:
            self.seen.add(item_id)
        self.recent.add((item_id, stamp))

    def mark(self, limit: int) -> Mark:
        recent = sorted(self.recent, key=lambda pair: (pair[1], pair[0]))
        since = self.recent_since
        if self.after is not None:
            low = self.after - self._late_window
            recent = [pair for pair in recent if pair[1] >= low]
        if len(recent) > limit:
            # Forget the oldest; the window is complete only after the newest one forgotten.
            dropped = recent[len(recent) - limit - 1][1]
            recent = [pair for pair in recent if pair[1] > dropped]
            since = dropped + timedelta(microseconds=1)
        return Mark(
            after=self.after,
            seen=sorted(self.seen),
            recent=[Recent(id=i, at=at) for i, at in recent],
            recent_since=since,
        )


_Erasure = tuple[ErasurePlan, ErasureAudit]


class _EventPrivacy:
    """The payload mode of each event topic, and the keys and erasures it needs."""

    def __init__(self, kafka: KafkaSettings, privacy: PrivacySettings) -> None:
        self.settings = privacy
        self.modes: dict[str, PayloadMode] = {r.topic: privacy.mode_of(r.topic) for r in RESOURCES}
        self._hash_key = privacy.hash_key_bytes()
        if (
            "redacted" in self.modes.values()
            and privacy.redaction == "hash"
            and self._hash_key is None
        ):
            raise PrivacyError("PRIVACY_MODE_*=redacted needs PRIVACY_HASH_KEY")
        self.store: KeyStore | None = None
        if "encrypted" in self.modes.values() or privacy.auto_erase:
            master_key_of(privacy, "the encrypted payload mode (or PRIVACY_AUTO_ERASE)")
            self.store = KeyStore(kafka, privacy, name="poller")

    def start(self) -> None:
        if self.store is None:
            return
        try:
            self.store.start()
        except TailerError as exc:
            if "does not exist" in str(exc):
                raise TopicMissingError(self.store.topic) from exc
            raise KafkaUnavailableError(f"the key topic could not be read: {exc}") from exc

    def stop(self) -> None:
        if self.store is not None:
            self.store.stop()

    def batch(self) -> Batch | None:
        return self.store.encryptor().batch() if self.store is not None else None

    def extensions(self, resource: Resource) -> dict[str, str] | None:
        mode = self.modes[resource.topic]
        return None if mode == "full" else {PAYLOAD_EXTENSION: mode}

    def shape(self, resource: Resource, workspace_id: int, raw: Any, batch: Batch | None) -> Any:
        return shape(
            self.modes[resource.topic],
            resource.entity,
            raw,
            workspace_id=workspace_id,
            hash_key=self._hash_key,
            remove=self.settings.redaction == "remove",
            batch=batch,
        )

    def erasures(
        self,
        resource: Resource,
        workspace_id: int,
        items: Sequence[ChangedItem],
        batch: Batch | None,
    ) -> list[_Erasure]:
        """Closed Erasure rights requests in `items` not erased yet (PRIVACY_AUTO_ERASE): their
        plans, and their subjects marked erased in `batch` so this batch seals nothing new."""
        if not self.settings.auto_erase or resource.name != "rights-requests":
            return []
        assert self.store is not None and self.store.master is not None and batch is not None
        master, ring = self.store.master, self.store.ring
        found: list[_Erasure] = []
        planned: set[str] = set()
        for item in items:
            raw = item.raw
            purposes = raw.get("purposes") or []
            if raw.get("state") != "Closed" or "Erasure" not in purposes:
                continue
            request = ErasureRequest(
                "rights-request", f"rr:{workspace_id}:{item.id}", workspace_id, item.id
            )
            target = master.subject_id(request.ref)
            if ring.is_erased(target) or target in planned:
                continue
            plan = plan_erasure(ring, master, request)
            planned.add(target)
            for subject in plan.subjects:
                batch.mark_erased(subject)
            audit = plan.audit(
                audit_id=str(uuid.uuid4()), at=datetime.now(UTC), by="poller", trigger="auto"
            )
            found.append((plan, audit))
        return found


class _WorkspacePoller:
    """Polls one workspace; owns its transactional producer."""

    def __init__(
        self,
        workspace_id: int,
        kafka: KafkaSettings,
        settings: PollerSettings,
        dastra: DastraClient,
        metrics: _Metrics,
        start: StartFrom,
        privacy: _EventPrivacy,
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
        self._cursors: dict[str, Cursor] = {}
        self._partitions: dict[str, int] = {}
        self._producer: Producer | None = None
        self.wake = asyncio.Event()

    # --- Kafka side (blocking; called through asyncio.to_thread) -----------------------------

    def open(self) -> None:
        """Init the transactional producer: aborts what an older poller of this workspace left
        open and fences it. Cursors are restored afterwards, by the owner, for all workspaces."""
        producer = Producer(
            self._kafka.confluent_config(
                **{
                    "transactional.id": self._kafka.topic(f"dastra-poller-{self.workspace_id}"),
                    "transaction.timeout.ms": int(self._settings.transaction_timeout_s * 1000),
                    "linger.ms": 5,
                    "compression.type": "lz4",
                }
            )
        )
        try:
            producer.init_transactions(self._settings.transaction_timeout_s)
            metadata = producer.list_topics(timeout=15)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.code() in _FENCING:
                raise PollerFencedError(f"workspace {self.workspace_id}: {error.str()}") from exc
            raise KafkaUnavailableError(
                f"workspace {self.workspace_id}: Kafka did not let the poller start: {error.str()}"
            ) from exc
        for resource in RESOURCES:
            topic = self._kafka.topic(resource.topic)
            if topic not in metadata.topics or metadata.topics[topic].error is not None:
                raise TopicMissingError(topic)
            count = len(metadata.topics[topic].partitions)
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
        if isinstance(error, KafkaError) and error.code() in _FENCING:
            raise PollerFencedError(
                f"workspace {self.workspace_id}: another poller took over ({error.str()})"
            ) from exc
        if isinstance(error, KafkaError) and not error.fatal() and began:
            try:
                producer.abort_transaction(self._settings.transaction_timeout_s)
                return
            except KafkaException as abort_exc:
                if abort_exc.args[0].code() in _FENCING:
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
        self._cursors = _load_cursors(self._kafka, [self.workspace_id])[self.workspace_id]

    def _event(
        self,
        resource: Resource,
        kind: str,
        item: ChangedItem,
        data: Any,
        extensions: dict[str, str] | None = None,
    ) -> Any:
        if kind == "created":
            when = _stamp(item, "dateCreation")
            event_id = deterministic_id(
                "dastra", self.workspace_id, f"{resource.entity}.created", item.id
            )
        else:
            when = _stamp(item, "dateUpdate")
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
        stream: _Stream,
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
            )
        except (
            ValidationError
        ) as exc:  # pragma: no cover - ChangedItem accepts any object with an id
            raise DastraConfigError(f"unexpected {resource.collection} page: {exc.title}") from exc

    async def _latest(self, resource: Resource, stream: _Stream) -> Mark:
        """The newest item of a stream, as a mark: used for `--from now`."""
        rule = Rule(stream, "isNotNull") if stream == "dateUpdate" else None
        page = await self._page(resource, page=1, stream=stream, asc=False, rule=rule)
        stamps: list[tuple[datetime, int]] = []
        for item in page.items:
            stamp = _stamp(item, stream)
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
        self, resource: Resource, stream: _Stream, window: _Window
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
                stamp = _stamp(item, stream)
                if stamp is not None and window.is_new(item.id, stamp):
                    found.append(item)
            if len(page.items) < self._settings.page_size:
                break
        found.sort(key=lambda item: (_stamp(item, stream), item.id))
        for item in found:
            stamp = _stamp(item, stream)
            assert stamp is not None
            window.take(item.id, stamp)
        return found

    async def _forward(
        self, resource: Resource, stream: _Stream, window: _Window, budget: int
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
            stamped = [(stamp, item) for item in page.items if (stamp := _stamp(item, stream))]
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

    async def cycle(self, stop: asyncio.Event) -> int:
        """Publish everything new in this workspace; return the number of events. Stops
        between batches when `stop` is set (what is published stays published)."""
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
            for stream, kind in _KIND.items():
                published += await self._stream(resource, stream, kind, stop)
        return published

    async def _stream(
        self, resource: Resource, stream: _Stream, kind: str, stop: asyncio.Event
    ) -> int:
        published = 0
        late_pass = self._late_due.get((resource.name, stream), 0.0) <= time.monotonic()
        more = True
        while more and not stop.is_set():
            cursor = self._cursors[resource.name]
            mark = cursor.created if kind == "created" else cursor.updated
            window = _Window(mark, self._late_window)
            late: list[ChangedItem] = []
            if late_pass:
                late = await self._late(resource, stream, window)
                late_pass = False
                self._late_due[(resource.name, stream)] = (
                    time.monotonic() + self._settings.late_every_s
                )
            items, more = await self._forward(resource, stream, window, self._settings.batch_size)
            items = late + items
            if not items:
                break
            if kind == "updated":
                # An object stamped updated when it was created has not changed.
                items = [i for i in items if _stamp(i, "dateUpdate") != _stamp(i, "dateCreation")]
            moved = cursor.model_copy(
                update={
                    kind: window.mark(self._settings.late_max_tracked),
                    "written_at": datetime.now(UTC),
                }
            )
            await asyncio.to_thread(
                self._publish, resource, [(kind, item) for item in items], moved
            )
            self._cursors[resource.name] = moved
            published += len(items)
            labels = (str(self.workspace_id), resource.topic)
            self._metrics.events.labels(*labels, f"eu.dastra.{resource.entity}.{kind}").inc(
                len(items)
            )
            if late:
                self._metrics.late.labels(*labels).inc(len(late))
            _log.info(
                "poller.published",
                workspace=self.workspace_id,
                resource=resource.name,
                kind=kind,
                events=len(items),
                late=len(late),
            )
        return published


def _load_cursors(kafka: KafkaSettings, workspaces: Sequence[int]) -> dict[int, dict[str, Cursor]]:
    """The latest committed cursor of each resource of the given workspaces."""
    wanted = {f"{ws}:{resource.name}".encode() for ws in workspaces for resource in RESOURCES}
    latest = read_latest(kafka, kafka.topic(POLLER_STATE), timeout=90, keep=wanted.__contains__)
    cursors: dict[int, dict[str, Cursor]] = {ws: {} for ws in workspaces}
    for value in latest.values():
        cursor = Cursor.model_validate_json(value)
        cursors[cursor.workspace_id][cursor.resource] = cursor
    return cursors


class Poller:
    """Polls every configured workspace until stopped (or for a bounded number of cycles)."""

    def __init__(
        self,
        kafka: KafkaSettings,
        settings: PollerSettings,
        catalogue: TopicCatalogue,
        dastra: DastraClient,
        *,
        workspaces: Sequence[int],
        start: StartFrom | None = None,
        host: str = "127.0.0.1",
        registry: CollectorRegistry | None = None,
        privacy: PrivacySettings | None = None,
    ) -> None:
        """Raises `ValueError` (`PrivacyError` for the privacy settings) on a bad setup."""
        if not workspaces:
            raise ValueError("the poller needs at least one workspace (DASTRA_WORKSPACE_ID)")
        missing = [r.topic for r in RESOURCES if r.topic not in catalogue.names]
        if missing:
            raise ValueError(f"{catalogue.path} does not declare {', '.join(missing)}")
        self._kafka = kafka
        self._settings = settings
        self._host = host
        self.registry = registry or CollectorRegistry()
        self._metrics = _Metrics(self.registry)
        chosen = start if start is not None else parse_start(settings.start_from)
        self._privacy = _EventPrivacy(kafka, privacy or PrivacySettings())
        self._workspaces = {
            ws: _WorkspacePoller(ws, kafka, settings, dastra, self._metrics, chosen, self._privacy)
            for ws in dict.fromkeys(workspaces)
        }

    def poll_now(self, workspace_id: int) -> None:
        """Make the poller poll a workspace at once (no-op for a workspace it does not watch)."""
        worker = self._workspaces.get(workspace_id)
        if worker is not None:
            worker.wake.set()

    async def run(
        self,
        *,
        stop: asyncio.Event | None = None,
        max_cycles: int | None = None,
        on_cycle: Callable[[int, int], None] | None = None,
        ready: asyncio.Event | None = None,
    ) -> PollSummary:
        """Poll until `stop` is set or each workspace ran `max_cycles` cycles. `ready` is set
        once every workspace's producer is initialised (older pollers fenced) and its cursor
        restored. Raises `PollerFencedError`, `KafkaUnavailableError` or `TopicMissingError`
        (bus/errors.py) when it cannot start."""
        stop = stop or asyncio.Event()
        summary = PollSummary()
        metrics_server = None
        triggers = _TriggerListener(self._kafka, self, asyncio.get_running_loop())
        try:
            if self._settings.metrics_port:
                metrics_server, _thread = start_http_server(
                    self._settings.metrics_port, addr=self._host, registry=self.registry
                )
            for worker in self._workspaces.values():
                await asyncio.to_thread(worker.open)
            await asyncio.to_thread(self._privacy.start)
            cursors = await asyncio.to_thread(_load_cursors, self._kafka, list(self._workspaces))
            for ws, worker in self._workspaces.items():
                worker.restore(cursors[ws])
            await asyncio.to_thread(triggers.start)
            if ready is not None:
                ready.set()
            await asyncio.gather(
                *(
                    self._loop(worker, stop, max_cycles, summary, on_cycle)
                    for worker in self._workspaces.values()
                )
            )
        finally:
            await asyncio.to_thread(triggers.stop)
            for worker in self._workspaces.values():
                await asyncio.to_thread(worker.close)
            await asyncio.to_thread(self._privacy.stop)
            if metrics_server is not None:
                metrics_server.shutdown()
                metrics_server.server_close()
        return summary

    async def _loop(
        self,
        worker: _WorkspacePoller,
        stop: asyncio.Event,
        max_cycles: int | None,
        summary: PollSummary,
        on_cycle: Callable[[int, int], None] | None,
    ) -> None:
        ws = worker.workspace_id
        label = str(ws)
        interval = self._settings.interval_min_s
        cycles = 0
        summary.events.setdefault(ws, 0)
        summary.errors.setdefault(ws, 0)
        while not stop.is_set() and (max_cycles is None or cycles < max_cycles):
            worker.wake.clear()
            try:
                published = await worker.cycle(stop)
            except PollerFencedError as exc:
                _log.error("poller.fenced", workspace=ws, error=str(exc))
                summary.fenced.append(ws)
                self._metrics.errors.labels(label, "fenced").inc()
                return
            except (DastraRejected, DastraConfigError) as exc:
                # Credentials, permissions, an unknown workspace: waiting will not fix these.
                kind = type(exc).__name__
                _log.error("poller.stopped", workspace=ws, error=kind, detail=str(exc)[:300])
                summary.failed[ws] = f"{kind}: {exc}"[:300]
                summary.errors[ws] += 1
                self._metrics.errors.labels(label, kind).inc()
                return
            except (DastraError, KafkaException, BufferError) as exc:
                kind = type(exc).__name__
                summary.errors[ws] += 1
                summary.last_error[ws] = kind
                self._metrics.errors.labels(label, kind).inc()
                interval = min(interval * 2, self._settings.interval_max_s)
                wait = interval
                if isinstance(exc, DastraRateLimited) and exc.retry_after:
                    wait = max(wait, exc.retry_after)
                _log.warning(
                    "poller.cycle_failed",
                    workspace=ws,
                    error=kind,
                    retryable=isinstance(exc, (DastraRetryable, KafkaException)),
                    detail=str(exc)[:300],
                    retry_in_s=round(wait, 2),
                )
            else:
                summary.events[ws] += published
                summary.last_error.pop(ws, None)
                self._metrics.cycles.labels(label).inc()
                self._metrics.last_success.labels(label).set(time.time())
                interval = (
                    self._settings.interval_min_s
                    if published
                    else min(interval * 2, self._settings.interval_max_s)
                )
                wait = interval
                if on_cycle is not None:
                    on_cycle(ws, published)
            cycles += 1
            summary.cycles[ws] = cycles
            self._metrics.interval.labels(label).set(wait)
            if max_cycles is not None and cycles >= max_cycles:
                break
            waker = asyncio.ensure_future(worker.wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait(
                    {waker, stopper}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                waker.cancel()
                stopper.cancel()


class _TriggerListener:
    """Reads dastra.poller-triggers.v1 from its end in a thread and wakes the workspace's loop.
    `start` and `stop` block: call them through asyncio.to_thread."""

    def __init__(
        self, kafka: KafkaSettings, poller: Poller, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._kafka = kafka
        self._poller = poller
        self._loop = loop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._failure: str | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="poller-triggers", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._failure is not None:
            self.stop()
            raise KafkaUnavailableError(
                f"the poll-trigger listener did not start: {self._failure or 'timed out'}"
            )

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        topic = self._kafka.topic(POLLER_TRIGGERS)
        consumer: Consumer | None = None
        try:
            consumer = Consumer(
                self._kafka.confluent_config(
                    **{
                        "group.id": self._kafka.topic("dastra-poller-triggers"),
                        "enable.auto.commit": False,
                        "auto.offset.reset": "latest",
                    }
                )
            )
            info = consumer.list_topics(topic, timeout=15).topics.get(topic)
            if info is None or info.error is not None:
                self._failure = f"topic {topic} does not exist (run `dastra-kafka topics apply`)"
                return
            # Start at the current end, resolved now: a trigger sent after start() returns counts.
            ends = end_offsets(self._kafka, topic, list(info.partitions), 15)
            consumer.assign([TopicPartition(topic, p, ends.get(p, 0)) for p in info.partitions])
            self._ready.set()
            while not self._stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                try:
                    trigger = PollTrigger.model_validate_json(message.value() or b"{}")
                except ValueError:
                    _log.warning("poller.bad_trigger", offset=message.offset())
                    continue
                self._loop.call_soon_threadsafe(self._poller.poll_now, trigger.workspace_id)
        except KafkaException as exc:
            self._failure = exc.args[0].str() if exc.args else str(exc)
        finally:
            self._ready.set()
            if consumer is not None:
                consumer.close()
