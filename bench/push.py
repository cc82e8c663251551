"""Benchmark of the trigger with Dastra's webhook pushing a poll; prints one JSON document.

The in-process sandbox (rate limit off, no latency, `--workspaces` workspaces) has Dastra's
webhook registered for DataSubjectCreation in every workspace (`POST /v1/WebHookUrls`), pointing
at `dastra-kafka webhook` (a subprocess; DASTRA_WEBHOOK_SIGNING_KEYS = the webhooks'
signatureKeys). One poller (in this process) watches every workspace with a poll interval of
`--interval` seconds (300: no scheduled cycle falls within the run, so the push alone explains
each event). After every workspace's first cycle, `--items` rights requests are created at
`--rate` per second, each in a random workspace; the sandbox then POSTs its signed delivery,
the webhook writes a trigger on `dastra.poller-triggers.v1`, the poller's listener wakes that
workspace and its cycle publishes the item.
Latency: from the item's `dateCreation` to its event at a read_committed consumer, p50/p99.

Baseline in the same run: the same number of items with the sandbox's webhook deleted and a
record on `dastra.poller-triggers.v1` produced right after each creation (as bench.quiet's
baseline): the poller's share of the path without the sandbox's delivery and the webhook's
HTTP hop. Ratio = push p99 / triggered p99.

    .venv/bin/python -m bench.push [--items 120] [--rate 1] [--workspaces 20] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from rich.console import Console

from bench import _common, _services
from bus.admin import apply, plan
from bus.logs import configure_logging
from bus.records.poller import trigger_record
from bus.settings import KafkaSettings, ServiceSettings
from bus.topics import POLLER_TRIGGERS, RIGHTS_REQUESTS, default_topics_file, load_catalogue
from dastra.client import DastraClient
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from producers.poller import Poller
from producers.poller.settings import PollerSettings

__all__ = ["main"]

_console = Console(stderr=True)
_TOKEN = "bench-push-token-0123456789"


async def _create(
    sandbox: SandboxServer,
    workspaces: list[int],
    count: int,
    rate: float,
    rng: random.Random,
    trigger: Producer | None,
    kafka: KafkaSettings,
) -> dict[int, float]:
    """`count` rights requests at `rate`/s in random workspaces; with `trigger`, a poller
    trigger right after each. Returns id -> dateCreation."""
    created: dict[int, float] = {}
    chosen = [rng.choice(workspaces) for _ in range(count)]

    async def one(n: int) -> None:
        ws = chosen[n]
        item = await asyncio.to_thread(sandbox.admin.create_rights_request, ws, title=f"push {n}")
        if trigger is not None:
            key, value = trigger_record(ws, "bench")
            trigger.produce(kafka.topic(POLLER_TRIGGERS), key=key, value=value)
            trigger.poll(0)
        created[int(item["id"])] = _common.created_at(item)

    await _common.paced(one, count, rate)
    if trigger is not None and trigger.flush(30):
        raise RuntimeError("poller triggers not acknowledged")
    return created


async def _measure(
    kafka: KafkaSettings,
    sandbox: SandboxServer,
    args: argparse.Namespace,
) -> dict[str, Any]:
    assert sandbox.runtime is not None
    workspaces = sorted(sandbox.runtime.state.workspaces)
    settings = PollerSettings(interval_min_s=args.interval, interval_max_s=args.interval)
    catalogue = load_catalogue(default_topics_file())
    arrivals: dict[int, float] = {}
    stop_reader, reading = threading.Event(), threading.Event()
    reader = threading.Thread(
        target=_common.record_arrivals,
        args=(kafka, kafka.topic(RIGHTS_REQUESTS), stop_reader, arrivals, reading),
        daemon=True,
    )
    reader.start()
    if not await asyncio.to_thread(reading.wait, 90):
        stop_reader.set()
        raise RuntimeError("the event reader did not start (see its traceback above)")
    rng = random.Random(args.seed)
    cycles: dict[int, int] = {}
    all_cycled = asyncio.Event()

    def on_cycle(ws: int, _published: int) -> None:
        cycles[ws] = cycles.get(ws, 0) + 1
        if len(cycles) == len(workspaces):
            all_cycled.set()

    trigger = Producer(kafka.confluent_config(**{"linger.ms": 0}))
    api = httpx.AsyncClient(base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key})
    try:
        async with DastraClient(sandbox.dastra_settings()) as client:
            poller = Poller(kafka, settings, catalogue, client, workspaces=workspaces, start="now")
            stop = asyncio.Event()
            running = asyncio.create_task(poller.run(stop=stop, on_cycle=on_cycle))
            try:
                async with asyncio.timeout(120):
                    await all_cycled.wait()
                first_cycles = sum(cycles.values())
                began = time.monotonic()
                with _console.status(f"{args.items} items, pushed"):
                    pushed = await _create(
                        sandbox, workspaces, args.items, args.rate, rng, None, kafka
                    )
                    await _common.wait_for_arrivals(arrivals, pushed, 60)
                pushed_s = time.monotonic() - began
                pushed_cycles = sum(cycles.values()) - first_cycles
                hooks = (await api.get("/v1/WebHookUrls")).json()
                for hook in hooks:
                    await api.delete(f"/v1/WebHookUrls/{hook['id']}")
                if not reader.is_alive():
                    raise RuntimeError("the event reader stopped (see its traceback above)")
                with _console.status("baseline: the same, a trigger record after each"):
                    triggered = await _create(
                        sandbox, workspaces, args.items, args.rate, rng, trigger, kafka
                    )
                    await _common.wait_for_arrivals(arrivals, triggered, 60)
            finally:
                stop.set()
                await running
    finally:
        await api.aclose()
        stop_reader.set()
        reader.join(10)
    if len(set(pushed) | set(triggered)) != 2 * args.items:
        raise RuntimeError("the sandbox gave two items the same id")
    missing = [i for i in [*pushed, *triggered] if i not in arrivals]
    push_samples = sorted(arrivals[i] - pushed[i] for i in pushed if i in arrivals)
    base_samples = sorted(arrivals[i] - triggered[i] for i in triggered if i in arrivals)
    push = _common.in_seconds(_common.latency_summary(push_samples))
    base = _common.in_seconds(_common.latency_summary(base_samples))
    return {
        "benchmark": "push",
        "workspaces": len(workspaces),
        "items": args.items,
        "rate_per_s": args.rate,
        "poll_interval_s": args.interval,
        "pushed_seconds": round(pushed_s, 1),
        "pushed_cycles": pushed_cycles,
        "webhook_errors": sum(h["nbErrors"] for h in hooks),
        "webhooks_blocked": sum(1 for h in hooks if h["inError"]),
        "sandbox_deliveries": {
            "delivered": sandbox.runtime.webhooks.delivered,
            "failed": sandbox.runtime.webhooks.failed,
        },
        "trigger_latency": {**push, "samples_s": [round(x, 3) for x in push_samples]},
        "baseline_triggered": {**base, "samples_s": [round(x, 3) for x in base_samples]},
        "missing": len(missing),
        "ratio_p50": _common.ratio(push["p50_s"], base["p50_s"]),
        "ratio_p99": _common.ratio(push["p99_s"], base["p99_s"]),
        "note": "latencies from dateCreation to a read_committed consumer; the poll interval is "
        "long enough that no scheduled cycle runs: every event came through the push",
    }


@contextlib.contextmanager
def _pushing(kafka: KafkaSettings, sandbox: SandboxServer, workdir: Path) -> Iterator[None]:
    """The webhook subprocess, registered in the sandbox as Dastra's webhook of every workspace
    (one webhook per workspace, as in Dastra: each with its own key and `?workspaceId=`)."""
    assert sandbox.runtime is not None
    workspaces = sorted(sandbox.runtime.state.workspaces)
    events = ["DataSubjectCreation"]
    with httpx.Client(base_url=sandbox.base_url, headers={"X-API-Key": sandbox.api_key}) as api:
        hooks = []
        for ws in workspaces:
            hook = api.post(
                "/v1/WebHookUrls",
                json={
                    "url": "http://127.0.0.1:9/later",
                    "workSpaceId": ws,
                    "subscribedEvents": events,
                },
            )
            hook.raise_for_status()
            hooks.append(hook.json())
        keys = ",".join(h["signatureKey"] for h in hooks)
        with _services.webhook(
            kafka, _TOKEN, workdir / "webhook.log", DASTRA_WEBHOOK_SIGNING_KEYS=keys
        ) as url:
            for hook in hooks:
                ws = hook["workSpaceId"]
                saved = api.put(
                    f"/v1/WebHookUrls/{hook['id']}",
                    json={
                        "url": f"{url}/v1/dastra/webhook?workspaceId={ws}",
                        "workSpaceId": ws,
                        "subscribedEvents": events,
                    },
                )
                saved.raise_for_status()
            yield


def main() -> None:
    """Run the benchmark and print its JSON document."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--items", type=int, default=120)
    parser.add_argument("--rate", type=float, default=1.0, help="creations per second")
    parser.add_argument("--workspaces", type=int, default=20, help="at most 50")
    parser.add_argument("--interval", type=float, default=300.0, help="poll interval, s")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="6 items, 2 workspaces")
    args = parser.parse_args()
    if args.smoke:
        args.items, args.workspaces = 6, 2
    configure_logging(ServiceSettings(log_level="warning"))
    with (
        _common.kafka() as kafka,
        SandboxServer(SandboxSettings(rate_limit=False, workspaces=args.workspaces)) as sandbox,
        tempfile.TemporaryDirectory(prefix="bench-push-") as workdir,
    ):
        admin = AdminClient(kafka.confluent_config())
        apply(admin, plan(admin, load_catalogue(default_topics_file()), kafka.topic_prefix))
        with _pushing(kafka, sandbox, Path(workdir)):
            result = asyncio.run(_measure(kafka, sandbox, args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
