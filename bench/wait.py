"""Benchmark of the `?wait` round trip of a search; prints one JSON document.

Everything is real and in its own process: the broker (KAFKA_BOOTSTRAP_SERVERS, else a local
one), the sandbox (`dastra-kafka sandbox`, `--latency` 50 ms on every API call, its rate limit
off: 20 searches/s is above Dastra's 500/min), one `dastra-kafka worker` and one `dastra-kafka
webhook`. This process sends `POST /v1/commands/search-actors?wait=10` with an e-mail that one
seeded actor has, at `--rate` (20/s, open loop) for `--seconds` (30): webhook -> command topic ->
worker -> `GET /v1/ws/{ws}/Actors` -> result topic -> the webhook's result reader -> the 200
answer. p50/p99 of the round trip, answers that were not 200 (a 202 is a `?wait` that timed
out) counted apart.

Baseline in the same run: the same search (`GET /v1/ws/{ws}/Actors?email=...`, DastraClient)
made directly against the same sandbox, with the same latency, at the same rate and count.
Ratios = round trip p50 (p99) / direct p50 (p99); overhead = round trip - direct.

    .venv/bin/python -m bench.wait [--rate 20] [--seconds 30] [--latency 0.05] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka.admin import AdminClient
from rich.console import Console

from bench import _common, _services
from bus.admin import apply, plan
from bus.logs import configure_logging
from bus.settings import ServiceSettings
from bus.topics import default_topics_file, load_catalogue
from dastra.client import DastraClient
from dastra.filters import Rule
from dastra.sandbox import SandboxAdmin
from dastra.settings import DastraSettings

__all__ = ["main"]

_console = Console(stderr=True)
_TOKEN = "bench-token-0123456789"
_ACTORS = 100


def _email(n: int) -> str:
    return f"dpo{n % _ACTORS + 1}@vendor.example"  # bulk_create numbers from 1


async def _direct(sandbox: dict[str, Any], count: int, rate: float) -> list[float]:
    """The baseline: the worker's search call made directly, `count` times at `rate`/s."""
    settings = DastraSettings(
        base_url=sandbox["base_url"],
        api_key=sandbox["api_key"],
        workspace_id=sandbox["workspace_id"],
        rate_limit_per_minute=1_000_000,
        rate_limit_per_10_minutes=10_000_000,
    )
    ws = sandbox["workspace_id"]
    async with DastraClient(settings) as client:

        async def search(n: int) -> int:
            page = await client.actors_page(
                ws, size=10, filters=Rule("email", "equal", _email(n)), retry=False
            )
            return len(page.items)

        latencies, results = await _common.paced(search, count, rate)
    if any(r != 1 for r in results):
        raise RuntimeError(f"direct searches did not find their actor: {results[:5]}")
    return [x for x in latencies if x is not None]


async def _round_trips(webhook: str, count: int, rate: float) -> tuple[list[float], dict[str, int]]:
    """`count` searches with `?wait=10` at `rate`/s; latencies of the 200 answers, statuses."""
    limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
    headers = {"Authorization": f"Bearer {_TOKEN}"}
    async with httpx.AsyncClient(base_url=webhook, limits=limits, timeout=30) as client:
        # Warm-up: the webhook's producer and result reader, the worker's first command.
        for n in range(3):
            await client.post(
                "/v1/commands/search-actors?wait=20", json={"email": _email(n)}, headers=headers
            )

        async def search(n: int) -> httpx.Response:
            return await client.post(
                "/v1/commands/search-actors?wait=10", json={"email": _email(n)}, headers=headers
            )

        latencies, answers = await _common.paced(search, count, rate)
    statuses: dict[str, int] = {}
    ok: list[float] = []
    for latency, answer in zip(latencies, answers, strict=True):
        failed = isinstance(answer, BaseException)
        key = type(answer).__name__ if failed else str(answer.status_code)
        statuses[key] = statuses.get(key, 0) + 1
        if latency is not None and not failed and answer.status_code == 200:
            if len(answer.json()) != 1:
                raise RuntimeError(f"a search found {len(answer.json())} actors, not 1")
            ok.append(latency)
    return ok, statuses


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    count = max(1, round(args.rate * args.seconds))
    with (
        tempfile.TemporaryDirectory(prefix="bench-wait-") as tmp,
        _common.kafka() as kafka,
        _services.sandbox(Path(tmp)) as sandbox,
    ):
        workdir = Path(tmp)
        admin_client = AdminClient(kafka.confluent_config())
        catalogue = load_catalogue(default_topics_file())
        apply(admin_client, plan(admin_client, catalogue, kafka.topic_prefix))
        with SandboxAdmin(sandbox["base_url"]) as admin:
            admin.configure(rate_limit=False)
            admin.bulk_create("actors", _ACTORS, email="dpo{n}@vendor.example")
            if args.latency > 0:
                admin.inject_fault("/v1/*", latency_s=args.latency)
            with _console.status(f"baseline: {count} searches made directly at {args.rate}/s"):
                direct = asyncio.run(_direct(sandbox, count, args.rate))
            unlimited = {
                "DASTRA_RATE_LIMIT_PER_MINUTE": "1000000",
                "DASTRA_RATE_LIMIT_PER_10_MINUTES": "10000000",
            }
            with (
                _services.worker(kafka, sandbox, workdir, **unlimited),
                _services.webhook(kafka, _TOKEN, workdir / "webhook.log") as webhook,
                _console.status(f"?wait: {count} searches through the webhook at {args.rate}/s"),
            ):
                trips, statuses = asyncio.run(_round_trips(webhook, count, args.rate))
    trip = _common.latency_summary(trips)
    base = _common.latency_summary(direct)
    return {
        "benchmark": "wait",
        "rate_per_s": args.rate,
        "requests": count,
        "sandbox_latency_s": args.latency,
        "round_trip": {**trip, "statuses": statuses, "answered_200": len(trips)},
        "baseline_direct_search": base,
        "ratio_p50": _common.ratio(trip["p50_ms"], base["p50_ms"]),
        "ratio_p99": _common.ratio(trip["p99_ms"], base["p99_ms"]),
        "overhead_p50_ms": _minus(trip["p50_ms"], base["p50_ms"]),
        "overhead_p99_ms": _minus(trip["p99_ms"], base["p99_ms"]),
        "note": "sandbox rate limit off (20/s is above Dastra's 500/min); one search = one "
        "GET .../Actors?email=; non-200 answers are counted in statuses, not in the latencies",
    }


def _minus(a: float | int | None, b: float | int | None) -> float | None:
    return None if a is None or b is None else round(a - b, 2)


def main() -> None:
    """Run the benchmark and print its JSON document."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="searches per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--latency", type=float, default=0.05, help="sandbox latency, seconds")
    parser.add_argument("--smoke", action="store_true", help="the smallest run (20 searches)")
    args = parser.parse_args()
    if args.smoke:
        args.seconds = 1.0
    configure_logging(ServiceSettings(log_level="warning"))
    print(json.dumps(_measure(args), indent=2))


if __name__ == "__main__":
    main()
