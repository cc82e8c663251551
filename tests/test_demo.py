"""`dastra-kafka demo` (behind `make run`) runs the whole pipeline to a passing summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from bus.settings import KafkaSettings


def test_the_demo_runs_to_a_passing_summary(kafka: KafkaSettings, tmp_path: Path) -> None:
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
