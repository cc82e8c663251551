"""The change poller against the real broker and the sandbox over HTTP: every change exactly
once, in order, across restarts, fencing and Dastra outages. The `dastra-kafka poller` processes
(SIGKILLed mid-backfill, exit codes, fenced and SIGTERMed) are in test_poller_processes.py."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bus.localkafka import free_port
from bus.metrics import role_registry
from bus.settings import KafkaSettings
from bus.topics import POLLER_STATE, POLLER_TRIGGERS, RIGHTS_REQUESTS, TASKS, TopicCatalogue
from dastra.client import DastraClient
from dastra.metrics import DastraMetrics
from dastra.ratelimit import RateLimiter
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from dastra.settings import DastraSettings
from producers.poller import Cursor, Poller, PollSummary, StartFrom, trigger_record
from producers.poller.settings import PollerSettings
from tests.kafka_helpers import Record, consume, read_all, wait_for

FAST = PollerSettings(interval_min_s=0.05, interval_max_s=0.2)


async def _poll(
    kafka: KafkaSettings,
    catalogue: TopicCatalogue,
    dastra: DastraSettings,
    ws: int,
    *,
    start: StartFrom = "beginning",
    cycles: int = 1,
    settings: PollerSettings = FAST,
    registry: CollectorRegistry | None = None,
) -> PollSummary:
    async with DastraClient(dastra) as client:
        poller = Poller(
            kafka, settings, catalogue, client, workspaces=[ws], start=start, registry=registry
        )
        return await poller.run(max_cycles=cycles)


def poll(*args: Any, **kwargs: Any) -> PollSummary:
    return asyncio.run(_poll(*args, **kwargs))


def _ids(records: list[Record]) -> list[int]:
    return [json.loads(r.value or b"{}")["id"] for r in records]


def _of_type(records: list[Record], kind: str) -> list[Record]:
    return [r for r in records if r.headers["ce_type"].decode().endswith(kind)]


def test_new_items_become_created_events_in_order_with_keys_headers_and_exact_data(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    rights = [admin.create_rights_request(title=f"request {i}")["id"] for i in range(7)]
    tasks = [admin.create_task(label=f"task {i}")["id"] for i in range(4)]

    summary = poll(kafka, topics, dastra_settings, ws)

    assert summary.events[ws] == 11
    rr_records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=7, to_end=True)
    task_records = consume(kafka, kafka.topic(TASKS), expected=4, to_end=True)
    assert _ids(rr_records) == rights  # creation order
    assert _ids(task_records) == tasks
    assert len({r.partition for r in rr_records}) == 1  # one workspace, one partition

    async def api_objects() -> dict[int, dict[str, Any]]:
        async with DastraClient(dastra_settings) as client:
            found = {i: (await client.get_rights_request(ws, i)).raw for i in rights}
            found |= {i: (await client.get_task(ws, i)).raw for i in tasks}
            return found

    objects = asyncio.run(api_objects())
    for record, entity in [(r, "rights_request") for r in rr_records] + [
        (r, "task") for r in task_records
    ]:
        data = json.loads(record.value or b"")
        assert data == objects[data["id"]]  # the Dastra object, unchanged
        assert record.key == f"{ws}:{data['id']}".encode()
        assert record.headers["ce_id"] == f"dastra:{ws}:{entity}.created:{data['id']}".encode()
        assert record.headers["ce_type"] == f"eu.dastra.{entity}.created".encode()
        assert record.headers["ce_source"] == f"dastra://workspaces/{ws}".encode()
        assert record.headers["ce_specversion"] == b"1.0"
        assert record.headers["ce_subject"] == str(data["id"]).encode()
        assert record.headers["content-type"] == b"application/json"

    # Updates become `updated` events whose id includes the update time.
    admin.update_rights_request(rights[2], state="Processing")
    admin.update_rights_request(rights[5], state="Closed")
    admin.update_task(tasks[0], label="renamed")

    assert poll(kafka, topics, dastra_settings, ws).events[ws] == 3

    rr_all = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=9, to_end=True)
    updated = _of_type(rr_all, ".updated")
    assert [json.loads(r.value or b"")["state"] for r in updated] == ["Processing", "Closed"]
    for record in updated:
        data = json.loads(record.value or b"")
        assert record.headers["ce_id"] == (
            f"dastra:{ws}:rights_request.updated:{data['id']}:{data['dateUpdate']}".encode()
        )
    task_all = consume(kafka, kafka.topic(TASKS), expected=5, to_end=True)
    assert [json.loads(r.value or b"")["label"] for r in _of_type(task_all, ".updated")] == [
        "renamed"
    ]


def test_a_restart_resumes_from_the_cursor_and_from_now_skips_old_items(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    for i in range(5):
        admin.create_rights_request(title=f"old {i}")

    # --from now on a workspace without a cursor: the five old requests stay unpublished.
    assert poll(kafka, topics, dastra_settings, ws, start="now").events[ws] == 0
    later = admin.create_rights_request(title="new")["id"]
    # A restart (a new poller, same topics) resumes from the stored cursor, whatever --from says.
    assert poll(kafka, topics, dastra_settings, ws, start="beginning").events[ws] == 1
    assert poll(kafka, topics, dastra_settings, ws, start="beginning").events[ws] == 0

    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=1, to_end=True)
    assert _ids(records) == [later]
    cursors = consume(kafka, kafka.topic(POLLER_STATE), expected=1, to_end=True)
    last = {r.key: Cursor.model_validate_json(r.value or b"") for r in cursors}
    assert last[f"{ws}:rights-requests".encode()].created.seen == [later]


def test_items_sharing_a_timestamp_across_pages_are_each_published_once(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    # 25 items in one bulk call share a handful of timestamps; pages of 4 split them anywhere.
    sandbox.admin.bulk_create("rightsRequests", 25, title="bulk {n}")
    small_pages = PollerSettings(interval_min_s=0.05, interval_max_s=0.2, page_size=4, batch_size=3)

    summary = poll(kafka, topics, dastra_settings, ws, settings=small_pages)

    assert summary.events[ws] == 25
    objects = sandbox.admin.objects("rightsRequests")
    ties = Counter(o["dateCreation"] for o in objects)
    assert max(ties.values()) > small_pages.page_size  # a tie really spans pages
    ids = _ids(consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=25, to_end=True))
    assert sorted(ids) == sorted(o["id"] for o in objects)
    assert len(set(ids)) == 25


class _Recording(httpx.AsyncBaseTransport):
    """Real HTTP, noting when each request left, when its answer came, its status, and the
    ids of the items of each page. `before` (if set) runs before each request is sent."""

    def __init__(self, before: Callable[[httpx.Request], Awaitable[None]] | None = None) -> None:
        self._inner = httpx.AsyncHTTPTransport()
        self._before = before
        self.log: list[tuple[float, float, str, int, str | None]] = []
        self.items: list[tuple[str, dict[str, Any]]] = []  # (path, item)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._before is not None:
            await self._before(request)
        sent = time.monotonic()
        response = await self._inner.handle_async_request(request)
        body = await response.aread()
        retry_after = response.headers.get("Retry-After")
        self.log.append(
            (sent, time.monotonic(), request.url.path, response.status_code, retry_after)
        )
        if response.status_code == 200 and body.startswith(b"{"):
            path = request.url.path
            self.items.extend((path, item) for item in json.loads(body).get("items") or [])
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()


def test_pages_that_shift_while_being_read_lose_and_duplicate_nothing(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    admin.bulk_create("rightsRequests", 120, title="shifting {n}")
    existing = admin.objects("rightsRequests")
    # Bulk-created items share timestamps: take the longest run of one timestamp.
    run_at, run_length = Counter(o["dateCreation"] for o in existing).most_common(1)[0]
    run = [o["id"] for o in existing if o["dateCreation"] == run_at]
    # Pages of 3, one transaction for the whole backfill: one pass reads every page in turn.
    # No start-up probes (dastra.doctor): the pages read below must be the pass's own.
    settings = PollerSettings(
        interval_min_s=0.05, interval_max_s=0.2, page_size=3, batch_size=1000, detect=False
    )
    assert run_length >= 4 * settings.page_size  # the run spans several pages
    deleted: list[int] = []
    inserted: list[int] = []
    cycles: list[int] = []

    def shift_the_pages(read: list[dict[str, Any]]) -> None:
        """Between two pages of the pass: delete items already read (two of the timestamp run
        being read, whose removal moves its unread rest up, and the oldest item), create
        three new ones, and one stamped before every page already read."""
        read_ids = {o["id"] for o in read}
        oldest_id = read[0]["id"]
        # Two of the run other than the oldest item, which may be in the run too.
        tied = [i for i in run if i in read_ids and i != oldest_id][:2]
        for item_id in [*tied, oldest_id]:
            admin.delete_rights_request(item_id)
            deleted.append(item_id)
        inserted.extend(admin.create_rights_request(title=f"new {i}")["id"] for i in range(3))
        oldest = datetime.fromisoformat(read[0]["dateCreation"].replace("Z", "+00:00"))
        # A margin for the request's own travel to the sandbox (seconds under load).
        backdate = (datetime.now(UTC) - oldest).total_seconds() + 2.0
        early = admin.create_rights_request(title="before the read pages", backdate_s=backdate)
        assert early["dateCreation"] < read[0]["dateCreation"]
        inserted.append(early["id"])

    async def mid_read(request: httpx.Request) -> None:
        # Once half the run has been read and part of it is still unread, before the next
        # page is requested: change what the coming pages hold.
        read = [o for path, o in transport.items if path.endswith("/DataSubjectRequests")]
        read_ids = {o["id"] for o in read}
        half = sum(i in read_ids for i in run) >= len(run) // 2
        if not deleted and half and not set(run) <= read_ids:
            await asyncio.to_thread(shift_the_pages, read)

    transport = _Recording(before=mid_read)
    registry = CollectorRegistry()
    # Small pages mean many requests: lift the rate limits, which this test is not about.
    admin.configure(rate_limit=False)
    unlimited = dastra_settings.model_copy(
        update={"rate_limit_per_minute": 100_000, "rate_limit_per_10_minutes": 1_000_000}
    )

    async def scenario() -> None:
        async with DastraClient(unlimited, transport=transport) as client:
            poller = Poller(
                kafka,
                settings,
                topics,
                client,
                workspaces=[ws],
                start="beginning",
                registry=registry,
            )
            stop = asyncio.Event()
            running = asyncio.create_task(
                poller.run(stop=stop, on_cycle=lambda _ws, n: cycles.append(n))
            )
            everything = {o["id"] for o in existing} | set(inserted)
            await asyncio.to_thread(
                wait_for,
                lambda: bool(inserted) and set(_ids(read_all(kafka, topic))) >= everything,
                60,
                "every item that existed and every new one",
                0.2,
            )
            # Two more whole cycles: nothing else may appear.
            done = len(cycles)
            await asyncio.to_thread(wait_for, lambda: len(cycles) >= done + 2, 30, "two cycles")
            stop.set()
            await running

    topic = kafka.topic(RIGHTS_REQUESTS)
    asyncio.run(scenario())

    assert len(deleted) == 3 and len(inserted) == 4  # the pages did shift mid-read
    expected = [o["id"] for o in existing] + inserted
    records = consume(kafka, topic, expected=len(expected), to_end=True)
    assert len(records) == len(_of_type(records, ".created")) == len(expected)  # N events
    assert Counter(_ids(records)) == Counter(expected)  # each exactly once
    assert len({r.headers["ce_id"] for r in records}) == len(records)
    # The item stamped behind the pages already read came through the late-item pass.
    late = registry.get_sample_value(
        "dastra_poller_late_items_total", {"workspace": str(ws), "topic": RIGHTS_REQUESTS}
    )
    assert late is not None and late >= 1


def test_the_interval_backs_off_while_idle_and_drops_to_the_minimum_after_a_change(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    settings = PollerSettings(interval_min_s=0.05, interval_max_s=0.4, idle_budget_share=0.5)
    # 400 requests per 30 s: half of it for idle cycles of 4 requests is one every 0.6 s, longer
    # than POLLER_INTERVAL_MAX_S, so the idle interval stretches to 0.6 s.
    limiter = RateLimiter([(400, 30.0)])
    registry = CollectorRegistry()
    # Per cycle: the events it published, then the wait the poller chose after it.
    published: list[int] = []
    waits: list[float] = []

    def interval() -> float | None:
        return registry.get_sample_value("dastra_poller_interval_seconds", {"workspace": str(ws)})

    def on_cycle(_ws: int, events: int) -> None:
        # Called before the wait after this cycle is set: the gauge holds the previous one.
        if published:
            waits.append(interval() or 0.0)
        published.append(events)

    async def scenario() -> None:
        async with DastraClient(dastra_settings, limiter=limiter) as client:
            poller = Poller(
                kafka, settings, topics, client, workspaces=[ws], start="now", registry=registry
            )
            assert poller.idle_interval == pytest.approx(0.6)
            stop = asyncio.Event()
            running = asyncio.create_task(poller.run(stop=stop, on_cycle=on_cycle))
            await asyncio.to_thread(wait_for, lambda: len(waits) >= 5, 30, "five idle cycles")
            await asyncio.to_thread(
                wait_for, lambda: interval() == pytest.approx(0.6), 10, "the idle interval"
            )
            await asyncio.to_thread(sandbox.admin.create_rights_request, title="activity")
            await asyncio.to_thread(
                wait_for, lambda: any(published), 30, "the cycle that publishes it"
            )
            busy = published.index(1)
            await asyncio.to_thread(
                wait_for, lambda: len(waits) >= busy + 5, 30, "idle cycles after it"
            )
            stop.set()
            await running

    asyncio.run(scenario())

    assert registry.get_sample_value("dastra_poller_idle_interval_seconds") == pytest.approx(0.6)
    busy = published.index(1)
    assert sum(published) == 1
    # Idle from the start: 0.1, 0.2, 0.4, then the budget's idle interval, never more.
    assert waits[:busy] == pytest.approx([min(0.05 * 2 ** (n + 1), 0.6) for n in range(busy)])
    assert busy >= 4 and waits[busy - 1] == pytest.approx(0.6)
    # Right after the cycle that found a change, the minimum; then it backs off again.
    assert waits[busy : busy + 5] == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.6])


@pytest.mark.parametrize(
    ("windows", "workspaces", "expected"),
    [
        ([], 50, 15.0),  # no limit: POLLER_INTERVAL_MAX_S
        ([(500, 60.0), (10_000, 600.0)], 1, 15.0),  # 16 requests/min: under half of 500/min
        ([(500, 60.0), (10_000, 600.0)], 20, 19.2),  # 80 per cycle at 250/min
        ([(125, 60.0), (2_500, 600.0)], 20, 76.8),  # the poller's quarter of the key
        ([(10_000, 600.0), (500, 60.0)], 40, 38.4),  # the tightest window counts
    ],
)
def test_the_idle_interval_keeps_idle_polling_within_its_share_of_the_rate_limit(
    windows: list[tuple[int, float]], workspaces: int, expected: float
) -> None:
    settings = PollerSettings(interval_max_s=15, idle_budget_share=0.5)
    interval = settings.idle_interval(windows, workspaces=workspaces, streams=4)
    assert interval == pytest.approx(expected)
    if windows and interval > 15:
        limit, period = min(windows, key=lambda window: window[0] / window[1])
        # Planned idle requests: exactly the share of the tightest window.
        assert 4 * workspaces * period / interval == pytest.approx(0.5 * limit)
    off = PollerSettings(interval_max_s=15, idle_budget_share=0)
    assert off.idle_interval(windows, workspaces=workspaces, streams=4) == 15.0


def _newest(objects: list[dict[str, Any]]) -> tuple[datetime, list[int]]:
    """The newest `dateCreation` and the ids stamped with it."""
    newest = max(o["dateCreation"] for o in objects)
    ids = sorted(o["id"] for o in objects if o["dateCreation"] == newest)
    return datetime.fromisoformat(newest.replace("Z", "+00:00")), ids


def test_dastra_outages_and_429_storms_lose_and_duplicate_nothing(
    kafka: KafkaSettings, topics: TopicCatalogue, sandbox: SandboxServer
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    impatient = sandbox.dastra_settings(retry_deadline_s=0.5)
    for i in range(10):
        admin.create_task(label=f"before {i}")
        admin.create_rights_request(title=f"before {i}")
    admin.inject_fault("/v1/ws/*/Tasks", method="GET", status=503, times=4)
    admin.inject_fault(
        "/v1/ws/*/DataSubjectRequests", method="GET", status=429, retry_after=0.2, times=6
    )
    registry = CollectorRegistry()
    transport = _Recording()

    def published() -> int:
        return len(read_all(kafka, kafka.topic(TASKS))) + len(
            read_all(kafka, kafka.topic(RIGHTS_REQUESTS))
        )

    async def scenario() -> PollSummary:
        async with DastraClient(impatient, transport=transport) as client:
            poller = Poller(
                kafka, FAST, topics, client, workspaces=[ws], start="beginning", registry=registry
            )
            stop, ready = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(poller.run(stop=stop, ready=ready))
            async with asyncio.timeout(30):
                await ready.wait()
            # A longer outage than the client's retry deadline: whole cycles fail meanwhile.
            admin.inject_fault("*", method="GET", status=503, duration_s=1.5)
            for i in range(10):
                await asyncio.to_thread(admin.create_task, label=f"during {i}")
                await asyncio.to_thread(admin.create_rights_request, title=f"during {i}")
            await asyncio.to_thread(wait_for, lambda: published() >= 40, 30, "40 events", 0.5)
            stop.set()
            return await running

    summary = asyncio.run(scenario())

    records = consume(kafka, kafka.topic(TASKS), expected=20, to_end=True)
    assert Counter(_ids(records)) == Counter(o["id"] for o in admin.objects("tasks"))
    requests = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=20, to_end=True)
    assert Counter(_ids(requests)) == Counter(o["id"] for o in admin.objects("rightsRequests"))
    assert summary.errors[ws] > 0  # cycles did fail and were retried
    failed_cycles = sum(
        sample.value
        for metric in registry.collect()
        if metric.name == "dastra_poller_errors"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )
    assert failed_cycles == summary.errors[ws]
    assert (
        registry.get_sample_value(
            "dastra_poller_events_published_total",
            {"workspace": str(ws), "topic": TASKS, "type": "eu.dastra.task.created"},
        )
        == 20
    )
    # The cursor survived the storm: the stored one is at the newest item of each resource.
    stored = {
        r.key: Cursor.model_validate_json(r.value or b"")
        for r in read_all(kafka, kafka.topic(POLLER_STATE))
    }
    for resource, collection in (("tasks", "tasks"), ("rights-requests", "rightsRequests")):
        cursor = stored[f"{ws}:{resource}".encode()]
        newest, ids = _newest(admin.objects(collection))
        assert (cursor.created.after, cursor.created.seen) == (newest, ids), resource
    # Every 429 was answered by waiting at least its Retry-After before the next request.
    log = sorted(transport.log)
    storms = [(answered, after) for _s, answered, _p, status, after in log if status == 429]
    assert [after for _a, after in storms] == ["0.2"] * 6
    for answered, _after in storms:
        following = [sent for sent, *_rest in log if sent >= answered]
        assert following, "no request after a 429"
        assert min(following) - answered >= 0.2


def test_a_second_poller_fences_the_first_and_nothing_is_duplicated(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin

    async def scenario() -> tuple[PollSummary, PollSummary]:
        async with DastraClient(dastra_settings) as one, DastraClient(dastra_settings) as two:
            first = Poller(kafka, FAST, topics, one, workspaces=[ws], start="beginning")
            stop_first, stop_second = asyncio.Event(), asyncio.Event()
            running_first = asyncio.create_task(first.run(stop=stop_first))
            for i in range(5):
                await asyncio.to_thread(admin.create_rights_request, title=f"a {i}")
            await asyncio.to_thread(
                wait_for,
                lambda: len(read_all(kafka, kafka.topic(RIGHTS_REQUESTS))) >= 5,
                30,
                "the first poller's events",
                0.3,
            )
            second = Poller(kafka, FAST, topics, two, workspaces=[ws], start="beginning")
            second_ready = asyncio.Event()
            running_second = asyncio.create_task(second.run(stop=stop_second, ready=second_ready))
            async with asyncio.timeout(30):
                await second_ready.wait()  # the first poller is fenced now
            for i in range(5):
                await asyncio.to_thread(admin.create_rights_request, title=f"b {i}")
            async with asyncio.timeout(30):
                first_summary = await running_first  # ends: fenced
            await asyncio.to_thread(
                wait_for,
                lambda: len(read_all(kafka, kafka.topic(RIGHTS_REQUESTS))) >= 10,
                30,
                "all ten events",
                0.3,
            )
            stop_second.set()
            return first_summary, await running_second

    first_summary, second_summary = asyncio.run(scenario())

    assert first_summary.fenced == [ws]
    assert second_summary.fenced == []
    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=10, to_end=True)
    assert sorted(_ids(records)) == sorted(o["id"] for o in admin.objects("rightsRequests"))


def test_a_trigger_record_makes_it_poll_now(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    slow = PollerSettings(interval_min_s=60, interval_max_s=60)

    async def scenario() -> float:
        async with DastraClient(dastra_settings) as client:
            poller = Poller(kafka, slow, topics, client, workspaces=[ws], start="now")
            stop, first_cycle = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(
                poller.run(stop=stop, on_cycle=lambda _ws, _n: first_cycle.set())
            )
            # After the first cycle the poller waits 60 s, unless a trigger wakes it.
            async with asyncio.timeout(30):
                await first_cycle.wait()
            await asyncio.to_thread(sandbox.admin.create_rights_request, title="urgent")
            producer = Producer(kafka.confluent_config())
            key, value = trigger_record(ws, "test")
            producer.produce(kafka.topic(POLLER_TRIGGERS), key=key, value=value)
            producer.flush(10)
            began = time.monotonic()
            await asyncio.to_thread(
                consume, kafka, kafka.topic(RIGHTS_REQUESTS), expected=1, timeout=10
            )
            elapsed = time.monotonic() - began
            stop.set()
            await running
            return elapsed

    assert asyncio.run(scenario()) < 10  # well before the 60 s interval


def test_an_item_that_becomes_visible_late_is_still_published_once(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    first = admin.create_rights_request(title="first")["id"]
    assert poll(kafka, topics, dastra_settings, ws).events[ws] == 1
    second_item = admin.create_rights_request(title="second")
    second = second_item["id"]
    assert poll(kafka, topics, dastra_settings, ws).events[ws] == 1
    # Committed late: stamped before `second`, which the cursor has already passed.
    second_at = datetime.fromisoformat(second_item["dateCreation"].replace("Z", "+00:00"))
    backdate = (datetime.now(UTC) - second_at).total_seconds() + 0.2
    late_item = admin.create_rights_request(title="late", backdate_s=backdate)
    late = late_item["id"]
    assert late_item["dateCreation"] < second_item["dateCreation"]
    registry = CollectorRegistry()

    assert poll(kafka, topics, dastra_settings, ws, registry=registry).events[ws] == 1
    assert poll(kafka, topics, dastra_settings, ws).events[ws] == 0  # and only once

    ids = _ids(consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=3, to_end=True))
    assert ids == [first, second, late]
    assert (
        registry.get_sample_value(
            "dastra_poller_late_items_total", {"workspace": str(ws), "topic": RIGHTS_REQUESTS}
        )
        == 1
    )


def test_late_passes_in_the_background_publish_a_late_item_once_across_cycles(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    admin.create_rights_request(title="first")
    assert poll(kafka, topics, dastra_settings, ws).events[ws] == 1
    second_item = admin.create_rights_request(title="second")
    second_at = datetime.fromisoformat(second_item["dateCreation"].replace("Z", "+00:00"))
    registry = CollectorRegistry()
    # A late pass per stream and cycle; all but the last cycle run them in the background,
    # and what one finds goes into a later cycle's batch (or the last cycle's own pass).
    settings = FAST.model_copy(update={"late_every_s": 0.0})
    created: list[int] = []

    def on_cycle(_ws: int, _events: int) -> None:
        if not created:  # after the first cycle, which published `second`
            backdate = (datetime.now(UTC) - second_at).total_seconds() + 0.2
            late_item = admin.create_rights_request(title="late", backdate_s=backdate)
            assert late_item["dateCreation"] < second_item["dateCreation"]
            created.append(late_item["id"])

    async def scenario() -> PollSummary:
        async with DastraClient(dastra_settings) as client:
            poller = Poller(
                kafka, settings, topics, client, workspaces=[ws], start="now", registry=registry
            )
            return await poller.run(max_cycles=4, on_cycle=on_cycle)

    summary = asyncio.run(scenario())
    assert summary.events[ws] == 2
    ids = _ids(consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=3, to_end=True))
    assert Counter(ids)[created[0]] == 1 and ids[-2] == second_item["id"]
    assert (
        registry.get_sample_value(
            "dastra_poller_late_items_total", {"workspace": str(ws), "topic": RIGHTS_REQUESTS}
        )
        == 1
    )


def test_from_a_date_publishes_what_was_created_since(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    admin.create_task(label="before", backdate_s=3600)
    since = datetime.now(UTC) - timedelta(minutes=5)
    recent = [admin.create_task(label=f"after {i}")["id"] for i in range(3)]

    assert poll(kafka, topics, dastra_settings, ws, start=since).events[ws] == 3
    assert _ids(consume(kafka, kafka.topic(TASKS), expected=3, to_end=True)) == recent


def test_several_workspaces_each_keep_their_own_cursor_and_partition(
    kafka: KafkaSettings, topics: TopicCatalogue
) -> None:
    with SandboxServer(SandboxSettings(workspaces=2)) as two:
        first, second = sorted(two.admin.info()["workspaces"])
        made = {
            ws: [two.admin.create_rights_request(ws, title=f"r{i}")["id"] for i in range(3)]
            for ws in (first, second)
        }
        dastra = two.dastra_settings()

        async def both() -> PollSummary:
            async with DastraClient(dastra) as client:
                poller = Poller(
                    kafka, FAST, topics, client, workspaces=[first, second], start="beginning"
                )
                return await poller.run(max_cycles=1)

        summary = asyncio.run(both())

    assert summary.events == {first: 3, second: 3}
    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=6, to_end=True)
    by_workspace: dict[int, list[int]] = {first: [], second: []}
    partitions: dict[int, set[int]] = {first: set(), second: set()}
    for record in records:
        ws = int((record.key or b"").split(b":")[0])
        by_workspace[ws].append(json.loads(record.value or b"")["id"])
        partitions[ws].add(record.partition)
    assert by_workspace == made
    assert all(len(p) == 1 for p in partitions.values())


def test_metrics_are_served_while_polling(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    dastra_settings: DastraSettings,
) -> None:
    ws = sandbox.workspace_id
    sandbox.admin.create_task(label="counted")
    port = free_port()
    settings = FAST.model_copy(update={"metrics_port": port})

    async def scenario() -> str:
        # Wired as `dastra-kafka poller` does: one registry for the poller and its client.
        registry = role_registry()
        async with DastraClient(dastra_settings, metrics=DastraMetrics(registry)) as client:
            poller = Poller(
                kafka,
                settings,
                topics,
                client,
                workspaces=[ws],
                start="beginning",
                registry=registry,
            )
            stop, cycled = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(
                poller.run(stop=stop, on_cycle=lambda _w, _n: cycled.set())
            )
            async with asyncio.timeout(30):
                await cycled.wait()
            async with httpx.AsyncClient() as http:
                text = (await http.get(f"http://127.0.0.1:{port}/metrics")).text
            stop.set()
            await running
            return text

    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(asyncio.run(scenario()))
        for sample in family.samples
    }
    labels = (("topic", TASKS), ("type", "eu.dastra.task.created"), ("workspace", str(ws)))
    assert samples[("dastra_poller_events_published_total", labels)] == 1
    assert ("dastra_poller_last_success_timestamp_seconds", (("workspace", str(ws)),)) in samples
    # The Dastra client's traffic, per endpoint template (the workspace id is not in it).
    tasks = (("endpoint", "/v1/ws/{ws}/Tasks"), ("method", "GET"))
    assert samples[("dastra_client_requests_total", (*tasks, ("status", "200")))] >= 1
    assert samples[("dastra_client_request_duration_seconds_count", tasks)] >= 1
    assert samples[("dastra_client_limiter_wait_seconds_count", tasks[:1])] >= 1
    endpoints = {dict(labels).get("endpoint") for _name, labels in samples} - {None}
    assert all(str(ws) not in str(e) for e in endpoints), endpoints
    # The standard process collectors.
    assert ("process_cpu_seconds_total", ()) in samples
    assert any(name == "python_info" for name, _labels in samples)
    # The port is released with the poller: a second run can bind it again.
    assert "dastra_poller_cycles_total{" in asyncio.run(scenario())


@pytest.mark.parametrize(
    "strict",
    [
        {"filter_case": "pascal"},
        {"tz": "Europe/Paris"},
        {"tz": "America/New_York"},
        {"task_children_hidden": True},
        {"task_archived_hidden": True},
    ],
    ids=["pascal", "paris", "new-york", "children-hidden", "archived-hidden"],
)
def test_in_every_strict_sandbox_mode_no_item_is_missed_or_duplicated(
    kafka: KafkaSettings, topics: TopicCatalogue, strict: dict[str, Any]
) -> None:
    """Each mode breaks the unadapted poller: PascalCase-only filters refuse its queries, a
    server in Paris shifts the late window off the late item, one in New York skips new items,
    hidden sub-tasks or archived tasks are never listed. Adapted at start-up, nothing is lost."""
    config = SandboxSettings(port=0, rate_limit=False, seed_items=0, **strict)
    with SandboxServer(config) as server:
        ws = server.workspace_id
        admin = server.admin
        dastra = server.dastra_settings()
        registry = CollectorRegistry()
        parent = admin.create_task(label="parent")["id"]
        admin.create_task(label="child", parentId=parent)
        admin.create_task(label="archived", archived=True)
        admin.create_rights_request(title="first")
        first = poll(kafka, topics, dastra, ws, registry=registry)
        assert first.failed == {} and first.events[ws] == 4
        newest = admin.create_rights_request(title="newest")
        admin.create_task(label="child 2", parentId=parent)
        assert poll(kafka, topics, dastra, ws).events[ws] == 2
        # Committed late: stamped just before `newest`, which the cursor has passed.
        newest_at = datetime.fromisoformat(newest["dateCreation"].replace("Z", "+00:00"))
        late = admin.create_rights_request(
            title="late", backdate_s=(datetime.now(UTC) - newest_at).total_seconds() + 0.2
        )
        assert late["dateCreation"] < newest["dateCreation"]
        admin.create_task(label="archived 2", archived=True)
        admin.update_task(parent, label="parent, archived", archived=True)
        third = poll(kafka, topics, dastra, ws)
        assert third.failed == {} and third.events[ws] == 3
        assert poll(kafka, topics, dastra, ws).events[ws] == 0
        tasks = admin.objects("tasks")
        requests = admin.objects("rightsRequests")

    task_records = consume(kafka, kafka.topic(TASKS), expected=6, to_end=True)
    created = _of_type(task_records, ".created")
    assert Counter(_ids(created)) == Counter(t["id"] for t in tasks)
    assert _ids(_of_type(task_records, ".updated")) == [parent]
    rr_records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=3, to_end=True)
    assert Counter(_ids(rr_records)) == Counter(r["id"] for r in requests)
    # What was detected is exported once, as metrics.
    shift = registry.get_sample_value("dastra_poller_filter_shift_seconds")
    expected_shift = {"Europe/Paris": 3600.0, "America/New_York": -18000.0}
    assert shift == expected_shift.get(strict.get("tz", ""), 0.0)
    case = "pascal" if strict.get("filter_case") == "pascal" else "camel"
    labelled = [
        s.labels
        for metric in registry.collect()
        if metric.name == "dastra_poller_dastra_profile"
        for s in metric.samples
    ]
    assert len(labelled) == 1 and labelled[0]["filter_case"] == case
