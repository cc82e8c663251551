"""The change poller against the real broker and the sandbox over HTTP: every change exactly
once, in order, across restarts, crashes, fencing and Dastra outages."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from bus.localkafka import free_port
from bus.settings import DastraSettings, KafkaSettings, PollerSettings, SandboxSettings
from bus.topics import POLLER_STATE, POLLER_TRIGGERS, RIGHTS_REQUESTS, TASKS, TopicCatalogue
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from producers.poller import Cursor, Poller, PollSummary, StartFrom, trigger_record
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
    rr_records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=7, settle=1.0)
    task_records = consume(kafka, kafka.topic(TASKS), expected=4, settle=1.0)
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

    rr_all = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=9, settle=1.0)
    updated = _of_type(rr_all, ".updated")
    assert [json.loads(r.value or b"")["state"] for r in updated] == ["Processing", "Closed"]
    for record in updated:
        data = json.loads(record.value or b"")
        assert record.headers["ce_id"] == (
            f"dastra:{ws}:rights_request.updated:{data['id']}:{data['dateUpdate']}".encode()
        )
    task_all = consume(kafka, kafka.topic(TASKS), expected=5, settle=1.0)
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

    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=1, settle=1.0)
    assert _ids(records) == [later]
    cursors = consume(kafka, kafka.topic(POLLER_STATE), expected=1, settle=1.0)
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
    ids = _ids(consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=25, settle=1.0))
    assert sorted(ids) == sorted(o["id"] for o in objects)
    assert len(set(ids)) == 25


def test_dastra_outages_and_429_storms_lose_and_duplicate_nothing(
    kafka: KafkaSettings, topics: TopicCatalogue, sandbox: SandboxServer
) -> None:
    ws = sandbox.workspace_id
    admin = sandbox.admin
    impatient = sandbox.dastra_settings(retry_deadline_s=0.5)
    for i in range(10):
        admin.create_task(label=f"before {i}")
    admin.inject_fault("/v1/ws/*/Tasks", method="GET", status=503, times=4)
    admin.inject_fault(
        "/v1/ws/*/DataSubjectRequests", method="GET", status=429, retry_after=0.2, times=6
    )
    registry = CollectorRegistry()

    async def scenario() -> PollSummary:
        async with DastraClient(impatient) as client:
            poller = Poller(
                kafka, FAST, topics, client, workspaces=[ws], start="beginning", registry=registry
            )
            stop, ready = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(poller.run(stop=stop, ready=ready))
            await asyncio.wait_for(ready.wait(), 30)
            # A longer outage than the client's retry deadline: whole cycles fail meanwhile.
            admin.inject_fault("*", method="GET", status=503, duration_s=1.5)
            for i in range(10):
                await asyncio.to_thread(admin.create_task, label=f"during {i}")
            await asyncio.to_thread(
                wait_for,
                lambda: len(read_all(kafka, kafka.topic(TASKS))) >= 20,
                30,
                "20 task events",
                0.5,
            )
            stop.set()
            return await running

    summary = asyncio.run(scenario())

    records = consume(kafka, kafka.topic(TASKS), expected=20, settle=2.0)
    assert Counter(_ids(records)) == Counter(o["id"] for o in admin.objects("tasks"))
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
            await asyncio.wait_for(second_ready.wait(), 30)  # the first poller is fenced now
            for i in range(5):
                await asyncio.to_thread(admin.create_rights_request, title=f"b {i}")
            first_summary = await asyncio.wait_for(running_first, 30)  # ends: fenced
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
    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=10, settle=2.0)
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
            await asyncio.wait_for(first_cycle.wait(), 30)
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


@pytest.mark.slow
def test_sigkill_during_a_backfill_never_loses_or_duplicates(
    kafka: KafkaSettings, topics: TopicCatalogue, sandbox: SandboxServer, tmp_path: Path
) -> None:
    total = 5000
    sandbox.admin.bulk_create("rightsRequests", total, title="backfill {n}")
    sandbox.admin.configure(rate_limit=False)
    # Slow Dastra down a little so that kills land in the middle of the backfill.
    sandbox.admin.inject_fault("/v1/ws/*/DataSubjectRequests", method="GET", latency_s=0.05)
    env = {
        **os.environ,
        **sandbox.env(),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "POLLER_PAGE_SIZE": "100",
        "POLLER_BATCH_SIZE": "100",
        "SERVICE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "dastra_kafka", "poller", "--from", "beginning"]
    rng = random.Random(20261128)
    seen_after_kill: list[int] = []
    log = tmp_path / "poller.log"
    for _kill in range(12):
        before = len(read_all(kafka, kafka.topic(RIGHTS_REQUESTS)))
        target = min(total, before + rng.randint(1, 400))
        with log.open("ab") as out:
            process = subprocess.Popen(command, env=env, stdout=out, stderr=out)

        # Kill once the backfill moved on by a random amount: in the middle of a batch, between
        # a transaction and the next, wherever that lands.
        def progressed(running: subprocess.Popen[bytes] = process, goal: int = target) -> bool:
            done = len(read_all(kafka, kafka.topic(RIGHTS_REQUESTS)))
            return running.poll() is not None or done >= goal

        wait_for(progressed, 120, f"the backfill to pass {target} events", 0.05)
        assert process.poll() is None, log.read_text()[-2000:]
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        seen_after_kill.append(len(read_all(kafka, kafka.topic(RIGHTS_REQUESTS))))
    final = subprocess.run(
        [*command, "--once", "--json"], env=env, capture_output=True, timeout=240, check=False
    )
    assert final.returncode == 0, final.stderr[-2000:]

    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=total, timeout=60, settle=2.0)
    counts = Counter(_ids(records))
    assert len(counts) == total
    assert max(counts.values()) == 1
    # The kills really interrupted the backfill: progress was partial and growing.
    partial = [n for n in seen_after_kill if 0 < n < total]
    assert len(partial) >= 10, seen_after_kill
    assert partial == sorted(partial)


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

    ids = _ids(consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=3, settle=1.0))
    assert ids == [first, second, late]
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
    assert _ids(consume(kafka, kafka.topic(TASKS), expected=3, settle=1.0)) == recent


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
    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=6, settle=1.0)
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
        async with DastraClient(dastra_settings) as client:
            poller = Poller(kafka, settings, topics, client, workspaces=[ws], start="beginning")
            stop, cycled = asyncio.Event(), asyncio.Event()
            running = asyncio.create_task(
                poller.run(stop=stop, on_cycle=lambda _w, _n: cycled.set())
            )
            await asyncio.wait_for(cycled.wait(), 30)
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
    # The port is released with the poller: a second run can bind it again.
    assert "dastra_poller_cycles_total{" in asyncio.run(scenario())


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dastra_kafka", "poller", *args],
        env={**os.environ, **env, "SERVICE_LOG_LEVEL": "warning"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_exit_codes(
    kafka: KafkaSettings, topics: TopicCatalogue, sandbox: SandboxServer
) -> None:
    env = {
        **sandbox.env(),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
    }
    ok = _cli(env, "--once", "--json")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["cycles"] == {str(sandbox.workspace_id): 1}

    bad_start = _cli({**env, "POLLER_START_FROM": "yesterday"}, "--once")
    assert bad_start.returncode == 2 and "POLLER_START_FROM" in bad_start.stderr

    no_topics = _cli({**env, "KAFKA_TOPIC_PREFIX": "nothing-here."}, "--once")
    assert no_topics.returncode == 2 and "topics apply" in no_topics.stderr

    bad_key = _cli({**env, "DASTRA_API_KEY": "wrong-key"}, "--once")
    assert bad_key.returncode == 2 and "DastraAuthError" in bad_key.stderr
    assert "wrong-key" not in bad_key.stderr

    sandbox.admin.inject_fault("/v1/ws/*", method="GET", status=503, duration_s=20)
    outage = _cli({**env, "DASTRA_RETRY_DEADLINE_S": "0.5"}, "--once")
    assert outage.returncode == 3, outage.stderr

    no_kafka = _cli(
        {
            **env,
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
            "POLLER_TRANSACTION_TIMEOUT_S": "5",
        },
        "--once",
    )
    assert no_kafka.returncode == 3, no_kafka.stderr
    assert "cannot reach Kafka" in no_kafka.stderr
