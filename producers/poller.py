"""Change poller: Dastra changes become Kafka events, exactly once.

Consumes Dastra's API per workspace (`GET /v1/ws/{ws}/DataSubjectRequests` and `.../Tasks`, in
`dateCreation` and `dateUpdate` order) and `dastra.poller-triggers.v1` (poll a workspace now).
Produces `eu.dastra.rights_request.created|updated` on `dastra.rights-requests.v1` and
`eu.dastra.task.created|updated` on `dastra.tasks.v1` (CloudEvents binary mode, key
`<workspaceId>:<id>`, data = the Dastra object unchanged), and its cursor on the compacted
`dastra.poller-state.v1`, in one Kafka transaction per batch. A fixed `transactional.id` per
workspace fences a second poller of the same workspace.

All events of a workspace go to one partition of their topic (chosen from the workspace id), so a
consumer sees them in creation order per workspace, as design §4 promises.

    async with DastraClient(settings.dastra) as dastra:
        poller = Poller(settings.kafka, settings.poller, catalogue, dastra, workspaces=[12])
        summary = await poller.run(stop=stop_event, max_cycles=1)
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

import structlog
from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Producer,
    TopicPartition,
    murmur2,
)
from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from bus.envelope import deterministic_id, encode_binary, new_event
from bus.settings import KafkaSettings, PollerSettings
from bus.topics import POLLER_STATE, POLLER_TRIGGERS, RIGHTS_REQUESTS, TASKS, TopicCatalogue
from dastra.client import DastraClient
from dastra.errors import DastraError, DastraRateLimited, DastraRetryable
from dastra.filters import Filter, Rule
from dastra.models import Page

__all__ = [
    "RESOURCES",
    "Cursor",
    "Mark",
    "PollSummary",
    "PollTrigger",
    "Poller",
    "PollerFencedError",
    "Resource",
    "StartFrom",
    "parse_start",
    "trigger_record",
]

_log = structlog.get_logger(__name__)

StartFrom = Literal["now", "beginning"] | datetime


def parse_start(text: str) -> StartFrom:
    """`now`, `beginning` or an ISO 8601 date/time (UTC when no zone is given)."""
    if text in ("now", "beginning"):
        return text  # type: ignore[return-value]
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ValueError(f"--from takes now, beginning or an ISO date, not {text!r}") from exc
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class _Item(Protocol):
    id: int
    date_creation: datetime | None
    date_update: datetime | None

    @property
    def raw(self) -> dict[str, Any]: ...


PageFetcher = Callable[..., Awaitable[Page[Any]]]


@dataclass(frozen=True)
class Resource:
    """One kind of Dastra object the poller watches."""

    name: str  # part of the cursor key: "<workspaceId>:<name>"
    topic: str  # catalogue name of the event topic
    entity: str  # in event types: eu.dastra.<entity>.created
    fetch: Callable[[DastraClient], PageFetcher]


RESOURCES: tuple[Resource, ...] = (
    Resource(
        "rights-requests", RIGHTS_REQUESTS, "rights_request", lambda d: d.rights_requests_page
    ),
    Resource("tasks", TASKS, "task", lambda d: d.tasks_page),
)


class Mark(BaseModel):
    """A position in one time-ordered stream (creations or updates): everything up to `after`
    is published, and of the items stamped exactly `after`, those in `seen`."""

    model_config = ConfigDict(frozen=True)

    after: datetime | None = Field(description="Newest timestamp published; null: from the start")
    seen: list[int] = Field(default_factory=list, description="Ids published at `after`")


class Cursor(BaseModel):
    """The poller's position for one workspace and resource (value on dastra.poller-state.v1)."""

    model_config = ConfigDict(frozen=True)

    workspace_id: int
    resource: str
    created: Mark
    updated: Mark
    written_at: datetime

    @property
    def key(self) -> str:
        return f"{self.workspace_id}:{self.resource}"


class PollerFencedError(RuntimeError):
    """Another poller took over this workspace (same transactional.id); this one must stop."""


@dataclass
class PollSummary:
    """What a run did, per workspace: events published, cycles, errors."""

    events: dict[int, int] = field(default_factory=dict)
    cycles: dict[int, int] = field(default_factory=dict)
    errors: dict[int, int] = field(default_factory=dict)
    fenced: list[int] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "events": {str(k): v for k, v in self.events.items()},
            "cycles": {str(k): v for k, v in self.cycles.items()},
            "errors": {str(k): v for k, v in self.errors.items()},
            "fenced": self.fenced,
        }


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _stamp(item: _Item, stream: str) -> datetime | None:
    return _utc(item.date_creation if stream == "dateCreation" else item.date_update)


class PollTrigger(BaseModel):
    """A request to poll a workspace now (value on dastra.poller-triggers.v1; key = the
    workspace id). Other fields are ignored."""

    model_config = ConfigDict(frozen=True, alias_generator=to_camel, populate_by_name=True)

    workspace_id: int = Field(ge=1, description="The Dastra workspace to poll")
    reason: str = Field(description="Why, for the logs: e.g. the Dastra webhook event name")
    at: datetime = Field(description="When the trigger was sent")


def trigger_record(workspace_id: int, reason: str) -> tuple[bytes, bytes]:
    """Key and value of a record on dastra.poller-triggers.v1 asking to poll a workspace now."""
    trigger = PollTrigger(workspace_id=workspace_id, reason=reason, at=datetime.now(UTC))
    return str(workspace_id).encode(), trigger.model_dump_json(by_alias=True).encode()


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = Counter(
            "dastra_poller_events_published",
            "Events published by the poller",
            ["workspace", "topic", "type"],
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


class _WorkspacePoller:
    """Polls one workspace; owns its transactional producer."""

    def __init__(
        self,
        workspace_id: int,
        kafka: KafkaSettings,
        settings: PollerSettings,
        dastra: DastraClient,
        source: str,
        metrics: _Metrics,
        start: StartFrom,
    ) -> None:
        self.workspace_id = workspace_id
        self._kafka = kafka
        self._settings = settings
        self._dastra = dastra
        self._source = source
        self._metrics = metrics
        self._start = start
        self._cursors: dict[str, Cursor] = {}
        self._partitions: dict[str, int] = {}
        self._producer: Producer | None = None
        self.wake = asyncio.Event()

    # --- Kafka side --------------------------------------------------------------------------

    def open(self) -> None:
        """Init the transactional producer (fencing any older poller), then restore cursors."""
        self._producer = Producer(
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
            self._producer.init_transactions(self._settings.transaction_timeout_s)
        except KafkaException as exc:
            raise PollerFencedError(f"workspace {self.workspace_id}: {exc}") from exc
        metadata = self._producer.list_topics(timeout=15)
        for resource in RESOURCES:
            topic = self._kafka.topic(resource.topic)
            if topic not in metadata.topics:
                raise KafkaException(
                    KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic} does not exist")
                )
            count = len(metadata.topics[topic].partitions)
            self._partitions[resource.topic] = murmur2(str(self.workspace_id).encode(), count)
        self._cursors = _load_cursors(self._kafka, self.workspace_id)

    def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            # A fenced producer raises on flush; nothing of ours is pending then.
            with contextlib.suppress(KafkaException):
                producer.flush(10)

    def _publish(
        self, resource: Resource, items: Sequence[tuple[str, _Item]], cursor: Cursor
    ) -> None:
        """One transaction: the events, then the cursor. Blocking; runs in a worker thread."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("the poller is not open")
        topic = self._kafka.topic(resource.topic)
        partition = self._partitions[resource.topic]
        try:
            producer.begin_transaction()
            for kind, item in items:
                headers, value = encode_binary(self._event(resource, kind, item))
                producer.produce(
                    topic,
                    key=f"{self.workspace_id}:{item.id}".encode(),
                    value=value,
                    headers=headers,
                    partition=partition,
                )
                producer.poll(0)
            producer.produce(
                self._kafka.topic(POLLER_STATE),
                key=cursor.key.encode(),
                value=cursor.model_dump_json().encode(),
            )
            producer.commit_transaction(self._settings.transaction_timeout_s)
        except KafkaException as exc:
            error: KafkaError = exc.args[0]
            if error.fatal() or error.code() in (
                KafkaError._FENCED,
                KafkaError.PRODUCER_FENCED,
                KafkaError.INVALID_PRODUCER_EPOCH,
            ):
                raise PollerFencedError(
                    f"workspace {self.workspace_id}: another poller took over ({error.str()})"
                ) from exc
            if error.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    producer.abort_transaction(self._settings.transaction_timeout_s)
            raise

    def _event(self, resource: Resource, kind: str, item: _Item) -> Any:
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
            data=item.raw,
        )

    # --- Dastra side -------------------------------------------------------------------------

    async def _page(
        self, resource: Resource, *, page: int, stream: str, asc: bool, rule: Filter | None
    ) -> Page[Any]:
        fetch = resource.fetch(self._dastra)
        return await fetch(
            self.workspace_id,
            page=page,
            size=self._settings.page_size,
            sort_by=stream,
            asc=asc,
            filters=rule,
        )

    async def _latest(self, resource: Resource, stream: str) -> Mark:
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
        return Mark(after=newest, seen=sorted(i for s, i in stamps if s == newest))

    async def _initial(self, resource: Resource) -> Cursor:
        if self._start == "now":
            created = await self._latest(resource, "dateCreation")
        elif self._start == "beginning":
            created = Mark(after=None)
        else:
            created = Mark(after=self._start)
        return Cursor(
            workspace_id=self.workspace_id,
            resource=resource.name,
            created=created,
            # Updates are never backfilled: they start at the newest update there is now.
            updated=await self._latest(resource, "dateUpdate"),
            written_at=datetime.now(UTC),
        )

    async def _scan(
        self, resource: Resource, stream: str, mark: Mark, budget: int
    ) -> tuple[list[_Item], Mark, bool]:
        """Items past `mark` in (`stream`, id) order, whole pages until at least `budget` (or
        the end); the advanced mark; and whether more may remain.

        Keyset paging: each request asks for `stream >= after` from page 1, so items deleted
        or added while we read cannot shift an unread item past us. Only a full page of items
        that all carry the same, already seen timestamp moves on to the next page number.
        """
        after, seen = mark.after, set(mark.seen)
        found: list[_Item] = []
        page_number = 1
        while True:
            if after is None:
                rule: Filter | None = Rule(stream, "isNotNull") if stream == "dateUpdate" else None
            else:
                rule = Rule(stream, "greaterThanInclusive", after)
            page = await self._page(resource, page=page_number, stream=stream, asc=True, rule=rule)
            stamped = [(stamp, item) for item in page.items if (stamp := _stamp(item, stream))]
            stamped.sort(key=lambda pair: (pair[0], pair[1].id))
            fresh = 0
            for stamp, item in stamped:
                if after is not None and (stamp < after or (stamp == after and item.id in seen)):
                    continue
                if after is None or stamp > after:
                    after, seen = stamp, {item.id}
                else:
                    seen.add(item.id)
                found.append(item)
                fresh += 1
            advanced = Mark(after=after, seen=sorted(seen))
            if len(page.items) < self._settings.page_size:
                return found, advanced, False
            if len(found) >= budget:
                return found, advanced, True
            page_number = 1 if fresh else page_number + 1

    # --- one cycle ---------------------------------------------------------------------------

    async def cycle(self) -> int:
        """Publish everything new in this workspace; return the number of events."""
        published = 0
        for resource in RESOURCES:
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
            for stream, kind in (("dateCreation", "created"), ("dateUpdate", "updated")):
                more = True
                while more:
                    cursor = self._cursors[resource.name]
                    mark = cursor.created if kind == "created" else cursor.updated
                    items, advanced, more = await self._scan(
                        resource, stream, mark, self._settings.batch_size
                    )
                    if not items:
                        break
                    if kind == "updated":
                        # An object stamped updated when it was created has not changed.
                        items = [
                            i for i in items if _stamp(i, "dateUpdate") != _stamp(i, "dateCreation")
                        ]
                    moved = cursor.model_copy(
                        update={kind: advanced, "written_at": datetime.now(UTC)}
                    )
                    await asyncio.to_thread(
                        self._publish, resource, [(kind, item) for item in items], moved
                    )
                    self._cursors[resource.name] = moved
                    published += len(items)
                    self._metrics.events.labels(
                        str(self.workspace_id),
                        resource.topic,
                        f"eu.dastra.{resource.entity}.{kind}",
                    ).inc(len(items))
                    _log.info(
                        "poller.published",
                        workspace=self.workspace_id,
                        resource=resource.name,
                        kind=kind,
                        events=len(items),
                    )
        return published


def _load_cursors(kafka: KafkaSettings, workspace_id: int) -> dict[str, Cursor]:
    """The latest committed cursor of each resource of a workspace (read_committed)."""
    topic = kafka.topic(POLLER_STATE)
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": kafka.topic(f"dastra-poller-restore-{workspace_id}"),
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
                "enable.partition.eof": True,
                "auto.offset.reset": "earliest",
            }
        )
    )
    wanted = {f"{workspace_id}:{resource.name}" for resource in RESOURCES}
    cursors: dict[str, Cursor] = {}
    try:
        metadata = consumer.list_topics(topic, timeout=15)
        if topic not in metadata.topics or metadata.topics[topic].error is not None:
            raise KafkaException(
                KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, f"topic {topic} does not exist")
            )
        partitions = list(metadata.topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
        pending = set(partitions)
        deadline = time.monotonic() + 60
        while pending and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(message.partition())
                    continue
                raise KafkaException(error)
            key = (message.key() or b"").decode()
            if key not in wanted:
                continue
            value = message.value()
            name = key.split(":", 1)[1]
            if value is None:
                cursors.pop(name, None)
            else:
                cursors[name] = Cursor.model_validate_json(value)
        if pending:
            raise KafkaException(
                KafkaError(KafkaError._TIMED_OUT, f"could not read {topic} to its end")
            )
    finally:
        consumer.close()
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
    ) -> None:
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
        source = "dastra://workspaces/{}"
        self._workspaces = {
            ws: _WorkspacePoller(
                ws, kafka, settings, dastra, source.format(ws), self._metrics, chosen
            )
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
        restored."""
        stop = stop or asyncio.Event()
        summary = PollSummary()
        metrics_server = None
        if self._settings.metrics_port:
            metrics_server, _thread = start_http_server(
                self._settings.metrics_port, addr=self._host, registry=self.registry
            )
        triggers = _TriggerListener(self._kafka, self, asyncio.get_running_loop())
        try:
            for worker in self._workspaces.values():
                await asyncio.to_thread(worker.open)
            triggers.start()
            if ready is not None:
                ready.set()
            await asyncio.gather(
                *(
                    self._loop(worker, stop, max_cycles, summary, on_cycle)
                    for worker in self._workspaces.values()
                )
            )
        finally:
            triggers.stop()
            for worker in self._workspaces.values():
                await asyncio.to_thread(worker.close)
            if metrics_server is not None:
                metrics_server.shutdown()
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
            wait = interval
            try:
                published = await worker.cycle()
            except PollerFencedError as exc:
                _log.error("poller.fenced", workspace=ws, error=str(exc))
                summary.fenced.append(ws)
                self._metrics.errors.labels(label, "fenced").inc()
                return
            except (DastraError, KafkaException) as exc:
                kind = type(exc).__name__
                summary.errors[ws] += 1
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
    """Reads dastra.poller-triggers.v1 from its end in a thread and wakes the workspace's loop."""

    def __init__(
        self, kafka: KafkaSettings, poller: Poller, loop: asyncio.AbstractEventLoop
    ) -> None:
        self._kafka = kafka
        self._poller = poller
        self._loop = loop
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="poller-triggers", daemon=True)
        self._thread.start()
        self._ready.wait(20)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        topic = self._kafka.topic(POLLER_TRIGGERS)
        consumer = Consumer(
            self._kafka.confluent_config(
                **{
                    "group.id": self._kafka.topic("dastra-poller-triggers"),
                    "enable.auto.commit": False,
                    "auto.offset.reset": "latest",
                }
            )
        )
        try:
            metadata = consumer.list_topics(topic, timeout=15)
            info = metadata.topics.get(topic)
            if info is None or info.error is not None:
                _log.warning("poller.no_trigger_topic", topic=topic)
                return
            # Start at the current end, resolved now: a trigger sent after start() returns counts.
            start = []
            for partition in info.partitions:
                _low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
                start.append(TopicPartition(topic, partition, high))
            consumer.assign(start)
            self._ready.set()
            while not self._stop.is_set():
                message = consumer.poll(0.2)
                if message is None or message.error() is not None:
                    continue
                try:
                    trigger = PollTrigger.model_validate_json(message.value() or b"")
                except ValidationError:
                    _log.warning("poller.bad_trigger", offset=message.offset())
                    continue
                self._loop.call_soon_threadsafe(self._poller.poll_now, trigger.workspace_id)
        finally:
            self._ready.set()
            consumer.close()
