"""`dastra-kafka demo` (behind `make run`) runs the whole pipeline to a passing summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bus.contracts import validate_record
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from tests.kafka_helpers import delete_topics, read_all


def test_the_demo_runs_to_a_passing_summary(
    kafka: KafkaSettings, catalogue: TopicCatalogue, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dastra_kafka",
            "demo",
            "--duration",
            "20",
            "--item-every",
            "0.7",
            "--command-every",
            "1",
            "--run-dir",
            str(tmp_path),
            "--json",
        ],
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        },
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:] + logs
    summary = json.loads(result.stdout)
    assert summary["passed"] is True
    assert all(check["passed"] for check in summary["checks"])
    assert sum(summary["created"].values()) >= 10
    assert summary["commands"] >= 5
    # Every command has its result; the malformed record has a failed one besides its dead letter.
    assert summary["results"] == summary["commands"] + summary["dead_letters"]
    assert summary["dead_letters"] >= 1
    assert summary["hook_deliveries"] >= sum(summary["created"].values())

    # Every record the running services really produced (poller, agents, webhook, hooks, lag
    # monitor) conforms to the published contracts of its topic: keys, values and headers.
    checked = 0
    problems: list[str] = []
    for spec in catalogue:
        for record in read_all(kafka, kafka.topic(spec.name), read_committed=False):
            if spec.name.startswith("dastra.commands.") and record.key == b"demo-malformed":
                continue  # the deliberately malformed record: it must not conform
            checked += 1
            found = validate_record(catalogue, spec.name, record.key, record.value, record.headers)
            problems += [f"{spec.name}@{record.partition}:{record.offset}: {p}" for p in found]
    assert checked > 100
    assert problems == []
    delete_topics(kafka, [kafka.topic(spec.name) for spec in catalogue])
