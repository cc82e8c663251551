"""`dastra-kafka demo --chaos`: every service SIGKILLed and restarted, and the broker restarted
on its data directory, and the demo's checks still pass: nothing lost or duplicated. A file apart
from tests/test_demo.py, so that the two long files run on different workers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
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
    own = [line for line in result.stderr.splitlines() if not line.startswith("%")]
    assert result.returncode == 0, (
        _failed_checks(result.stdout)
        + _log_digest(tmp_path)
        + "\n--- the demo's own warnings\n"
        + "\n".join(own[-30:])
    )
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


def _failed_checks(stdout: str) -> str:
    """The summary's failed checks and chaos timeline (the whole output when it is not JSON)."""
    try:
        summary = json.loads(stdout)
    except ValueError:
        return stdout[-3000:]
    failed = [c for c in summary.get("checks", []) if not c.get("passed")]
    chaos = summary.get("chaos") or {}
    return json.dumps({"failed": failed, "chaos": chaos}, indent=1)


def _log_digest(run_dir: Path) -> str:
    """Per service log: each warning or error event with its count and first and last time,
    so that a failure on CI says which service complained of what, and when (the logs' tails
    are mostly librdkafka's reconnect lines)."""
    lines = []
    for log in sorted(run_dir.glob("*.log")):
        seen: Counter[str] = Counter()
        first: dict[str, str] = {}
        last: dict[str, str] = {}
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if not isinstance(record, dict) or record.get("level") not in ("warning", "error"):
                continue
            event = f"{record['level']}: {str(record.get('event'))[:120]}"
            seen[event] += 1
            first.setdefault(event, str(record.get("timestamp", ""))[11:23])
            last[event] = str(record.get("timestamp", ""))[11:23]
        lines.append(f"--- {log.name}")
        lines += [f"{n:5} x {e} ({first[e]} .. {last[e]})" for e, n in seen.most_common(10)]
    return "\n" + "\n".join(lines)
