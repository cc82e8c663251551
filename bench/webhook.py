"""Benchmark of the webhook service and the hook dispatcher; prints one JSON document.

1. `POST /v1/commands/create-task` through `dastra-kafka webhook` (a subprocess, acks=all to a
   broker on the same machine): requests/s and p50/p99 latency from an httpx load generator
   with N concurrent connections, for a bounded time; plain, and with a fresh Idempotency-Key
   per request. Baseline in the same run: a bare FastAPI endpoint (also a subprocess, same
   uvicorn settings) that answers 202 without Kafka. Ratios = webhook / baseline.
2. Hook delivery: a burst of M events on dastra.tasks.v1 delivered by the dispatcher (in this
   process) to one fast local subscriber (a subprocess answering 200 over plain HTTP on
   loopback), signed: with the per-hook rate limit lifted, and at the default settings (a burst
   of D events, far more than the read-ahead, at 25/s). Each run reports deliveries/s against
   the configured rate and counts what was dead-lettered (from the dispatcher's metrics)
   instead of waiting for it.

    .venv/bin/python -m bench.webhook [--seconds 8] [--connections 32] [--events 3000]
        [--default-events 1500] [--smoke]   # --smoke: the smallest run, for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import os
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from rich.console import Console

from bench import _common, _services
from bus.admin import apply, plan
from bus.envelope import encode_binary, new_event
from bus.hooks.settings import HooksSettings
from bus.localkafka import free_port
from bus.logs import configure_logging
from bus.records.subscriptions import HookSubscription
from bus.settings import KafkaSettings, ServiceSettings
from bus.topics import HOOK_SUBSCRIPTIONS, TASKS, default_topics_file, load_catalogue
from consumers.hooks import HookDispatcher

__all__ = ["main"]

_console = Console(stderr=True)
_TOKEN = "bench-token-0123456789"
_TASK = {"label": "Answer the access request", "priority": "High"}


# --- the servers (subprocesses) -----------------------------------------------------------------


def _bare_app() -> FastAPI:
    app = FastAPI()

    @app.post("/v1/commands/create-task")
    async def accept(request: Request) -> JSONResponse:
        json.loads(await request.body())
        body = {"command_id": str(uuid.uuid4()), "status": "accepted"}
        return JSONResponse(body, status_code=202)

    return app


def _sink_app() -> Any:
    count = 0

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal count
        if scope["type"] != "http":
            return
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        if scope["method"] == "POST":
            count += 1
            payload = b""
        else:
            payload = str(count).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": payload})

    return app


def _serve(kind: str, port: int) -> None:
    import uvicorn

    app = _bare_app() if kind == "bare" else _sink_app()
    uvicorn.run(app, host="127.0.0.1", port=port, log_config=None, access_log=False)


def _helper_process(kind: str) -> contextlib.AbstractContextManager[str]:
    port = free_port()
    argv = [sys.executable, "-m", "bench.webhook", f"--serve-{kind}", str(port)]
    return _services.process(argv, {}, port)


# --- load ---------------------------------------------------------------------------------------


async def _load(url: str, seconds: float, connections: int, keyed: bool) -> dict[str, Any]:
    """`connections` workers, each with its own client and one keep-alive connection (one
    shared httpx pool of many connections is itself the bottleneck on a small machine)."""
    latencies: list[float] = []
    errors = 0
    headers = {"Authorization": f"Bearer {_TOKEN}"}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    clients = [
        httpx.AsyncClient(base_url=url, limits=limits, timeout=30) for _ in range(connections)
    ]
    try:
        # Warm-up: connections opened, the producer's first batch sent.
        await asyncio.gather(
            *(c.post("/v1/commands/create-task", json=_TASK, headers=headers) for c in clients)
        )
        stop_at = time.perf_counter() + seconds

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal errors
            while time.perf_counter() < stop_at:
                extra = {"Idempotency-Key": uuid.uuid4().hex} if keyed else {}
                started = time.perf_counter()
                answer = await client.post(
                    "/v1/commands/create-task", json=_TASK, headers={**headers, **extra}
                )
                if answer.status_code == 202:
                    latencies.append(time.perf_counter() - started)
                else:
                    errors += 1

        began = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        elapsed = time.perf_counter() - began
    finally:
        for client in clients:
            await client.aclose()
    return {
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(_common.percentile(latencies, 0.50) * 1000, 2) if latencies else None,
        "p99_ms": round(_common.percentile(latencies, 0.99) * 1000, 2) if latencies else None,
    }


# --- hook delivery ------------------------------------------------------------------------------


def _publish_events(kafka: KafkaSettings, count: int) -> None:
    producer = Producer(kafka.confluent_config(**{"linger.ms": 5}))
    for n in range(count):
        headers, value = encode_binary(
            new_event(
                type="eu.dastra.task.created",
                source="dastra://workspaces/101",
                id=f"dastra:101:task.created:{n}",
                time=datetime.now(UTC),
                data={"id": n, "label": f"task {n}", "description": "x" * 400},
            )
        )
        producer.produce(kafka.topic(TASKS), key=f"101:{n}".encode(), value=value, headers=headers)
        producer.poll(0)
    if producer.flush(30):
        raise RuntimeError("events not acknowledged")


async def _deliveries(
    kafka: KafkaSettings, sink: str, events: int, settings: HooksSettings
) -> dict[str, Any]:
    subscription = HookSubscription.new(event="task.created", target_url=f"{sink}/hook")
    producer = Producer(kafka.confluent_config())
    producer.produce(
        kafka.topic(HOOK_SUBSCRIPTIONS),
        key=subscription.id.encode(),
        value=subscription.model_dump_json().encode(),
    )
    producer.flush(10)
    async with httpx.AsyncClient(base_url=sink, timeout=10) as probe:
        before = int((await probe.get("/count")).text)
        stop, ready = asyncio.Event(), asyncio.Event()
        async with HookDispatcher(kafka, settings) as dispatcher:
            running = asyncio.create_task(dispatcher.run(stop=stop, ready=ready, metrics=False))
            async with asyncio.timeout(60):
                await ready.wait()
            await asyncio.to_thread(_publish_events, kafka, events)
            began = time.perf_counter()
            # Long enough for the configured rate, with room; what is dead-lettered is counted
            # (from the dispatcher's own metrics), never waited for.
            deadline = began + events / settings.rate_per_s * 2 + 120
            delivered = dead = 0
            while time.perf_counter() < deadline:
                delivered = int((await probe.get("/count")).text) - before
                dead = int(
                    dispatcher.registry.get_sample_value(
                        "dastra_hooks_deliveries_total",
                        {"event": "task.created", "outcome": "dead-lettered"},
                    )
                    or 0
                )
                if delivered + dead >= events:
                    break
                await asyncio.sleep(0.05)
            elapsed = time.perf_counter() - began
            stop.set()
            await running
    # Retire the subscription so a second measurement does not deliver twice.
    producer.produce(kafka.topic(HOOK_SUBSCRIPTIONS), key=subscription.id.encode(), value=None)
    producer.flush(10)
    rate = round(delivered / elapsed, 1)
    return {
        "events": events,
        "delivered": delivered,
        "dead_lettered": dead,
        "missing": events - delivered - dead,
        "seconds": round(elapsed, 2),
        "deliveries_per_s": rate,
        "rate_per_s_limit": settings.rate_per_s,
        # With the limit lifted there is no share worth printing.
        "share_of_limit": round(rate / settings.rate_per_s, 3)
        if settings.rate_per_s < 100_000
        else None,
        "concurrency": settings.concurrency,
        "buffer_max": settings.buffer_max,
    }


# --- main ---------------------------------------------------------------------------------------


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    with _common.kafka() as kafka:
        admin = AdminClient(kafka.confluent_config())
        catalogue = load_catalogue(default_topics_file())
        apply(admin, plan(admin, catalogue, prefix=kafka.topic_prefix))
        _console.print("[bold]commands[/]: bare FastAPI baseline")
        with _helper_process("bare") as bare:
            baseline = asyncio.run(_load(bare, args.seconds, args.connections, keyed=False))
        _console.print("[bold]commands[/]: dastra-kafka webhook (acks=all)")
        with _services.webhook(kafka, _TOKEN) as webhook:
            plain = asyncio.run(_load(webhook, args.seconds, args.connections, keyed=False))
            keyed = asyncio.run(_load(webhook, args.seconds, args.connections, keyed=True))
        _console.print("[bold]hooks[/]: delivery to a fast local subscriber")
        loopback = [ipaddress.ip_network("127.0.0.0/8")]
        with _helper_process("sink") as sink:
            lifted = HooksSettings(
                allow_networks=loopback, allow_http=True, rate_per_s=1_000_000, concurrency=16
            )
            fast = asyncio.run(_deliveries(kafka, sink, args.events, lifted))
            default = HooksSettings(allow_networks=loopback, allow_http=True)
            # Far more than one subscriber's read-ahead, at its configured 25/s.
            burst = (
                args.default_events
                if args.smoke
                else max(args.default_events, default.buffer_max * 2)
            )
            limited = asyncio.run(_deliveries(kafka, sink, burst, default))
    return {
        "machine": {"cpus": os.cpu_count()},
        "commands": {
            "connections": args.connections,
            "seconds": args.seconds,
            "baseline_bare_fastapi": baseline,
            "webhook": plain,
            "webhook_with_idempotency_key": keyed,
            "ratio_rps": _ratio(plain["requests_per_s"], baseline["requests_per_s"]),
            "ratio_rps_keyed": _ratio(keyed["requests_per_s"], baseline["requests_per_s"]),
        },
        "hooks": {"rate_limit_lifted": fast, "default_settings": limited},
    }


def _ratio(value: float, baseline: float) -> float | None:
    return round(value / baseline, 3) if baseline else None


def main() -> None:
    """Run the benchmark and print its JSON document."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--events", type=int, default=3000)
    parser.add_argument(
        "--default-events", type=int, default=1500, help="events at the default hook settings"
    )
    parser.add_argument("--smoke", action="store_true", help="the smallest run (about 20 s)")
    parser.add_argument("--serve-bare", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-sink", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        _serve("bare", args.serve_bare)
        return
    if args.serve_sink:
        _serve("sink", args.serve_sink)
        return
    if args.smoke:
        args.seconds, args.connections, args.events, args.default_events = 1.0, 4, 50, 30
    configure_logging(ServiceSettings(log_level="warning"))
    print(json.dumps(_measure(args), indent=2))


if __name__ == "__main__":
    main()
