"""Benchmark of the change poller; prints one JSON document.

1. Backfill: 20 000 rights requests in the sandbox (rate limit off) published by one `--from
   beginning` cycle: events/s, against the baseline of fetching the same pages in the same order
   without producing anything (ratio = poller rate / fetch rate).
2. Trigger latency at default poller settings: items created one by one at random intervals;
   time from `dateCreation` to arrival at a read_committed consumer, p50 and p99. Baseline in
   the same run (after it): a quarter as many items, each followed at once by a record on
   `dastra.poller-triggers.v1` (polled at once, no interval waited); ratio = p50 (p99) / p50
   (p99) of the baseline.

    .venv/bin/python -m bench.poller [--items 20000] [--latency-items 200]
        [--smoke]   # the smallest run (200 items, 10 latency items), for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import threading
import time
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from rich.console import Console

from bench import _common
from bus.admin import apply, plan
from bus.logs import configure_logging
from bus.records.poller import trigger_record
from bus.settings import KafkaSettings, ServiceSettings
from bus.topics import POLLER_TRIGGERS, RIGHTS_REQUESTS, default_topics_file, load_catalogue
from dastra.client import DastraClient
from dastra.filters import Rule
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from producers.poller import ChangedItem, Poller
from producers.poller.settings import PollerSettings

__all__ = ["main"]

_console = Console(stderr=True)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=UTC)


async def _fetch_only(
    sandbox: SandboxServer, ws: int, settings: PollerSettings
) -> tuple[int, float]:
    """The baseline: the page requests the poller makes for a `--from beginning` backfill of
    the creations, parsed with the same lenient model, nothing produced. The keyset is the
    poller's: `dateCreation >= after` from page 1, skipping the ids already taken at `after`,
    the next page number while `after` does not move, page 1 again after each batch."""
    taken = 0
    after: datetime | None = None
    seen: set[int] = set()
    began = time.perf_counter()
    async with DastraClient(sandbox.dastra_settings()) as client:
        while True:  # one batch (one transaction in the poller) per turn
            in_batch = 0
            page_number = 1
            while True:
                rule = Rule("dateCreation", "greaterThanInclusive", after) if after else None
                before = after
                page = await client.collection_page(
                    ws,
                    "DataSubjectRequests",
                    ChangedItem,
                    page=page_number,
                    size=settings.page_size,
                    sort_by="dateCreation",
                    asc=True,
                    filters=rule,
                )
                stamped = sorted(
                    (_utc(item.date_creation), item.id)
                    for item in page.items
                    if item.date_creation is not None
                )
                for stamp, item_id in stamped:
                    if after is None or stamp > after:
                        after, seen = stamp, {item_id}
                    elif stamp < after or item_id in seen:
                        continue
                    else:
                        seen.add(item_id)
                    taken += 1
                    in_batch += 1
                if len(page.items) < settings.page_size:
                    return taken, time.perf_counter() - began
                if in_batch >= settings.batch_size:
                    break
                page_number = 1 if after != before else page_number + 1


def _list_calls(sandbox: SandboxServer) -> int:
    """GET requests on the rights request collection the sandbox answered."""
    return sum(
        count
        for endpoint, count in sandbox.admin.call_counts().items()
        if endpoint.startswith("GET ") and endpoint.endswith("/DataSubjectRequests")
    )


async def _backfill(kafka: KafkaSettings, sandbox: SandboxServer, ws: int) -> tuple[int, float]:
    catalogue = load_catalogue(default_topics_file())
    began = time.perf_counter()
    async with DastraClient(sandbox.dastra_settings()) as client:
        poller = Poller(
            kafka, PollerSettings(), catalogue, client, workspaces=[ws], start="beginning"
        )
        summary = await poller.run(max_cycles=1)
    return summary.events[ws], time.perf_counter() - began


async def _latency(
    kafka: KafkaSettings, sandbox: SandboxServer, ws: int, items: int, *, triggered: bool
) -> list[float]:
    """Items created one by one (exponential gaps, mean 0.25 s) while a poller runs; with
    `triggered`, a record on dastra.poller-triggers.v1 right after each creation (the baseline:
    no waiting for the interval). Latencies from dateCreation to a read_committed consumer."""
    catalogue = load_catalogue(default_topics_file())
    arrivals: dict[int, float] = {}
    stop_consumer, reading = threading.Event(), threading.Event()
    reader = threading.Thread(
        target=_common.record_arrivals,
        args=(kafka, kafka.topic(RIGHTS_REQUESTS), stop_consumer, arrivals, reading),
        daemon=True,
    )
    reader.start()
    created: dict[int, float] = {}
    rng = random.Random(7)
    trigger = Producer(kafka.confluent_config(**{"linger.ms": 0})) if triggered else None
    what = "baseline (triggered)" if triggered else "latency"
    async with DastraClient(sandbox.dastra_settings()) as client:
        poller = Poller(kafka, PollerSettings(), catalogue, client, workspaces=[ws], start="now")
        stop, ready = asyncio.Event(), asyncio.Event()
        running = asyncio.create_task(poller.run(stop=stop, ready=ready))
        async with asyncio.timeout(60):
            await ready.wait()
        if not await asyncio.to_thread(reading.wait, 60):
            raise RuntimeError("the event reader did not start")
        with _console.status("") as status:
            for n in range(items):
                status.update(f"{what}: created {n}/{items}, arrived {len(arrivals)}")
                await asyncio.sleep(rng.expovariate(1 / 0.25))
                item = await asyncio.to_thread(
                    sandbox.admin.create_rights_request, title=f"latency {n}"
                )
                if trigger is not None:
                    key, value = trigger_record(ws, "bench")
                    trigger.produce(kafka.topic(POLLER_TRIGGERS), key=key, value=value)
                    trigger.poll(0)
                created[int(item["id"])] = datetime.fromisoformat(
                    item["dateCreation"].replace("Z", "+00:00")
                ).timestamp()
            deadline = time.monotonic() + 60
            while len(arrivals) < len(created) and time.monotonic() < deadline:
                status.update(f"{what}: waiting for {len(created) - len(arrivals)} events")
                await asyncio.sleep(0.1)
        stop.set()
        await running
    if trigger is not None and trigger.flush(30):
        raise RuntimeError("poller triggers not acknowledged")
    stop_consumer.set()
    reader.join(10)
    return [arrivals[i] - created[i] for i in created if i in arrivals]


def _summary(latencies: list[float], items: int) -> dict[str, Any]:
    return {
        "items": len(latencies),
        "lost": items - len(latencies),
        "p50_s": round(statistics.median(latencies), 3),
        "p99_s": round(_common.percentile(latencies, 0.99), 3),
        "max_s": round(max(latencies), 3),
    }


def main() -> None:
    configure_logging(ServiceSettings(log_level="warning"))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--latency-items", type=int, default=200)
    parser.add_argument("--smoke", action="store_true", help="the smallest run")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.latency_items = 200, 10
    with _common.kafka() as kafka, SandboxServer(SandboxSettings(rate_limit=False)) as sandbox:
        admin = AdminClient(kafka.confluent_config())
        apply(admin, plan(admin, load_catalogue(default_topics_file()), kafka.topic_prefix))
        ws = sandbox.workspace_id
        with _console.status(f"creating {args.items} rights requests in the sandbox"):
            for start in range(0, args.items, 5000):
                sandbox.admin.bulk_create(
                    "rightsRequests", min(5000, args.items - start), title="bench {n}"
                )
        sandbox.admin.reset_calls()
        with _console.status("baseline: fetching every page without producing"):
            fetched, fetch_s = asyncio.run(_fetch_only(sandbox, ws, PollerSettings()))
        fetch_calls = _list_calls(sandbox)
        if fetched != args.items:
            raise SystemExit(f"the baseline fetched {fetched} items, not {args.items}")
        sandbox.admin.reset_calls()
        with _console.status(f"backfill: publishing {args.items} events"):
            published, publish_s = asyncio.run(_backfill(kafka, sandbox, ws))
        backfill_calls = _list_calls(sandbox)
        if published != args.items:
            raise SystemExit(f"the backfill published {published} events, not {args.items}")
        latencies = asyncio.run(_latency(kafka, sandbox, ws, args.latency_items, triggered=False))
        baseline_items = max(5, args.latency_items // 4)
        triggered = asyncio.run(_latency(kafka, sandbox, ws, baseline_items, triggered=True))
    fetch_rate = fetched / fetch_s
    publish_rate = published / publish_s
    print(
        json.dumps(
            {
                "benchmark": "poller",
                "backfill": {
                    "items": published,
                    "seconds": round(publish_s, 3),
                    "events_per_s": round(publish_rate, 1),
                    "baseline_fetch_items_per_s": round(fetch_rate, 1),
                    "baseline_fetch_seconds": round(fetch_s, 3),
                    "baseline_list_requests": fetch_calls,
                    "backfill_list_requests": backfill_calls,
                    "ratio_to_fetch_only": round(publish_rate / fetch_rate, 3),
                },
                "trigger_latency": {
                    **_summary(latencies, args.latency_items),
                    "baseline_triggered": _summary(triggered, baseline_items),
                    "ratio_p50": _common.ratio(
                        statistics.median(latencies), statistics.median(triggered)
                    ),
                    "ratio_p99": _common.ratio(
                        _common.percentile(latencies, 0.99), _common.percentile(triggered, 0.99)
                    ),
                    "settings": PollerSettings().model_dump(
                        include={"interval_min_s", "interval_max_s", "page_size", "batch_size"}
                    ),
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
