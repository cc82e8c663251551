"""Benchmark of the command agents; prints one JSON document.

Everything is real and in its own process: the broker (KAFKA_BOOTSTRAP_SERVERS, else a local
one), the sandbox (`dastra-kafka sandbox`) with 50 ms of latency on every API call, and one
`dastra-kafka worker` (WORKER_CONCURRENCY, default 16). This process produces create-task
commands (CloudEvents binary mode) and reads their results. Each phase first sends one warm-up
command and waits for its result, uncounted: a new producer's first records wait for its
metadata and producer id (about 0.6 s here), which is not the steady rate a phase measures.

1. Throughput, sandbox rate limit off (the client's limiter raised out of the way): a burst of
   `--commands` (5 000) create-task commands. Commands/s, against the sequential ideal
   (1 / 50 ms = 20/s) and the concurrency ideal (concurrency x 20/s); p50/p99 from produce to
   result (a burst, so this includes the time spent queued); then `--paced` (500) commands at
   `--paced-rate` (40/s): p50/p99 without queueing. Baseline in the same run: the same number
   of `POST /v1/ws/{ws}/Tasks` made directly at the same rate (DastraClient, same sandbox, same
   latency): ratio = pipeline p50 (p99) / direct p50 (p99); the pipeline's overhead is its
   percentile minus the direct one.
2. The same against the sandbox's 500/min limit, with the client's limiter at the whole key
   (500/min: the worker is alone on it, DASTRA_BUDGET_SHARES=workers=1, so it paces its calls
   at one per 0.12 s): `--limited` (1 000) commands. Achieved rate as a share of the limit,
   429 answers seen by the sandbox, and commands that failed because of them (goal 0).

    .venv/bin/python -m bench.agents [--commands 5000] [--limited 1000] [--concurrency 16]
        [--smoke]   # the smallest run: 20 commands per phase, for the smoke test
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from rich.console import Console

from bench import _common, _services
from bus.admin import apply, plan
from bus.envelope import encode_binary, new_event
from bus.settings import KafkaSettings
from bus.topics import COMMAND_RESULTS, command_topic, default_topics_file, load_catalogue
from dastra.client import DastraClient
from dastra.sandbox import SandboxAdmin
from dastra.settings import DastraSettings

__all__ = ["main"]

_console = Console(stderr=True)
_LIMIT_PER_MINUTE = 500


def _run(
    kafka: KafkaSettings, count: int, tag: str, what: str, rate: float | None = None
) -> dict[str, Any]:
    """Produce `count` create-task commands, at once or at `rate` per second; wait for every
    result."""
    results = kafka.topic(COMMAND_RESULTS)
    consumer = Consumer(
        kafka.confluent_config(
            **{
                "group.id": f"bench-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "fetch.wait.max.ms": 10,
            }
        )
    )
    partitions = consumer.list_topics(results, timeout=10).topics[results].partitions
    consumer.assign(
        [
            TopicPartition(
                results, p, consumer.get_watermark_offsets(TopicPartition(results, p))[1]
            )
            for p in partitions
        ]
    )
    producer = Producer(kafka.confluent_config(**{"enable.idempotence": True, "linger.ms": 5}))
    _warm_up(kafka, producer, consumer, f"{tag}-warm-up")
    sent: dict[str, float] = {}
    arrived: dict[str, float] = {}
    statuses: dict[str, dict[str, Any]] = {}
    began = time.time()
    for n in range(count):
        command_id = f"{tag}-{n}"
        headers, value = _command(command_id, f"Bench {tag} {n}")
        if rate is not None:
            time.sleep(max(0.0, began + n / rate - time.time()))
        sent[command_id] = time.time()
        producer.produce(kafka.topic(command_topic("create-task")), key=command_id.encode(),
                         value=value, headers=headers)  # fmt: skip
        producer.poll(0)
    if producer.flush(30):
        raise RuntimeError("commands not delivered")
    deadline = time.monotonic() + max(120.0, count * 0.5)
    with _console.status(what) as status:
        while len(arrived) < count and time.monotonic() < deadline:
            for message in consumer.consume(500, timeout=0.1):
                if message.error() is not None or message.key() is None:
                    continue
                key = (message.key() or b"").decode()
                if key in sent and key not in arrived:
                    # The result's own timestamp (the worker's produce time, same clock): this
                    # loop only starts reading once every command is produced.
                    arrived[key] = message.timestamp()[1] / 1000
                    statuses[key] = json.loads(message.value() or b"{}")
            status.update(f"{what}: {len(arrived)}/{count} results")
    consumer.close()
    if len(arrived) < count:
        raise RuntimeError(f"{count - len(arrived)} results missing after the deadline")
    elapsed = max(arrived.values()) - began
    latencies = [arrived[k] - sent[k] for k in arrived]
    order = sorted(arrived.values())
    failed = [s for s in statuses.values() if s.get("status") != "succeeded"]
    return {
        "commands": count,
        "seconds": round(elapsed, 3),
        "commands_per_s": round(count / elapsed, 2),
        "p50_produce_to_result_s": round(statistics.median(latencies), 3),
        "p99_produce_to_result_s": round(_common.percentile(latencies, 0.99), 3),
        "failed": len(failed),
        "failed_because_of_429": sum(
            1 for s in failed if (s.get("error") or {}).get("status") == 429
        ),
        "retried_attempts": sum(max(0, int(s.get("attempts", 1)) - 1) for s in statuses.values()),
        "_arrivals": order,
    }


def _command(command_id: str, label: str) -> tuple[Any, bytes | None]:
    """A create-task command, CloudEvents binary mode: its headers and value."""
    return encode_binary(
        new_event(
            type="eu.dastra.command.create-task",
            source="bench",
            id=command_id,
            data={"label": label, "priority": "Medium"},
        )
    )


def _warm_up(kafka: KafkaSettings, producer: Producer, consumer: Consumer, command_id: str) -> None:
    """One command through the whole path before the clock starts, its result awaited.

    A new idempotent producer holds its first records until it has the topic's metadata and its
    producer id: measured, the first ~10 commands of a paced run reached the broker together
    about 0.6 s after they were produced, and with 500 commands they were the p99. A steady
    rate is what the row measures, so the producer (and the worker's path) is warmed first."""
    headers, value = _command(command_id, "Bench warm-up")
    topic = kafka.topic(command_topic("create-task"))
    producer.produce(topic, key=command_id.encode(), value=value, headers=headers)
    if producer.flush(30):
        raise RuntimeError("the warm-up command was not delivered")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for message in consumer.consume(100, timeout=0.1):
            if message.error() is None and message.key() == command_id.encode():
                return
    raise RuntimeError("no result for the warm-up command within 60 s")


async def _direct(sandbox: dict[str, Any], count: int, rate: float) -> list[float]:
    """The baseline: `count` tasks created directly at `rate`/s; their latencies."""
    settings = DastraSettings(
        base_url=sandbox["base_url"],
        api_key=sandbox["api_key"],
        workspace_id=sandbox["workspace_id"],
        rate_limit_per_minute=1_000_000,
        rate_limit_per_10_minutes=10_000_000,
    )
    ws = sandbox["workspace_id"]
    async with DastraClient(settings) as client:

        def create(n: int) -> Any:
            body = {"label": f"Bench direct {n}", "priority": "Medium"}
            return client.create_task(ws, body, retry=False)

        latencies, results = await _common.paced(create, count, rate)
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        raise RuntimeError(f"{len(failed)} direct calls failed: {failed[0]!r}")
    return [x for x in latencies if x is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--commands", type=int, default=5000)
    parser.add_argument("--limited", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.05, help="sandbox latency, seconds")
    parser.add_argument("--paced", type=int, default=500, help="commands of the paced run")
    parser.add_argument("--paced-rate", type=float, default=40.0, help="its commands/s")
    parser.add_argument("--smoke", action="store_true", help="the smallest run (20 per phase)")
    args = parser.parse_args()
    if args.smoke:
        args.commands = args.limited = args.paced = 20
    sequential_ideal = 1 / args.latency if args.latency > 0 else float("inf")
    with (
        tempfile.TemporaryDirectory(prefix="bench-agents-") as tmp,
        _common.kafka() as kafka,
        _services.sandbox(Path(tmp)) as sandbox,
    ):
        workdir = Path(tmp)
        admin_client = AdminClient(kafka.confluent_config())
        apply(admin_client, plan(admin_client, load_catalogue(default_topics_file()),
                                 kafka.topic_prefix))  # fmt: skip
        admin = SandboxAdmin(sandbox["base_url"])
        admin.configure(rate_limit=False)
        if args.latency > 0:
            admin.inject_fault("/v1/*", latency_s=args.latency)
        concurrency = str(args.concurrency)
        with _services.worker(kafka, sandbox, workdir, WORKER_CONCURRENCY=concurrency,
                     DASTRA_RATE_LIMIT_PER_MINUTE="1000000",
                     DASTRA_RATE_LIMIT_PER_10_MINUTES="10000000"):  # fmt: skip
            free = _run(kafka, args.commands, "free", "rate limit off")
            paced = _run(kafka, args.paced, "paced", "paced", rate=args.paced_rate)
        with _console.status("baseline: the same calls made directly"):
            direct = _common.latency_summary(
                asyncio.run(_direct(sandbox, args.paced, args.paced_rate))
            )
        admin.configure(rate_limit=True)  # Dastra's 500/min and 10 000/10 min
        admin.reset_calls()
        # The worker is alone on the key here: the workers' part is all of it.
        with _services.worker(kafka, sandbox, workdir, WORKER_CONCURRENCY=concurrency,
                     DASTRA_BUDGET_SHARES="workers=1"):  # fmt: skip
            limited = _run(kafka, args.limited, "limited", "500/min limit")
        # The sustained rate: results 501..N over the time they took (without pacing, the first
        # 500 would pass at once; the measure stays comparable with earlier runs).
        arrivals = limited.pop("_arrivals")
        free.pop("_arrivals")
        paced.pop("_arrivals")
        burst = min(_LIMIT_PER_MINUTE, len(arrivals) - 1)
        tail = len(arrivals) - burst
        span = arrivals[-1] - arrivals[burst - 1] if burst >= 1 else 0.0
        sustained = tail / span if tail > 0 and span > 0 else float("nan")
        statuses = admin.status_counts().get("POST /v1/ws/{ws}/Tasks", {})
        admin.close()
    concurrency_ideal = args.concurrency * sequential_ideal
    limit_per_s = _LIMIT_PER_MINUTE / 60
    print(
        json.dumps(
            {
                "benchmark": "agents",
                "sandbox_latency_s": args.latency,
                "concurrency": args.concurrency,
                "rate_limit_off": {
                    **free,
                    "sequential_ideal_per_s": sequential_ideal,
                    "concurrency_ideal_per_s": concurrency_ideal,
                    "ratio_to_sequential_ideal": round(
                        free["commands_per_s"] / sequential_ideal, 2
                    ),
                    "ratio_to_concurrency_ideal": round(
                        free["commands_per_s"] / concurrency_ideal, 3
                    ),
                },
                "paced_latency": {
                    "commands": paced["commands"],
                    "rate_per_s": args.paced_rate,
                    "p50_produce_to_result_s": paced["p50_produce_to_result_s"],
                    "p99_produce_to_result_s": paced["p99_produce_to_result_s"],
                    "failed": paced["failed"],
                    "note": "well below capacity: one 50 ms Dastra call plus the pipeline",
                    "baseline_direct_create_task": direct,
                    "overhead_p50_ms": _overhead(
                        paced["p50_produce_to_result_s"], direct["p50_ms"]
                    ),
                    "overhead_p99_ms": _overhead(
                        paced["p99_produce_to_result_s"], direct["p99_ms"]
                    ),
                    "ratio_p50": _common.ratio(
                        paced["p50_produce_to_result_s"] * 1000, direct["p50_ms"]
                    ),
                    "ratio_p99": _common.ratio(
                        paced["p99_produce_to_result_s"] * 1000, direct["p99_ms"]
                    ),
                },
                "rate_limited": {
                    **limited,
                    "note": f"{args.limited} commands, not {args.commands}: at 500/min each "
                    "500 take a minute; client limiter at the whole key (DASTRA_BUDGET_SHARES="
                    "workers=1), paced at one call per 0.12 s",
                    "limit_per_s": round(limit_per_s, 3),
                    "share_of_limit_overall": round(limited["commands_per_s"] / limit_per_s, 3),
                    "sustained_commands_per_s": round(sustained, 3),
                    "share_of_limit_sustained": round(sustained / limit_per_s, 3),
                    "sustained_note": "after the first 500 results (the window's initial "
                    "allowance), until the last",
                    "sandbox_429_answers": int(statuses.get("429", 0)),
                },
            },
            indent=2,
        )
    )


def _overhead(pipeline_s: float, direct_ms: float | int | None) -> float | None:
    return None if direct_ms is None else round(pipeline_s * 1000 - direct_ms, 2)


if __name__ == "__main__":
    main()
