"""`dastra-kafka lag`: the real CLI (its typer app, and once the installed console script) on a
real broker: JSON figures, `--check` exit codes, exit 2 on bad input and 3 when Kafka is gone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from bus.localkafka import free_port
from bus.settings import KafkaSettings
from bus.topics import TopicCatalogue
from dastra_kafka.cli import app
from tests.consumers.lag.support import commit, produce, topic, window_topic

SCRIPT = Path(sys.executable).with_name("dastra-kafka")


def _env(kafka: KafkaSettings) -> dict[str, str]:
    # Every run is a new process for cron; the window between runs lives in the topic.
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "LAG_SAMPLE_INTERVAL_S": "0",
        "LAG_WINDOW_S": "600",
        "COLUMNS": "240",
    }


def _run(kafka: KafkaSettings, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--env-file", "/nonexistent", "lag", *args], env=_env(kafka))
    return result.exit_code, result.output


def test_check_exit_codes_follow_the_threshold(
    kafka: KafkaSettings, catalogue: TopicCatalogue
) -> None:
    group = kafka.topic("dastra.cron-checked")
    with window_topic(kafka, catalogue), topic(kafka, 2) as name:
        produce(kafka, name, 0, 30)
        commit(kafka, group, {(name, 0): 20, (name, 1): 0})

        healthy, out = _run(kafka, "--check")
        assert healthy == 0, out
        code, out = _run(kafka, "--json")
        assert code == 0, out
        document = json.loads(out)

        commit(kafka, group, {(name, 0): 4})  # an offset reset between two cron runs
        rewound, out = _run(kafka, "--check")
        tolerated, _ = _run(kafka, "--check", "--threshold", "REWIND")
        table_code, table = _run(kafka, "--partitions")

    [g] = document["groups"]
    assert (g["group"], g["status"], g["lag"]) == (group, "OK", 10)
    assert [p["lag"] for p in g["partitions"]] == [10, 0]
    assert rewound == 1
    assert f"{group}: REWIND: " in out
    assert tolerated == 0
    assert table_code == 0 and "REWIND" in table and "went back from 20 to 4" in table


def test_bad_combinations_exit_2(kafka: KafkaSettings) -> None:
    code, out = _run(kafka, "--all", "--group", "x")
    assert code == 2 and "exclude each other" in out
    code, out = _run(kafka, "--threshold", "BAD")
    assert code == 2


def test_unreachable_kafka_exits_3_through_the_console_script() -> None:
    dead = f"127.0.0.1:{free_port()}"
    result = subprocess.run(
        [str(SCRIPT), "lag", "--check"],
        env={
            "PATH": "/usr/bin:/bin",
            "KAFKA_BOOTSTRAP_SERVERS": dead,
            "LAG_TIMEOUT_S": "1.5",
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3, result.stderr
    assert f"cannot reach Kafka at {dead}" in result.stderr
