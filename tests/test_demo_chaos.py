"""`dastra-kafka demo --chaos`: every service SIGKILLed and restarted, and the broker restarted
on its data directory, and the demo's checks still pass: nothing lost or duplicated. A file apart
from tests/test_demo.py, so that the two long files run on different workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHAOS_ROUNDS = 1
SERVICES = "poller,worker,webhook,hooks"


@pytest.mark.timeout(900)
@pytest.mark.parametrize(
    "targets",
    [
        # The services alone: make test-all (the run with the broker kills every service too).
        pytest.param(SERVICES, marks=pytest.mark.slow),
        # The broker restarted on its data directory as well. Every group read (describe,
        # committed offsets) goes over aiokafka (bus/groups.py): librdkafka's group admin calls
        # could abort the process that made them while the broker restarted (librdkafka #4605).
        f"{SERVICES},broker",
    ],
    ids=["services", "services-and-broker"],
)
def test_under_chaos_nothing_is_lost_or_duplicated(tmp_path: Path, targets: str) -> None:
    """`--chaos` with a fixed seed: every service SIGKILLed and restarted, and the broker
    restarted on its data directory (the demo runs its own broker), and the same checks pass."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "dastra_kafka",
            "demo",
            "--chaos",
            "--chaos-targets",
            targets,
            "--seed",
            "7",
            "--chaos-rounds",
            str(CHAOS_ROUNDS),
            "--chaos-every",
            "4",
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
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DASTRA_"))},
            "COLUMNS": "200",
        },
        capture_output=True,
        text=True,
        timeout=850,
        check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:] + logs
    summary = json.loads(result.stdout)
    assert summary["passed"] is True
    assert all(check["passed"] for check in summary["checks"])
    chaos = summary["chaos"]
    every = {"poller": CHAOS_ROUNDS, "worker": CHAOS_ROUNDS, "webhook": CHAOS_ROUNDS}
    assert chaos["kills"] == {**every, "hooks": CHAOS_ROUNDS}, chaos["timeline"]
    restarts = CHAOS_ROUNDS if "broker" in targets else 0
    assert chaos["broker_restarts"] == restarts and chaos["errors"] == []
    assert sum(summary["created"].values()) >= 10
    assert summary["commands"] >= 5
    # Exactly one result per command (and the malformed record's failed one) through the kills.
    assert summary["results"] == summary["commands"] + summary["dead_letters"]
    assert summary["hook_deliveries"] >= sum(summary["created"].values())
    # The broker kept its data directory, under the run directory.
    assert (tmp_path / "kafka" / "kraft-logs" / "meta.properties").is_file()
