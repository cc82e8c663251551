"""`dastra-kafka poller` as real processes against the session broker and the sandbox over HTTP:
SIGKILLed in the middle of a backfill and restarted, nothing lost or duplicated; its exit codes;
a second process fences the first, which exits 1, and SIGTERM stops one with 0. (Apart from
test_poller.py, so that the two halves run on different workers.)"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topics import RIGHTS_REQUESTS, TopicCatalogue
from dastra.sandbox import SandboxServer
from tests.consumers.agents_support import Tail
from tests.kafka_helpers import Record, consume, read_all, wait_for


def _ids(records: list[Record]) -> list[int]:
    return [json.loads(r.value or b"{}")["id"] for r in records]


@pytest.mark.parametrize("kills", [4, pytest.param(12, marks=pytest.mark.slow)])
def test_sigkill_during_a_backfill_never_loses_or_duplicates(
    kafka: KafkaSettings,
    topics: TopicCatalogue,
    sandbox: SandboxServer,
    tmp_path: Path,
    kills: int,
) -> None:
    # Enough items that every kill lands in the middle of the backfill (each one moves it on
    # by at most 400 items and a batch): 2 500 for 4 kills, 5 000 for 12.
    total = 2500 if kills <= 4 else 5000
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
        # The sandbox's limit is off; the poller's part of the client's limit must not slow it.
        "DASTRA_RATE_LIMIT_PER_MINUTE": "1000000",
        "DASTRA_RATE_LIMIT_PER_10_MINUTES": "10000000",
    }
    command = [sys.executable, "-m", "dastra_kafka", "poller", "--from", "beginning"]
    rng = random.Random(20261128)
    seen_after_kill: list[int] = []
    log = tmp_path / "poller.log"
    # One read_committed reader for the whole test: what the transactions committed so far,
    # read incrementally (a full read of the topic at every check would cost more than it waits).
    committed = Tail(kafka, RIGHTS_REQUESTS)
    try:
        for kill in range(kills):
            with log.open("ab") as out:
                process = subprocess.Popen(command, env=env, stdout=out, stderr=out)
            # A killed poller may leave a transaction open, which read_committed readers wait for
            # (up to its 60 s timeout). The new poller's init_transactions (same transactional.id)
            # aborts it at once: only read once the new one runs.
            before = len(read_all(kafka, kafka.topic(RIGHTS_REQUESTS)))
            if kill:
                seen_after_kill.append(before)
            target = min(total, before + rng.randint(1, 400))

            # Kill once the backfill moved on by a random amount: in the middle of a batch, between
            # a transaction and the next, wherever that lands.
            def progressed(
                tail: Tail, running: subprocess.Popen[bytes] = process, goal: int = target
            ) -> bool:
                return running.poll() is not None or len(tail.records) >= goal

            committed.wait(progressed, 120, f"the backfill to pass {target} events")
            assert process.poll() is None, log.read_text()[-2000:]
            process.send_signal(signal.SIGKILL)
            process.wait(10)
    finally:
        committed.close()
    final = subprocess.run(
        [*command, "--once", "--json"], env=env, capture_output=True, timeout=240, check=False
    )
    assert final.returncode == 0, final.stderr[-2000:]

    records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=total, timeout=60, to_end=True)
    counts = Counter(_ids(records))
    assert len(counts) == total
    assert max(counts.values()) == 1
    # The kills really interrupted the backfill: progress was partial and growing.
    partial = [n for n in seen_after_kill if 0 < n < total]
    assert len(partial) == kills - 1, seen_after_kill
    assert partial == sorted(partial)


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
            "POLLER_TRANSACTION_TIMEOUT_S": "2",  # how long init_transactions tries
        },
        "--once",
    )
    assert no_kafka.returncode == 3, no_kafka.stderr
    assert "cannot reach Kafka" in no_kafka.stderr


def test_cli_a_fenced_poller_exits_1_and_sigterm_stops_one_with_0(
    kafka: KafkaSettings, topics: TopicCatalogue, sandbox: SandboxServer, tmp_path: Path
) -> None:
    ws = sandbox.workspace_id
    ports = [free_port(), free_port()]
    env = {
        **os.environ,
        **sandbox.env(),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "POLLER_INTERVAL_MIN_S": "0.1",
        "POLLER_INTERVAL_MAX_S": "0.3",
        "SERVICE_LOG_LEVEL": "warning",
    }
    command = [sys.executable, "-m", "dastra_kafka", "poller", "--workspace", str(ws)]
    logs = [tmp_path / "first.log", tmp_path / "second.log"]
    processes: list[subprocess.Popen[bytes]] = []

    def cycled(port: int) -> bool:
        """Has the poller behind `port` finished a cycle (so it owns its producer)?"""
        try:
            text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).text
        except httpx.HTTPError:
            return False
        return any(
            sample.value >= 1
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "dastra_poller_cycles_total"
        )

    def start(n: int) -> subprocess.Popen[bytes]:
        with logs[n].open("wb") as out:
            process = subprocess.Popen(
                command, env={**env, "POLLER_METRICS_PORT": str(ports[n])}, stdout=out, stderr=out
            )
        processes.append(process)
        wait_for(lambda: cycled(ports[n]) or process.poll() is not None, 60, f"poller {n} to cycle")
        assert process.poll() is None, logs[n].read_text()[-2000:]
        return process

    try:
        first = start(0)
        second = start(1)  # its producer's init fenced the first one's
        # The CLI serves the Dastra client's metrics and the process's with the poller's.
        served = httpx.get(f"http://127.0.0.1:{ports[1]}/metrics", timeout=5).text
        wanted = 'dastra_client_requests_total{endpoint="/v1/ws/{ws}/DataSubjectRequests"'
        assert f'{wanted},method="GET",status="200"}}' in served
        assert "\nprocess_cpu_seconds_total " in served
        item = sandbox.admin.create_rights_request(title="after the takeover")["id"]
        # The first finds the item too, but its transaction is refused: it stops with 1.
        assert first.wait(60) == 1, logs[0].read_text()[-2000:]
        assert "fenced" in logs[0].read_text()
        records = consume(kafka, kafka.topic(RIGHTS_REQUESTS), expected=1, to_end=True)
        assert _ids(records) == [item]  # published once, by the second
        assert second.poll() is None
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0, logs[1].read_text()[-2000:]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
