"""Benchmark of the trigger after a quiet spell (polling only); prints one JSON document.

One poller (in this process) watches `--workspaces` (20) sandbox workspaces, each with its own
poll loop, against the in-process sandbox (rate limit off, no latency), polling as often as
`--budget-share` (25 %) of Dastra's request limit allows: `POLLER_IDLE_BUDGET_SHARE`, with
`POLLER_INTERVAL_MAX_S` at the 1 s minimum, so the budget sets the idle interval. With
`--keys per-workspace` (the default) each workspace stands for a tenant with its own API key
(the client's limiter holds that many keys' limits): one workspace per key, the goal's case.
With `--keys shared` all of them share one key, as one tenant's workspaces do, and each is
polled that many times less often. Nothing happens for `--quiet-minutes` (10) after every
workspace's first cycle; then one rights request is created in each workspace, at a random
moment within the next idle interval (so each lands at a random phase of its loop).
Latency: from the item's `dateCreation` to its event at a read_committed consumer, p50/p99
over the workspaces. Request budget: the poller's Dastra calls during the quiet spell per
minute, as a share of the keys' 500/min (and of 10 000/10 min; the larger share is
`budget_share`).

Baseline in the same run: the same, with a record on `dastra.poller-triggers.v1` produced right
after each creation (what Dastra's webhook receiver sends): the pipeline without waiting for
the interval. Ratios = quiet p50 (p99) / triggered p50 (p99).

    .venv/bin/python -m bench.quiet [--quiet-minutes 10] [--workspaces 20] [--keys shared]
                                    [--budget-share 0.25] [--smoke]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
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
from dastra.ratelimit import RateLimiter
from dastra.sandbox import SandboxServer
from dastra.sandbox.settings import SandboxSettings
from producers.poller import Poller
from producers.poller.settings import PollerSettings

__all__ = ["main"]

_console = Console(stderr=True)
# Dastra's limits on one API key.
_PER_MINUTE = 500
_PER_10_MINUTES = 10_000


def _api_calls(sandbox: SandboxServer) -> int:
    return sum(n for key, n in sandbox.admin.call_counts().items() if " /v1/" in key)


async def _create(
    sandbox: SandboxServer,
    workspaces: list[int],
    spread_s: float,
    rng: random.Random,
    trigger: Producer | None,
    kafka: KafkaSettings,
) -> dict[int, float]:
    """One rights request per workspace at a random moment within `spread_s`; with `trigger`,
    a poller trigger right after each. Returns id -> dateCreation."""
    created: dict[int, float] = {}

    async def one(ws: int) -> None:
        await asyncio.sleep(rng.uniform(0, spread_s))
        item = await asyncio.to_thread(sandbox.admin.create_rights_request, ws, title=f"quiet {ws}")
        if trigger is not None:
            key, value = trigger_record(ws, "bench")
            trigger.produce(kafka.topic(POLLER_TRIGGERS), key=key, value=value)
            trigger.poll(0)
        created[int(item["id"])] = _common.created_at(item)

    await asyncio.gather(*(one(ws) for ws in workspaces))
    if trigger is not None and trigger.flush(30):
        raise RuntimeError("poller triggers not acknowledged")
    return created


async def _measure(
    kafka: KafkaSettings,
    sandbox: SandboxServer,
    quiet_s: float,
    seed: int,
    *,
    shared_key: bool,
    budget_share: float,
) -> dict[str, Any]:
    assert sandbox.runtime is not None
    workspaces = sorted(sandbox.runtime.state.workspaces)
    settings = PollerSettings(interval_max_s=1.0, idle_budget_share=budget_share)
    dastra = sandbox.dastra_settings()
    keys = 1 if shared_key else len(workspaces)
    limiter = RateLimiter([(limit * keys, period) for limit, period in dastra.key_windows()])
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
    rng = random.Random(seed)
    first_cycle: set[int] = set()
    all_cycled = asyncio.Event()

    def on_cycle(ws: int, _published: int) -> None:
        first_cycle.add(ws)
        if len(first_cycle) == len(workspaces):
            all_cycled.set()

    trigger = Producer(kafka.confluent_config(**{"linger.ms": 0}))
    try:
        async with DastraClient(dastra, limiter=limiter) as client:
            poller = Poller(kafka, settings, catalogue, client, workspaces=workspaces, start="now")
            idle = poller.idle_interval
            stop = asyncio.Event()
            running = asyncio.create_task(poller.run(stop=stop, on_cycle=on_cycle))
            try:
                async with asyncio.timeout(120):
                    await all_cycled.wait()
                await asyncio.to_thread(sandbox.admin.reset_calls)
                began = time.monotonic()
                with _console.status(f"quiet for {quiet_s:.0f} s") as status:
                    while (left := began + quiet_s - time.monotonic()) > 0:
                        status.update(f"quiet: {left:.0f} s left")
                        await asyncio.sleep(min(1.0, left))
                quiet_calls = await asyncio.to_thread(_api_calls, sandbox)
                quiet_elapsed = time.monotonic() - began
                with _console.status("one item per workspace after the quiet spell"):
                    # A random phase of an idle loop (a spell shorter than that, in smoke runs,
                    # has not reached the longest interval).
                    spread = min(idle, quiet_s)
                    quiet = await _create(sandbox, workspaces, spread, rng, None, kafka)
                    await _common.wait_for_arrivals(arrivals, quiet, idle + 60)
                if not reader.is_alive():
                    raise RuntimeError("the event reader stopped (see its traceback above)")
                with _console.status("baseline: one item per workspace, triggered"):
                    triggered = await _create(sandbox, workspaces, 1.0, rng, trigger, kafka)
                    await _common.wait_for_arrivals(arrivals, triggered, idle + 60)
            finally:
                stop.set()
                await running
    finally:
        stop_reader.set()
        reader.join(10)
    if len(set(quiet) | set(triggered)) != 2 * len(workspaces):
        raise RuntimeError("the sandbox gave two items the same id")
    late = [i for i in [*quiet, *triggered] if i not in arrivals]
    quiet_samples = sorted(arrivals[i] - quiet[i] for i in quiet if i in arrivals)
    base_samples = sorted(arrivals[i] - triggered[i] for i in triggered if i in arrivals)
    quiet_summary = _common.in_seconds(_common.latency_summary(quiet_samples))
    base = _common.in_seconds(_common.latency_summary(base_samples))
    per_minute = quiet_calls / len(workspaces) / (quiet_elapsed / 60)
    per_key_minute = quiet_calls / keys / (quiet_elapsed / 60)
    share_minute = per_key_minute / _PER_MINUTE
    share_10_minutes = per_key_minute * 10 / _PER_10_MINUTES
    return {
        "benchmark": "quiet",
        "quiet_s": round(quiet_elapsed, 1),
        "workspaces": len(workspaces),
        "keys": keys,
        "idle_interval_s": round(idle, 3),
        "settings": settings.model_dump(
            include={
                "interval_min_s",
                "interval_max_s",
                "idle_budget_share",
                "late_window_s",
                "late_every_s",
            }
        ),
        "trigger_latency": {**quiet_summary, "samples_s": [round(x, 3) for x in quiet_samples]},
        "baseline_triggered": {**base, "samples_s": [round(x, 3) for x in base_samples]},
        "missing": len(late),
        "ratio_p50": _common.ratio(quiet_summary["p50_s"], base["p50_s"]),
        "ratio_p99": _common.ratio(quiet_summary["p99_s"], base["p99_s"]),
        "requests_during_quiet": quiet_calls,
        "requests_per_minute_per_workspace": round(per_minute, 2),
        "requests_per_minute_per_key": round(per_key_minute, 2),
        "budget_share_per_minute": round(share_minute, 4),
        "budget_share_per_10_minutes": round(share_10_minutes, 4),
        "budget_share": round(max(share_minute, share_10_minutes), 4),
        "note": "budget shares are of one key's limits (the keys' requests per minute over "
        "their number); latencies from dateCreation to a read_committed consumer",
    }


def main() -> None:
    """Run the benchmark and print its JSON document."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quiet-minutes", type=float, default=10.0)
    parser.add_argument("--workspaces", type=int, default=20, help="samples (at most 50)")
    parser.add_argument(
        "--keys",
        choices=("per-workspace", "shared"),
        default="per-workspace",
        help="an API key per workspace (one-workspace tenants), or one key for all",
    )
    parser.add_argument(
        "--budget-share", type=float, default=0.25, help="POLLER_IDLE_BUDGET_SHARE (0 to 1)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--smoke", action="store_true", help="3 s of quiet, 2 workspaces")
    args = parser.parse_args()
    if args.smoke:
        args.quiet_minutes, args.workspaces = 0.05, 2
    configure_logging(ServiceSettings(log_level="warning"))
    with (
        _common.kafka() as kafka,
        SandboxServer(SandboxSettings(rate_limit=False, workspaces=args.workspaces)) as sandbox,
    ):
        admin = AdminClient(kafka.confluent_config())
        apply(admin, plan(admin, load_catalogue(default_topics_file()), kafka.topic_prefix))
        result = asyncio.run(
            _measure(
                kafka,
                sandbox,
                args.quiet_minutes * 60,
                args.seed,
                shared_key=args.keys == "shared",
                budget_share=args.budget_share,
            )
        )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
