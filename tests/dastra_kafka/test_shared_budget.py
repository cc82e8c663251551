"""One Dastra API key shared by a poller and two workers (real processes, the session broker,
the sandbox's real rate limiter set low): together they never meet a 429 and use at least 90 %
of the key's limit. Measured from the sandbox's own log of the calls its limiter saw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue, command_topic
from dastra.sandbox import SandboxServer
from dastra_kafka.settings import env_prefixes
from tests.consumers.agents_support import RecordProducer, WorkerProcess, command_record
from tests.kafka_helpers import create_catalogue_topics, delete_topics, unique, wait_for

# The key's limit in the sandbox and in every client: LIMIT calls per PERIOD seconds.
LIMIT, PERIOD = 60, 10.0
MEASURED_WINDOWS = 3
BUDGET = {
    "DASTRA_RATE_LIMIT_WINDOWS": json.dumps([[LIMIT, PERIOD]]),
    "DASTRA_BUDGET_SHARES": "poller=1,workers=2",
    "DASTRA_WORKERS": "2",
}
POLLER_ENDPOINTS = ("GET /v1/ws/{ws}/DataSubjectRequests", "GET /v1/ws/{ws}/Tasks")
WORKER_ENDPOINT = "GET /v1/ws/{ws}/Actors"


@pytest.fixture
def budget_kafka(kafka_bootstrap: str, catalogue: TopicCatalogue) -> Iterator[KafkaSettings]:
    kafka = KafkaSettings(bootstrap_servers=kafka_bootstrap, topic_prefix=unique("budget") + ".")
    names = create_catalogue_topics(kafka, catalogue)
    yield kafka
    delete_topics(kafka, names)


def _poller(kafka: KafkaSettings, sandbox: SandboxServer, log: Path) -> subprocess.Popen[bytes]:
    base = {k: v for k, v in os.environ.items() if not k.startswith(env_prefixes())}
    env = {
        **base,
        **sandbox.env(),
        **BUDGET,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        # Poll all the time: the poller always wants more than its share (no idle budget, which
        # would plan half of it).
        "POLLER_INTERVAL_MIN_S": "0.01",
        "POLLER_INTERVAL_MAX_S": "0.01",
        "POLLER_IDLE_BUDGET_SHARE": "0",
        "SERVICE_LOG_LEVEL": "warning",
    }
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dastra_kafka", "--env-file", "/nonexistent", "poller"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def test_a_poller_and_two_workers_on_one_key_share_its_limit_without_a_429(
    budget_kafka: KafkaSettings, sandbox: SandboxServer, tmp_path: Path
) -> None:
    admin = sandbox.admin
    admin.configure(rate_limit_windows=[(LIMIT, PERIOD)])
    admin.create_actor(companyName="Budget Holding", email="dpo@budget.eu")
    kafka = budget_kafka
    workers = [
        WorkerProcess(kafka, sandbox, tmp_path, f"worker{n}", WORKER_CONCURRENCY="4", **BUDGET)
        for n in (1, 2)
    ]
    poller_log = tmp_path / "poller.log"
    poller: subprocess.Popen[bytes] | None = None
    producer = RecordProducer(kafka)
    try:
        for worker in workers:
            worker.start(wait=False)
        for worker in workers:
            worker.wait_ready(90)
        wait_for(lambda: all(w.partitions() for w in workers), 60, "both workers own partitions")
        # Far more searches than the workers' share allows during the test: they stay busy.
        commands = []
        for n in range(600):
            headers, value = command_record(
                {"q": "Budget"}, command_id=f"search-{n}", action="search-actors"
            )
            commands.append((f"search-{n}".encode(), headers, value))
        producer.send(command_topic("search-actors"), commands)
        poller = _poller(kafka, sandbox, poller_log)

        def seen(*endpoints: str) -> bool:
            assert poller is not None and poller.poll() is None, poller_log.read_text()[-2000:]
            return any(entry["endpoint"] in endpoints for entry in admin.requests_log())

        wait_for(lambda: seen(*POLLER_ENDPOINTS) and seen(WORKER_ENDPOINT), 90, "all calling")
        # Every process is running and wants more than its share: measure from one period on.
        start = time.monotonic() + PERIOD
        end = start + MEASURED_WINDOWS * PERIOD

        def past_the_end(*endpoints: str) -> bool:
            return any(e["endpoint"] in endpoints for e in admin.requests_log(since=end))

        wait_for(
            lambda: past_the_end(*POLLER_ENDPOINTS) and past_the_end(WORKER_ENDPOINT),
            (end - time.monotonic()) + 60,
            "calls from the poller and the workers after the measured window",
            every=0.5,
        )
        for worker in workers:
            assert worker.returncode() is None, worker.log_tail()
        log = admin.requests_log()
    finally:
        producer.close()
        if poller is not None:
            poller.terminate()
            try:
                poller.wait(20)
            except subprocess.TimeoutExpired:
                poller.kill()
                poller.wait(10)
        for worker in workers:
            worker.stop()

    refused = [entry for entry in log if not entry["admitted"]]
    assert refused == [], f"{len(refused)} calls got 429, e.g. {refused[:3]}"
    measured = [e for e in log if start <= e["at"] < end]
    used = len(measured) / (MEASURED_WINDOWS * LIMIT)
    by_role = {
        "poller": sum(e["endpoint"] in POLLER_ENDPOINTS for e in measured),
        "workers": sum(e["endpoint"] == WORKER_ENDPOINT for e in measured),
    }
    print(f"shared budget: {len(measured)} calls in {MEASURED_WINDOWS} windows, {used:.1%} used")
    assert used >= 0.9, (used, by_role)
    # Each role got its share (poller 1/3, workers 2/3), give or take the edges.
    assert by_role["poller"] >= 0.8 * MEASURED_WINDOWS * LIMIT / 3, by_role
    assert by_role["workers"] >= 0.8 * MEASURED_WINDOWS * LIMIT * 2 / 3, by_role
