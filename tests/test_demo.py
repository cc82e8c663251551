"""`dastra-kafka demo` (behind `make run`) runs the whole pipeline to a passing summary, in the
default payload mode, in `thin` mode and in `encrypted` mode (which ends by erasing one requester,
with a recipe switched on); a mistyped `--recipe` stops it before anything starts; the demo's
check for personal data in clear is itself checked on records that hold some. Under `--chaos`:
tests/test_demo_chaos.py (a file of its own, so that it runs beside these on another worker)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bus.settings import KafkaSettings
from bus.topics import RECIPE_RUNS, RIGHTS_REQUESTS, TopicCatalogue
from dastra_kafka.contracts.registry import validate_record
from dastra_kafka.demo import DemoReport, scan_for_personal_data
from tests.kafka_helpers import delete_topics, read_all

RECIPE = "new-request-dpo-task"  # switched on in encrypted mode: it reads the requests' titles


# thin mode is a longer variant (make test-all): its privacy guarantees are tested in tests/privacy.
@pytest.mark.parametrize(
    "privacy", ["full", pytest.param("thin", marks=pytest.mark.slow), "encrypted"]
)
def test_the_demo_runs_to_a_passing_summary(
    kafka: KafkaSettings, catalogue: TopicCatalogue, tmp_path: Path, privacy: str
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
            "--privacy",
            privacy,
            *(["--recipe", RECIPE] if privacy == "encrypted" else []),
            "--json",
        ],
        env={
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
            "COLUMNS": "200",  # the topics table unwrapped
        },
        capture_output=True,
        text=True,
        timeout=280,
        check=False,
    )
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in tmp_path.glob("*.log"))
    assert result.returncode == 0, result.stdout + result.stderr[-3000:] + logs
    summary = json.loads(result.stdout)
    # The demo shows every topic of topics.yaml as the cluster has it (the console is stderr).
    missing = [spec.name for spec in catalogue if f"│ {spec.name} " not in result.stderr]
    assert missing == [] and "missing" not in result.stderr
    # The doctor ran first, against the sandbox the demo uses, with no FAIL.
    assert "dastra-kafka doctor: workspace" in result.stderr
    assert "│ FAIL │" not in result.stderr
    # The studio ran (the demo waits for its page) and its sign-in link was printed.
    assert re.search(r"studio: http://127\.0\.0\.1:\d+/studio/#token=\S+", result.stderr)
    assert summary["passed"] is True
    assert all(check["passed"] for check in summary["checks"])
    assert sum(summary["created"].values()) >= 10
    assert summary["commands"] >= 5
    # Every command has its result; the malformed record has a failed one besides its dead letter.
    assert summary["results"] == summary["commands"] + summary["dead_letters"]
    assert summary["dead_letters"] >= 1
    assert summary["hook_deliveries"] >= sum(summary["created"].values())
    names = {check["check"] for check in summary["checks"]}
    in_clear = "no personal data in clear on the bus"
    erased = "an erased requester is unreadable, the others are not"
    expected = {"full": set(), "thin": {in_clear}, "encrypted": {in_clear, erased}}
    assert names & {in_clear, erased} == expected[privacy]

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
    if privacy == "encrypted":  # the encrypted fields are on the bus, not the requesters
        events = read_all(kafka, kafka.topic(RIGHTS_REQUESTS))
        # Every event's personal fields are sealed; an event the poller wrote after the demo's
        # `privacy erase` of a requester (an update of that request) has them as erased.
        unsealed = [
            (r.key, dict(r.headers).get("ce_type"))
            for r in events
            if b'"$enc"' not in (r.value or b"") and b'"$erased"' not in (r.value or b"")
        ]
        assert events and unsealed == []
        assert any(b'"$enc"' in (r.value or b"") for r in events)
        assert not any(b"@example.org" in (r.value or b"") for r in events)
        # The recipe ran on the encrypted events (decrypted in the worker) and its commands
        # went through: succeeded runs, and no run failed.
        runs = [json.loads(r.value or b"{}") for r in read_all(kafka, kafka.topic(RECIPE_RUNS))]
        finished = [
            run for run in runs if run.get("recipe") == RECIPE and run["status"] != "running"
        ]
        assert any(run["status"] == "succeeded" for run in finished), runs[-3:]
        assert not [run for run in finished if run["status"] == "failed"], finished
        assert summary["recipe_results"] >= 1
    delete_topics(kafka, [kafka.topic(spec.name) for spec in catalogue])


def test_the_personal_data_check_finds_a_requester_in_clear() -> None:
    report = DemoReport(privacy="thin", searches=[1])  # the flow itself went through
    event = b'{"id": 7, "email": "subject3@example.org", "familyName": "Subject 3"}'
    scan_for_personal_data(report, "rights", {"ce_id": b"rr-7"}, event)
    scan_for_personal_data(report, "results", {}, b'{"command_id": "c1", "result": {"id": 7}}')
    scan_for_personal_data(report, "dlq", {}, event)  # dead letters are `full` in thin mode
    [check] = [c for c in report.checks() if c[0] == "no personal data in clear on the bus"]
    assert check[1] is False and "1 on rights" in check[2] and report.scanned == 2
    assert report.settled  # a privacy failure does not hold the drain back


def test_a_mistyped_recipe_stops_the_demo_before_anything_starts(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dastra_kafka", "demo", "--recipe", "new-request-dpo-tsk"],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DASTRA_"))},
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing must be reached
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "did you mean new-request-dpo-task?" in result.stderr
    assert "Kafka" not in result.stdout + result.stderr  # it stopped before the broker


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        (["--chaos-targets", "poller,brokr"], {}, "brokr; choose among poller, worker"),
        ([], {"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"}, "unset KAFKA_BOOTSTRAP_SERVERS"),
    ],
)
def test_chaos_is_refused_before_anything_starts_when_it_cannot_run(
    tmp_path: Path, args: list[str], env: dict[str, str], expected: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "dastra_kafka", "demo", "--chaos", *args],
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "DASTRA_"))},
            "KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nothing must be reached
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert expected in result.stderr
    assert "Kafka:" not in result.stdout + result.stderr  # it stopped before the broker
